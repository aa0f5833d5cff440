"""Kubernetes ``audit.k8s.io/v1`` audit policies: load, validate and evaluate them like kube-apiserver.

* :mod:`.model`: the Policy / PolicyRule / GroupResources objects (``apis/audit/v1/types.go``).
* :mod:`.loader`: reading a file (``audit/policy/reader.go``), with one-line errors.
* :mod:`.decode`: YAML nodes to the model, strict-decoding findings and line numbers.
* :mod:`.validation`: the checks of ``apis/audit/validation/validation.go``.
* :mod:`.typography`: what web pages do to YAML (typographic quotes, dashes, no-break spaces).
* :mod:`.matcher`: which rule a request hits and which stages it emits (``audit/policy/checker.go``).
* :mod:`.shadow`: rules that can never match because an earlier rule covers them.
* :mod:`.catalog`: common request classes and user kinds.
* :mod:`.explain`: the data behind ``tune policy explain``.
"""
from audit_tune.analysis.policy.loader import load_policy, load_policy_text
from audit_tune.analysis.policy.matcher import Decision, RequestAttributes, decide, evaluate, rule_matches, stages_emitted
from audit_tune.analysis.policy.model import LEVELS, STAGES, GroupResources, Policy, Rule

__all__ = [
    "Decision", "GroupResources", "LEVELS", "Policy", "RequestAttributes", "Rule", "STAGES", "decide",
    "evaluate", "load_policy", "load_policy_text", "rule_matches", "stages_emitted",
]
