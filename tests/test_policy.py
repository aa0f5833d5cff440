"""Audit policy loading, validation, evaluation, shadowed rules and ``tune policy explain``.

Expected matches come from reading ``apiserver/pkg/audit/policy/checker.go`` and its
``checker_test.go`` cases; load errors from ``reader.go`` and ``apis/audit/validation``.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_tune.analysis.policy import (
    GroupResources,
    Policy,
    RequestAttributes,
    Rule,
    decide,
    evaluate,
    load_policy,
    load_policy_text,
    rule_matches,
    stages_emitted,
)
from audit_tune.analysis.policy.explain import explain_policy, table_rows
from audit_tune.analysis.policy.shadow import rule_covers, shadowed_rules
from audit_tune.basics.errors import InputError

FIX = Path(__file__).parent / "fixtures" / "policies"
RR, RS, RC = "RequestReceived", "ResponseStarted", "ResponseComplete"

TIM = dict(user="tim@k8s.io", groups=("humans", "developers", "system:authenticated"))


def res(resource: str, sub: str = "", group: str = "", ns: str = "default", name: str = "busybox",
        verb: str = "get", **kw) -> RequestAttributes:
    who = {**TIM, **kw}
    return RequestAttributes(verb=verb, namespace=ns, resource=resource, subresource=sub, api_group=group,
                             name=name, path=f"/api/v1/namespaces/{ns}/{resource}/{name}", **who)


def nonres(path: str, verb: str = "get", **kw) -> RequestAttributes:
    return RequestAttributes(verb=verb, path=path, is_resource_request=False, **{**TIM, **kw})


def pol(*rules: Rule, omit: tuple[str, ...] = ()) -> Policy:
    return Policy(rules=rules, omit_stages=omit)


def gr(*resources: str, group: str = "", names: tuple[str, ...] = ()) -> GroupResources:
    return GroupResources(group=group, resources=resources, resource_names=names)


# --------------------------------------------------------------------------------------------
# Fixtures: the Kubernetes docs example, a blog copy of it, a GCE-style policy, invalid ones
# --------------------------------------------------------------------------------------------

def test_docs_example_policy_loads_and_matches_as_documented():
    p = load_policy(FIX / "k8s-docs-audit-policy.yaml")
    assert len(p.rules) == 9 and p.omit_stages == (RR,) and p.warnings == ()
    assert evaluate(p, res("pods"))[::2] == ("RequestResponse", 0)
    # "pods" does not match subresources; pods/log is rule 1, pods/exec falls to the core-group rule.
    assert evaluate(p, res("pods", "log"))[::2] == ("Metadata", 1)
    assert evaluate(p, res("pods", "exec", verb="create"))[::2] == ("Request", 7)
    assert evaluate(p, res("configmaps", name="controller-leader"))[::2] == ("None", 2)
    kube_proxy = dict(user="system:kube-proxy", groups=("system:authenticated",))
    assert evaluate(p, res("endpoints", verb="watch", **kube_proxy))[::2] == ("None", 3)
    assert evaluate(p, res("endpoints", verb="get", **kube_proxy))[::2] == ("Request", 7)
    for path in ("/api", "/apis", "/apis/apps/v1", "/version"):
        assert evaluate(p, nonres(path))[::2] == ("None", 4)
    assert evaluate(p, nonres("/api", user="system:anonymous", groups=("system:unauthenticated",)))[::2] == \
        ("Metadata", 8)
    assert evaluate(p, res("configmaps", ns="kube-system"))[::2] == ("Request", 5)
    assert evaluate(p, res("secrets"))[::2] == ("Metadata", 6)
    assert evaluate(p, res("deployments", group="extensions"))[::2] == ("Request", 7)
    assert evaluate(p, res("deployments", group="apps"))[::2] == ("Metadata", 8)
    level, omit, _ = evaluate(p, res("pods", verb="watch"))
    assert omit == {RR} and stages_emitted(level, omit, True) == (RS, RC)


def test_blog_copy_of_docs_policy_fails_naming_characters_lines_and_fixes():
    with pytest.raises(InputError) as e:
        load_policy(FIX / "k8s-docs-audit-policy-from-blog.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{FIX / 'k8s-docs-audit-policy-from-blog.yaml'}:5:5: ")
    assert "left double quotation mark (U+201C) on line 5, column 5 with '\"'" in msg
    assert "replace the em dash (U+2014) used as a list marker on line 8 with '-'" in msg
    assert "9 dashes used as list markers" in msg


def test_gce_style_policy_omits_request_received():
    p = load_policy(FIX / "gce-style-policy.yaml")
    assert p.omit_stages == (RR,)
    level, omit, i = evaluate(p, res("pods", verb="list"))
    assert (level, i) == ("Request", 10) and stages_emitted(level, omit, False) == (RC,)
    level, omit, _ = evaluate(p, res("pods", verb="watch"))
    assert stages_emitted(level, omit, True) == (RS, RC)
    node = dict(user="system:node:n1", groups=("system:nodes", "system:authenticated"))
    assert evaluate(p, res("leases", group="coordination.k8s.io", ns="kube-node-lease", verb="update",
                           **node))[::2] == ("None", 3)
    assert evaluate(p, nonres("/healthz/etcd"))[::2] == ("None", 5)
    assert evaluate(p, res("widgets", group="example.com"))[::2] == ("Metadata", 12)
    assert shadowed_rules(p) == []


@pytest.mark.parametrize("name, expected", [
    ("invalid-level.yaml", ":6: field rules[1].level: unsupported level 'Metdata'; use one of None, Metadata, "
                           "Request, RequestResponse"),
    ("invalid-stage.yaml", ":5: field omitStages[1]: unsupported stage 'ResponseCompleted'; allowed stages are "
                           "RequestReceived, ResponseStarted, ResponseComplete, Panic"),
    ("invalid-resources-and-nonresource.yaml", ":8: field rules[0].nonResourceURLs: rules cannot apply to both "
                                               "regular resources and non-resource URLs"),
    ("empty-rules.yaml", ":4: field rules: the policy has no rules"),
    ("invalid-group-with-version.yaml", ":6: field rules[0].resources[0].group: 'apps/v1' must be a lower-case "
                                        "DNS subdomain"),
    ("invalid-nonresource-url.yaml", ":5: field rules[0].nonResourceURLs[0]: 'healthz': non-resource URL rules "
                                     "must begin with a '/' character"),
    ("old-api-version.yaml", ":1: field apiVersion: 'audit.k8s.io/v1beta1' is not supported (removed in "
                             "Kubernetes 1.24); use audit.k8s.io/v1"),
    ("verbs-not-a-list.yaml", ":5: field rules[0].verbs: expected a list, got a string ('get'); write [\"get\"]"),
    ("tab-indent.yaml", ":5:1: replace the tab (U+0009) in the indentation of line 5 with spaces"),
])
def test_invalid_fixtures_fail_with_one_line_naming_file_line_and_field(name, expected):
    with pytest.raises(InputError) as e:
        load_policy(FIX / name)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(FIX / name) + expected), msg


def test_unknown_field_is_a_warning_like_kube_apiserver_and_an_error_with_strict():
    p = load_policy(FIX / "unknown-field.yaml")
    assert len(p.warnings) == 1
    assert 'line 7: unknown field "rules[0].verb" (did you mean \'verbs\'?)' in p.warnings[0]
    # Lenient decoding drops the misspelt field: the rule now silences every secrets request.
    assert p.rules[0].verbs == ()
    assert evaluate(p, res("secrets", verb="delete"))[::2] == ("None", 0)
    with pytest.raises(InputError, match=r'unknown-field.yaml: line 7: unknown field "rules\[0\].verb"'):
        load_policy(FIX / "unknown-field.yaml", strict=True)


def test_wrong_case_and_duplicate_fields_are_strict_decoding_findings():
    text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- Level: None\n  level: Metadata\n  level: Request\n"
    p = load_policy_text(text)
    assert p.rules[0].level == "Request"  # the last duplicate wins
    assert any("did you mean 'level'? field names are case-sensitive" in w for w in p.warnings)
    assert any('duplicate field "rules[0].level"' in w for w in p.warnings)


def test_merge_keys_and_extra_documents_like_go_yaml():
    text = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- &quiet\n  level: None\n  verbs: [watch]\n"
            "- <<: *quiet\n  level: Metadata\n---\nkind: Ignored\n")
    p = load_policy_text(text)
    assert [(r.level, r.verbs) for r in p.rules] == [("None", ("watch",)), ("Metadata", ("watch",))]
    assert len(p.warnings) == 1 and "only the first" in p.warnings[0]
    assert load_policy_text(text, strict=True).rules == p.rules  # extra documents are not a strict error


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("kind: Policy\nrules:\n- level: None\n", "field apiVersion: missing"),
    ("apiVersion: audit.k8s.io/v1\nkind: PolicyList\nrules:\n- level: None\n", "field kind: 'PolicyList'"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [yes]\n",
     ":5: field rules[0].users[0]: expected a string, got a boolean"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: [None\n", "not valid YAML"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- {}\n", "field rules[0].level: required"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources:\n  - resourceNames: [a]\n",
     "field rules[0].resources[0].resourceNames: using resourceNames requires at least one resource"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: ['/a*b']\n",
     "wildcards '*' must be the final character"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  namespaces: [a]\n  nonResourceURLs: [/a]\n",
     "rules cannot apply to both"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: “Metadata”\n", "left double quotation mark (U+201C)"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n\u2013 level: None\n",
     ":4:1: replace the en dash (U+2013) used as a list marker on line 4 with '-'"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n\u00a0 verbs: [get]\n",
     ":5:1: replace the no-break space (U+00A0) in the indentation of line 5, column 1 with a plain space"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [\u2018bob\u2019]\n",
     "replace the left single quotation mark (U+2018) on line 5, column 11 with \"'\""),
])
def test_load_errors(text, expected):
    with pytest.raises(InputError) as e:
        load_policy_text(text, "p.yaml")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_typographic_characters_in_comments_and_quoted_strings_are_fine():
    text = ("apiVersion: audit.k8s.io/v1 # it’s “required”\nkind: Policy\n# Don’t – log\nrules:\n"
            "- level: None\t\n  users: [\"bob “the builder”\",\t\"x\"]\n  verbs: [get]\t# a tab after a value is fine\n")
    p = load_policy_text(text)
    assert p.rules[0].users == ("bob “the builder”", "x") and p.rules[0].verbs == ("get",)


@pytest.mark.parametrize("line, col, after", [("  verbs:\t[get]", 9, "':'"), ("-\tlevel: None", 2, "'-'")])
def test_tabs_where_go_yaml_rejects_them(line, col, after):
    text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n" + line + "\n"
    with pytest.raises(InputError) as e:
        load_policy_text(text, "p.yaml")
    assert str(e.value).startswith(f"p.yaml:5:{col}: replace the tab (U+0009) after {after} on line 5, column {col}")


def test_group_wildcard_accepted_since_1_36():
    p = load_policy_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources:\n"
                         "  - group: '*'\n    resources: ['*/status']\n")
    assert evaluate(p, res("clusterroles", "status", group="rbac.authorization.k8s.io", verb="update"))[2] == 0
    assert evaluate(p, res("clusterroles", group="rbac.authorization.k8s.io"))[2] is None


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such policy file"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_policy(tmp_path)


# --------------------------------------------------------------------------------------------
# Matching semantics (checker.go)
# --------------------------------------------------------------------------------------------

def test_first_match_wins_and_default_is_none():
    p = pol(Rule("Request", verbs=("create",)), Rule("Metadata"), Rule("RequestResponse"))
    assert evaluate(p, res("pods", verb="create"))[::2] == ("Request", 0)
    assert evaluate(p, res("pods"))[::2] == ("Metadata", 1)
    assert evaluate(pol(Rule("Request", verbs=("create",)), omit=(RS,)), res("pods")) == ("None", {RS}, None)


def test_omit_stages_is_the_union_of_policy_and_rule():
    p = pol(Rule("Request", omit_stages=(RC,)), omit=(RR, RS))
    level, omit, _ = evaluate(p, res("pods"))
    assert omit == frozenset({RR, RS, RC})
    assert stages_emitted(level, omit, long_running=True) == ()
    assert evaluate(pol(Rule("Request", omit_stages=(RR,))), res("pods"))[1] == {RR}


def test_omit_managed_fields_rule_overrides_policy():
    base = Policy(rules=(Rule("Request", verbs=("get",), omit_managed_fields=False), Rule("Request")),
                  omit_managed_fields=True)
    assert decide(base, res("pods")).omit_managed_fields is False
    assert decide(base, res("pods", verb="list")).omit_managed_fields is True
    assert decide(Policy(rules=(Rule("None", verbs=("x",)),), omit_managed_fields=True),
                  res("pods")).omit_managed_fields is True


@pytest.mark.parametrize("patterns, request_, matches", [
    (("pods",), ("pods", ""), True),
    (("pods",), ("pods", "log"), False),  # "pods" does not match subresources
    (("pods/log",), ("pods", "log"), True),
    (("pods/log",), ("pods", ""), False),
    (("*",), ("pods", "log"), True),
    (("*",), ("pods", ""), True),
    (("*/log",), ("pods", "log"), True),
    (("*/log",), ("pods", ""), False),
    (("*/scale",), ("deployments", "scale"), True),
    (("*/scale",), ("deployments", "status"), False),
    (("pods/*",), ("pods", "log"), True),
    (("pods/*",), ("pods", ""), True),  # upstream compares only the resource part
    (("pods/*",), ("services", "status"), False),
    (("*/*",), ("pods", "log"), False),  # neither "*/" nor "/*" form applies to real requests
    (("configmaps", "pods/status"), ("pods", "status"), True),
])
def test_resource_patterns(patterns, request_, matches):
    rule = Rule("Request", resources=(gr(*patterns),))
    assert rule_matches(rule, res(request_[0], request_[1])) is matches


def test_group_resource_names_and_namespaces():
    rule = Rule("None", resources=(gr("configmaps", names=("controller-leader",)),))
    assert rule_matches(rule, res("configmaps", name="controller-leader"))
    assert not rule_matches(rule, res("configmaps", name="other"))
    assert not rule_matches(rule, res("configmaps", name="controller-leader", group="apps"))
    whole_group = Rule("None", resources=(gr(group="apps"),))
    assert rule_matches(whole_group, res("deployments", "scale", group="apps"))
    assert not rule_matches(whole_group, res("pods"))
    cluster = Rule("None", namespaces=("",))
    assert rule_matches(cluster, res("nodes", ns=""))
    assert not rule_matches(cluster, res("pods"))
    assert not rule_matches(cluster, nonres("/healthz"))  # namespaces make it a resource rule


def test_non_resource_urls_and_scope():
    rule = Rule("None", non_resource_urls=("/logs*", "/metrics"))
    assert rule_matches(rule, nonres("/logs/kubelet.log"))
    assert rule_matches(rule, nonres("/logs"))
    assert rule_matches(rule, nonres("/metrics"))
    assert not rule_matches(rule, nonres("/metrics/cadvisor"))
    assert not rule_matches(rule, res("pods"))  # URL rules never match resource requests
    assert rule_matches(Rule("None", non_resource_urls=("*",)), nonres("/anything"))
    assert not rule_matches(Rule("None", resources=(gr("*"),)), nonres("/api"))
    catch_all = Rule("Metadata")
    assert rule_matches(catch_all, res("pods")) and rule_matches(catch_all, nonres("/api"))


def test_users_and_groups():
    assert rule_matches(Rule("None", users=("tim@k8s.io",)), res("pods"))
    assert not rule_matches(Rule("None", users=("bob",)), res("pods"))
    assert rule_matches(Rule("None", user_groups=("humans", "x")), res("pods"))
    assert not rule_matches(Rule("None", user_groups=("x",)), res("pods"))
    no_user = res("pods", user=None, groups=())
    assert not rule_matches(Rule("None", users=("tim@k8s.io",)), no_user)
    assert not rule_matches(Rule("None", user_groups=("humans",)), no_user)
    assert rule_matches(Rule("None"), no_user)


def test_stages_emitted_and_long_running():
    assert stages_emitted("None", frozenset(), True) == ()
    assert stages_emitted(None, frozenset(), False) == ()
    assert stages_emitted("Metadata", frozenset(), False) == (RR, RC)
    assert stages_emitted("Metadata", frozenset(), True) == (RR, RS, RC)
    assert stages_emitted("Request", frozenset({RR}), True) == (RS, RC)
    assert res("pods", verb="watch").long_running
    assert res("services", "proxy").long_running and res("pods", verb="proxy").long_running
    for sub in ("attach", "exec", "proxy", "log", "portforward"):
        assert res("pods", sub, verb="create").long_running
    assert not res("pods", "status").long_running and not res("pods").long_running
    assert nonres("/debug/pprof/profile").long_running and not nonres("/healthz").long_running


# --------------------------------------------------------------------------------------------
# Shadowed rules
# --------------------------------------------------------------------------------------------

def test_shadowed_fixture():
    p = load_policy(FIX / "shadowed-rules.yaml")
    assert [(s.index, s.by) for s in shadowed_rules(p)] == [(1, 0), (3, 2), (5, 4)]


@pytest.mark.parametrize("a, b, covers", [
    (Rule("None"), Rule("None", verbs=("get",)), True),
    (Rule("None", verbs=("get",)), Rule("None"), False),
    (Rule("None", resources=(gr("*"),)), Rule("None", resources=(gr("pods/log"),)), True),
    (Rule("None", resources=(gr("pods/*"),)), Rule("None", resources=(gr("pods", "pods/exec"),)), True),
    (Rule("None", resources=(gr("*/scale"),)), Rule("None", resources=(gr("deployments/scale"),)), True),
    (Rule("None", resources=(gr("pods"),)), Rule("None", resources=(gr("pods/log"),)), False),
    (Rule("None", resources=(gr(group="apps"),)), Rule("None", resources=(gr("deployments", group="apps"),)), True),
    (Rule("None", resources=(gr("deployments", group="apps"),)), Rule("None", resources=(gr(group="apps"),)), False),
    (Rule("None", resources=(gr("*", group="*"),)), Rule("None", resources=(gr("x", group="apps"),)), True),
    (Rule("None", resources=(gr("cm", names=("a", "b")),)), Rule("None", resources=(gr("cm", names=("a",)),)), True),
    (Rule("None", resources=(gr("cm", names=("a",)),)), Rule("None", resources=(gr("cm"),)), False),
    (Rule("None", namespaces=("a", "b")), Rule("None", namespaces=("a",), resources=(gr("x"),)), True),
    (Rule("None", namespaces=("a",)), Rule("None", resources=(gr("x"),)), False),
    (Rule("None", resources=(gr("*"),)), Rule("None"), False),  # B also matches non-resource requests
    (Rule("None", non_resource_urls=("/api*",)), Rule("None", non_resource_urls=("/apis", "/api/v1*")), True),
    (Rule("None", non_resource_urls=("/api",)), Rule("None", non_resource_urls=("/api*",)), False),
    (Rule("None", non_resource_urls=("*",)), Rule("None", resources=(gr("*"),)), False),
    (Rule("None", user_groups=("g",)), Rule("None", users=("u",)), False),
])
def test_rule_covers(a, b, covers):
    assert rule_covers(a, b) is covers


# --------------------------------------------------------------------------------------------
# Property tests over generated policies and requests
# --------------------------------------------------------------------------------------------

USERS = ["alice", "bob", "system:node:n1"]
GROUPS = ["g1", "g2", "system:nodes"]
VERBS = ["get", "list", "watch", "create"]
NAMESPACES = ["", "default", "kube-system"]
API_GROUPS = ["", "apps", "coordination.k8s.io"]
RESOURCES = ["pods", "configmaps", "leases"]
SUBRESOURCES = ["", "log", "status", "scale"]
NAMES = ["", "a", "b"]
PATHS = ["/healthz", "/healthz/etcd", "/metrics", "/api", "/apis", "/apis/apps", "/version"]
PATTERNS = RESOURCES + ["*", "pods/log", "pods/*", "*/status", "*/scale", "configmaps/status", "leases/*", "*/*"]
URL_SPECS = PATHS + ["*", "/healthz*", "/api*", "/apis/*", "/*"]
STAGE_NAMES = [RR, RS, RC, "Panic"]


def _sub(values, max_size=2):
    return st.lists(st.sampled_from(values), max_size=max_size, unique=True).map(tuple)


group_resources = st.builds(
    lambda g, rs, names: GroupResources(g, rs, names if rs else ()),
    st.sampled_from(API_GROUPS + ["*"]), _sub(PATTERNS, 3), _sub(NAMES[1:]))


@st.composite
def rules(draw):
    kind = draw(st.sampled_from(["any", "resource", "nonresource"]))
    common = dict(level=draw(st.sampled_from(["None", "Metadata", "Request", "RequestResponse"])),
                  users=draw(_sub(USERS)), user_groups=draw(_sub(GROUPS)), verbs=draw(_sub(VERBS, 3)),
                  omit_stages=draw(_sub(STAGE_NAMES)),
                  omit_managed_fields=draw(st.sampled_from([None, True, False])))
    if kind == "resource":
        ns = draw(_sub(NAMESPACES))
        grs = tuple(draw(st.lists(group_resources, min_size=0 if ns else 1, max_size=2)))
        return Rule(namespaces=ns, resources=grs, **common)
    if kind == "nonresource":
        return Rule(non_resource_urls=draw(_sub(URL_SPECS, 3).filter(bool)), **common)
    return Rule(**common)


policies = st.builds(lambda rs, omit, omf: Policy(tuple(rs), omit, omf),
                     st.lists(rules(), min_size=1, max_size=6), _sub(STAGE_NAMES), st.booleans())


@st.composite
def requests(draw):
    user = draw(st.sampled_from(USERS + [None]))
    groups = draw(_sub(GROUPS, 3)) if user is not None else ()
    verb = draw(st.sampled_from(VERBS))
    if draw(st.booleans()):
        return RequestAttributes(user=user, groups=groups, verb=verb, path=draw(st.sampled_from(PATHS)),
                                 is_resource_request=False)
    return RequestAttributes(user=user, groups=groups, verb=verb, namespace=draw(st.sampled_from(NAMESPACES)),
                             resource=draw(st.sampled_from(RESOURCES)),
                             subresource=draw(st.sampled_from(SUBRESOURCES)),
                             api_group=draw(st.sampled_from(API_GROUPS)), name=draw(st.sampled_from(NAMES)))


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(policies, requests())
def test_evaluating_equals_evaluating_the_first_matching_rule_alone(policy, attrs):
    level, omit, idx = evaluate(policy, attrs)
    first = next((i for i, r in enumerate(policy.rules) if rule_matches(r, attrs)), None)
    assert idx == first
    if idx is None:
        assert (level, omit) == ("None", frozenset(policy.omit_stages))
    else:
        alone = Policy((policy.rules[idx],), policy.omit_stages, policy.omit_managed_fields)
        assert evaluate(alone, attrs) == (level, omit, 0)
        assert omit == set(policy.omit_stages) | set(policy.rules[idx].omit_stages)


@PROPS
@given(policies, rules(), st.lists(requests(), min_size=1, max_size=20))
def test_appending_a_rule_never_changes_already_matched_requests(policy, extra, reqs):
    longer = Policy(policy.rules + (extra,), policy.omit_stages, policy.omit_managed_fields)
    for attrs in reqs:
        before = decide(policy, attrs)
        if before.rule_index is not None:
            assert decide(longer, attrs) == before


@PROPS
@given(policies, st.lists(requests(), min_size=1, max_size=40))
def test_a_shadowed_rule_never_matches_first(policy, reqs):
    for s in shadowed_rules(policy):
        a, b = policy.rules[s.by], policy.rules[s.index]
        for attrs in reqs:
            if rule_matches(b, attrs):
                assert rule_matches(a, attrs)
            assert evaluate(policy, attrs)[2] != s.index


@PROPS
@given(rules())
def test_a_repeated_rule_is_always_reported_shadowed(rule):
    assert [(s.index, s.by) for s in shadowed_rules(Policy((rule, rule)))] == [(1, 0)]


@st.composite
def rule_and_narrowed(draw):
    """A rule and a copy restricted further (extra verbs/users/namespaces), which it must cover."""
    a = draw(rules())
    b = a
    for field_name, values in (("verbs", VERBS), ("users", USERS), ("user_groups", GROUPS)):
        current = getattr(a, field_name)
        pool = list(current) or values
        narrowed = tuple(draw(st.permutations(pool))[: draw(st.integers(1, len(pool)))])
        if draw(st.booleans()):
            b = replace(b, **{field_name: narrowed})
    if a.is_resource_rule and not a.namespaces and draw(st.booleans()):
        b = replace(b, namespaces=tuple(draw(st.permutations(NAMESPACES))[: draw(st.integers(1, 2))]))
    return a, b


@PROPS
@given(rule_and_narrowed(), st.lists(requests(), min_size=1, max_size=60))
def test_narrowed_rules_are_covered_and_never_match_outside(pair, reqs):
    a, b = pair
    assert rule_covers(a, b)
    for attrs in reqs:
        assert not rule_matches(b, attrs) or rule_matches(a, attrs)


@PROPS
@given(rules(), rules(), st.lists(requests(), min_size=1, max_size=60))
def test_rule_covers_implies_match_inclusion(a, b, reqs):
    if rule_covers(a, b):
        for attrs in reqs:
            assert not rule_matches(b, attrs) or rule_matches(a, attrs)


def _to_yaml(policy: Policy) -> str:
    def rule(r: Rule) -> dict:
        d: dict = {"level": r.level}
        for key, val in (("users", r.users), ("userGroups", r.user_groups), ("verbs", r.verbs),
                         ("namespaces", r.namespaces), ("nonResourceURLs", r.non_resource_urls),
                         ("omitStages", r.omit_stages)):
            if val:
                d[key] = list(val)
        if r.resources:
            d["resources"] = [{"group": g.group, "resources": list(g.resources),
                               "resourceNames": list(g.resource_names)} for g in r.resources]
        if r.omit_managed_fields is not None:
            d["omitManagedFields"] = r.omit_managed_fields
        return d
    return yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": list(policy.omit_stages),
                           "omitManagedFields": policy.omit_managed_fields,
                           "rules": [rule(r) for r in policy.rules]}, sort_keys=False)


def _valid(policy: Policy) -> bool:
    return not any(r.non_resource_urls and (r.resources or r.namespaces) for r in policy.rules)


@PROPS
@given(policies.filter(_valid), st.lists(requests(), min_size=1, max_size=10))
def test_yaml_round_trip_preserves_evaluation(policy, reqs):
    loaded = load_policy_text(_to_yaml(policy))
    assert loaded.warnings == ()
    strip = lambda p: [(r.level, r.users, r.user_groups, r.verbs, r.namespaces, r.non_resource_urls, r.omit_stages,
                        r.omit_managed_fields, [(g.group, g.resources, g.resource_names) for g in r.resources])
                       for r in p.rules]
    assert strip(loaded) == strip(policy)
    for attrs in reqs:
        assert decide(loaded, attrs) == decide(policy, attrs)


# --------------------------------------------------------------------------------------------
# explain and the CLI
# --------------------------------------------------------------------------------------------

def test_explain_data_counts_events():
    data = explain_policy(load_policy(FIX / "k8s-docs-audit-policy.yaml"))
    by = {(r["user_kind"], r["verb"], r["resource"], r["namespace"]): r for r in data["requests"]}
    watch = by[("kubectl-user", "watch", "pods", "default")]
    assert watch["stages"] == [RS, RC] and watch["events_per_request"] == 2 and watch["rule_index"] == 0
    assert by[("kube-proxy", "watch", "endpoints", "default")]["events_per_request"] == 0
    assert by[("kubectl-user", "get", "/api", "")]["level"] == "None"
    assert by[("anonymous", "get", "/api", "")]["level"] == "Metadata"
    rows = table_rows(data)
    assert any(r["users"] == ["all"] for r in rows)
    assert sum(len(r["users"]) for r in rows if r["users"] != ["all"]) < len(data["requests"])




def test_cli_explain_table(tune_main, capsys):
    assert tune_main(["policy", "explain", str(FIX / "shadowed-rules.yaml")]) == 0
    out = capsys.readouterr().out
    assert "7 rules" in out and "events/req" in out
    assert "rules[1] (line 7): shadowed by rules[0] (line 5)" in out


def test_cli_explain_json_and_output_file(tune_main, capsys, tmp_path):
    assert tune_main(["policy", "explain", str(FIX / "gce-style-policy.yaml"), "-f", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["omitStages"] == [RR] and data["tool"].startswith("audit-tune ")
    assert all(r["events_per_request"] == len(r["stages"]) for r in data["requests"])
    out = tmp_path / "explain.yaml"
    assert tune_main(["policy", "explain", str(FIX / "gce-style-policy.yaml"), "-f", "yaml", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["rules"] == 13


@pytest.mark.parametrize("args, fragment", [
    (["k8s-docs-audit-policy-from-blog.yaml"], "em dash (U+2014) used as a list marker on line 8"),
    (["invalid-level.yaml"], "field rules[1].level"),
    (["empty-rules.yaml"], "no rules"),
    (["missing.yaml"], "no such policy file"),
    (["unknown-field.yaml", "--strict"], "unknown field"),
    (["gce-style-policy.yaml", "-f", "csv"], "--format csv"),
])
def test_cli_errors_are_one_line_exit_1(tune_main, capsys, args, fragment):
    assert tune_main(["policy", "explain", str(FIX / args[0]), *args[1:]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tune: error: ") and err.count("\n") == 1 and fragment in err


def test_cli_unknown_field_warns_on_stderr(tune_main, capsys):
    assert tune_main(["policy", "explain", str(FIX / "unknown-field.yaml"), "-f", "json"]) == 0
    cap = capsys.readouterr()
    assert cap.err.startswith("tune: warning: ") and "unknown field" in cap.err
    assert json.loads(cap.out)["warnings"]


def test_cli_usage_error_is_one_line_exit_1(tune_main, capsys):
    assert tune_main(["policy", "explain"]) == 1
    assert capsys.readouterr().err.startswith("tune: error: ")
