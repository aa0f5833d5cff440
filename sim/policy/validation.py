"""Semantic checks on a decoded policy, as kube-apiserver runs them before accepting it.

Mirrors ``staging/src/k8s.io/apiserver/pkg/apis/audit/validation/validation.go``
(``ValidatePolicy``) at the 1.37 development snapshot:

* policy ``omitStages[i]`` and each rule's ``omitStages[i]``: one of RequestReceived,
  ResponseStarted, ResponseComplete, Panic;
* ``rules[i].level``: required, one of None, Metadata, Request, RequestResponse;
* ``rules[i].nonResourceURLs[j]``: ``"*"``, or starts with ``/`` and has ``*`` only as the last
  character;
* ``rules[i].resources``: ``group`` is ``""``, ``"*"`` (accepted since 1.36; 1.34/1.35 reject it
  as not a DNS subdomain) or a lower-case DNS subdomain (so ``apps/v1`` is rejected: no version);
  ``resourceNames`` needs at least one ``resources`` entry;
* a rule may not have ``nonResourceURLs`` together with ``resources`` or ``namespaces``.

Users, groups, verbs, namespaces and resource patterns are not checked upstream, so not here.
The "policy with 0 rules" check lives in the loader, after validation, as in ``reader.go``.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from audit_tune.sim.policy.model import LEVELS, STAGES, Policy, Rule

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")


class FieldError(NamedTuple):
    """One validation failure: upstream-style field path, YAML line, and a message with the fix."""

    path: str
    line: int
    message: str


def _stages(stages: tuple[str, ...], path: str, line: int) -> list[FieldError]:
    return [FieldError(f"{path}[{i}]", line, f"unsupported stage {s!r}; allowed stages are {', '.join(STAGES)}")
            for i, s in enumerate(stages) if s not in STAGES]


def _dns_subdomain_problem(group: str) -> str | None:
    if len(group) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(group):
        hint = " (leave the version out: write the group only)" if "/" in group else ""
        return ("must be a lower-case DNS subdomain such as 'apps' or 'rbac.authorization.k8s.io', "
                "'' for the core group or '*' for any group" + hint)
    return None


def validate_rule(rule: Rule, index: int) -> list[FieldError]:
    """Errors for one rule (upstream ``validatePolicyRule``)."""
    p = f"rules[{index}]"
    errs: list[FieldError] = []
    if rule.level == "":
        errs.append(FieldError(f"{p}.level", rule.line, f"required; use one of {', '.join(LEVELS)}"))
    elif rule.level not in LEVELS:
        errs.append(FieldError(f"{p}.level", rule.line,
                               f"unsupported level {rule.level!r}; use one of {', '.join(LEVELS)}"))
    for j, url in enumerate(rule.non_resource_urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            errs.append(FieldError(f"{p}.nonResourceURLs[{j}]", rule.line,
                                   f"{url!r}: non-resource URL rules must begin with a '/' character"))
        if url and "*" in url[:-1]:
            errs.append(FieldError(f"{p}.nonResourceURLs[{j}]", rule.line,
                                   f"{url!r}: non-resource URL wildcards '*' must be the final character of the rule"))
    for j, gr in enumerate(rule.resources):
        if gr.group not in ("", "*"):
            problem = _dns_subdomain_problem(gr.group)
            if problem:
                errs.append(FieldError(f"{p}.resources[{j}].group", gr.line or rule.line, f"{gr.group!r} {problem}"))
        if gr.resource_names and not gr.resources:
            errs.append(FieldError(f"{p}.resources[{j}].resourceNames", gr.line or rule.line,
                                   "using resourceNames requires at least one resource"))
    errs.extend(_stages(rule.omit_stages, f"{p}.omitStages", rule.line))
    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        errs.append(FieldError(f"{p}.nonResourceURLs", rule.line,
                               "rules cannot apply to both regular resources and non-resource URLs; "
                               "split it into two rules"))
    return errs


def validate_policy(policy: Policy, omit_stages_line: int = 0) -> list[FieldError]:
    """All errors, policy-wide ``omitStages`` first, then rule by rule (upstream order)."""
    errs = _stages(policy.omit_stages, "omitStages", omit_stages_line)
    for i, rule in enumerate(policy.rules):
        errs.extend(validate_rule(rule, i))
    return errs
