"""Kubernetes ``audit.k8s.io/v1`` audit policies: load, validate and evaluate them like kube-apiserver.

The policy is part of the model: it decides, per request, the audit level and which stages emit an
event, which is what the pipeline then buffers and delivers.

* :mod:`.model`: the Policy / PolicyRule / GroupResources objects (``apis/audit/v1/types.go``).
* :mod:`.loader`: reading a file (``audit/policy/reader.go``), with one-line errors.
* :mod:`.decode`: YAML nodes to the model, strict-decoding findings and line numbers.
* :mod:`.validation`: the checks of ``apis/audit/validation/validation.go``.
* :mod:`.typography`: what web pages do to YAML (typographic quotes, dashes, no-break spaces).
* :mod:`.matcher`: which rule a request hits and which stages it emits (``audit/policy/checker.go``).

The analyses over a policy (shadowed rules, the request catalogue, ``tune policy explain``) are in
:mod:`audit_tune.analysis.policy`.
"""
from audit_tune.sim.policy.loader import load_policy, load_policy_text
from audit_tune.sim.policy.matcher import Decision, RequestAttributes, decide, evaluate, rule_matches, stages_emitted
from audit_tune.sim.policy.model import LEVELS, STAGES, GroupResources, Policy, Rule

__all__ = [
    "Decision", "GroupResources", "LEVELS", "Policy", "RequestAttributes", "Rule", "STAGES", "decide",
    "evaluate", "load_policy", "load_policy_text", "rule_matches", "stages_emitted",
]
