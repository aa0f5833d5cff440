"""Analyses over an audit policy (the policy model itself is :mod:`audit_tune.sim.policy`).

* :mod:`.shadow`: rules that can never match because an earlier rule covers them.
* :mod:`.catalog`: common request classes and user kinds.
* :mod:`.explain`: the data behind ``tune policy explain``.
"""
from audit_tune.sim.policy import (
                                   LEVELS,
                                   STAGES,
                                   Decision,
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

__all__ = [
    "Decision", "GroupResources", "LEVELS", "Policy", "RequestAttributes", "Rule", "STAGES", "decide",
    "evaluate", "load_policy", "load_policy_text", "rule_matches", "stages_emitted",
]
