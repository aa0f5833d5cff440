"""Evaluate a policy for one request, as kube-apiserver's audit filter does.

Mirrors ``staging/src/k8s.io/apiserver/pkg/audit/policy/checker.go`` (``EvaluatePolicyRule``,
``ruleMatches``, ``ruleMatchesResource``, ``ruleMatchesNonResource``, ``pathMatches``,
``unionStages``, ``isOmitManagedFields``), read at the kubernetes/apiserver 1.37 development
snapshot:

* Rules are tried in order; the **first match wins**. No match gives level ``None`` and the
  policy-wide ``omitStages``.
* A rule's effective ``omitStages`` is the union of the policy's and the rule's.
* ``users``: the user name must be listed. ``userGroups``: at least one of the user's groups must
  be listed. ``verbs``: the request verb must be listed. A request without a user (``user=None``)
  never matches a rule that names users or groups.
* If a rule has ``namespaces`` or ``resources`` it only matches resource requests:
  ``namespaces`` must list the request namespace (``""`` for cluster-scoped); each
  ``GroupResources`` matches when its group equals the request's API group (or is ``"*"``,
  1.36+) and it lists no resources, or one pattern matches (subject to ``resourceNames``):
  ``"*"`` (anything, subresources included), ``"resource/subresource"`` exactly, ``"resource"``
  (the resource itself, *not* its subresources), ``"*/sub"`` (that subresource of any resource)
  or ``"resource/*"`` (the resource itself **and** any of its subresources; upstream compares
  only the resource part).
* Else, if it has ``nonResourceURLs``, it only matches non-resource requests: ``"*"`` matches all,
  an exact path matches, and a trailing ``*`` is a prefix match (``"/api*"`` matches ``/apis``).
* A rule with neither matches every request.
* ``omitManagedFields``: the rule's value if set, else the policy's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from audit_tune.sim.policy.model import (
    LEVEL_NONE,
    STAGE_REQUEST_RECEIVED,
    STAGE_RESPONSE_COMPLETE,
    STAGE_RESPONSE_STARTED,
    STAGES,
    GroupResources,
    Policy,
    Rule,
)

#: ``BasicLongRunningRequestCheck`` arguments used by kube-apiserver (``cmd/kube-apiserver/app/server.go``).
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})


@dataclass(frozen=True)
class RequestAttributes:
    """The ``authorizer.Attributes`` the audit policy sees (``authorizer.AttributesRecord``).

    ``user`` is ``None`` for a request with no user info at all (upstream ``GetUser() == nil``);
    anonymous requests have user ``system:anonymous`` and group ``system:unauthenticated``.
    """

    user: str | None
    groups: tuple[str, ...] = ()
    verb: str = "get"
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    name: str = ""
    path: str = ""
    is_resource_request: bool = True

    @property
    def long_running(self) -> bool:
        """kube-apiserver's ``LongRunningFunc`` (``apiserver/pkg/server/filters/longrunning.go``).

        Verbs watch/proxy; resource requests for subresources attach/exec/proxy/log/portforward;
        non-resource paths under ``/debug/pprof/``.
        """
        if self.verb in LONG_RUNNING_VERBS:
            return True
        if self.is_resource_request:
            return self.subresource in LONG_RUNNING_SUBRESOURCES
        return self.path.startswith("/debug/pprof/")


class Decision(NamedTuple):
    """What ``EvaluatePolicyRule`` returns, plus which rule (0-based) decided, or ``None``."""

    level: str
    omit_stages: frozenset[str]
    rule_index: int | None
    omit_managed_fields: bool = False


def _group_resources_match(gr: GroupResources, attrs: RequestAttributes) -> bool:
    if gr.group != attrs.api_group and gr.group != "*":
        return False
    if not gr.resources:
        return True
    if gr.resource_names and attrs.name not in gr.resource_names:
        return False
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    for res in gr.resources:
        if res == combined or res == "*":
            return True
        if attrs.subresource and res.startswith("*/") and res[2:] == attrs.subresource:
            return True
        if res.endswith("/*") and res[:-2] == attrs.resource:
            return True
    return False


def _path_matches(path: str, spec: str) -> bool:
    if spec == "*" or spec == path:
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


def rule_matches(rule: Rule, attrs: RequestAttributes) -> bool:
    """Does this one rule select the request? (upstream ``ruleMatches``)."""
    if rule.users and (attrs.user is None or attrs.user not in rule.users):
        return False
    if rule.user_groups:
        if attrs.user is None or not any(g in rule.user_groups for g in attrs.groups):
            return False
    if rule.verbs and attrs.verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        if not attrs.is_resource_request:
            return False
        if rule.namespaces and attrs.namespace not in rule.namespaces:
            return False
        return not rule.resources or any(_group_resources_match(gr, attrs) for gr in rule.resources)
    if rule.non_resource_urls:
        if attrs.is_resource_request:
            return False
        return any(_path_matches(attrs.path, spec) for spec in rule.non_resource_urls)
    return True


def effective_omit_stages(policy: Policy, rule: Rule) -> frozenset[str]:
    """Union of policy-wide and rule ``omitStages`` (upstream ``unionStages``)."""
    return frozenset(policy.omit_stages) | frozenset(rule.omit_stages)


def decide(policy: Policy, attrs: RequestAttributes) -> Decision:
    """Full decision, including ``omitManagedFields`` (upstream ``EvaluatePolicyRule``)."""
    for i, rule in enumerate(policy.rules):
        if rule_matches(rule, attrs):
            omf = policy.omit_managed_fields if rule.omit_managed_fields is None else rule.omit_managed_fields
            return Decision(rule.level, effective_omit_stages(policy, rule), i, omf)
    return Decision(LEVEL_NONE, frozenset(policy.omit_stages), None, policy.omit_managed_fields)


def evaluate(policy: Policy, attrs: RequestAttributes) -> tuple[str, frozenset[str], int | None]:
    """``(level, omit_stages, rule_index)`` for the request; ``rule_index`` is 0-based or ``None``."""
    d = decide(policy, attrs)
    return d.level, d.omit_stages, d.rule_index


def stages_emitted(level: str | None, omit_stages: frozenset[str] | set[str] | tuple[str, ...],
                   long_running: bool) -> tuple[str, ...]:
    """Stages that produce an event for a request that completes without panicking.

    Mirrors ``apiserver/pkg/endpoints/filters/audit.go`` (see spec §7): level ``None`` (or
    ``None``) gives no events; a normal request emits RequestReceived and ResponseComplete; a
    long-running one also emits ResponseStarted in between. Omitted stages are skipped.
    """
    if level is None or level == LEVEL_NONE:
        return ()
    stages = [STAGE_REQUEST_RECEIVED]
    if long_running:
        stages.append(STAGE_RESPONSE_STARTED)
    stages.append(STAGE_RESPONSE_COMPLETE)
    omitted = set(omit_stages)
    return tuple(s for s in stages if s not in omitted and s in STAGES)
