"""What a policy does to everyday traffic: the data behind ``tune policy explain``.

For every (request class x user kind) of :mod:`analysis.policy.catalog` it evaluates the policy
(:func:`analysis.policy.matcher.decide`) and records the deciding rule, the level, the stages
that emit an event and so the number of audit events per request. It also lists the rules that
can never match (:mod:`analysis.policy.shadow`). The result is plain data (dicts and lists) so
any formatter can print it; ``table_rows`` merges user kinds that get the same answer.
"""
from __future__ import annotations

from typing import Any

from audit_tune.analysis.policy.catalog import REQUEST_CLASSES, USER_KINDS, RequestClass, UserKind
from audit_tune.analysis.policy.shadow import shadowed_rules
from audit_tune.sim.policy.matcher import decide, stages_emitted
from audit_tune.sim.policy.model import STAGES, Policy


def explain_policy(policy: Policy, classes: tuple[RequestClass, ...] = REQUEST_CLASSES,
                   users: tuple[UserKind, ...] = USER_KINDS) -> dict[str, Any]:
    """Every evaluated request and every shadowed rule, as plain data."""
    requests = []
    for rc in classes:
        for who in users:
            attrs = rc.attributes(who)
            d = decide(policy, attrs)
            stages = stages_emitted(d.level, d.omit_stages, attrs.long_running)
            requests.append({
                "user_kind": who.key, "user": who.user, "verb": rc.verb, "resource": rc.label,
                "namespace": rc.namespace, "long_running": attrs.long_running,
                "rule_index": d.rule_index,
                "rule_line": None if d.rule_index is None else policy.rules[d.rule_index].line,
                "level": d.level, "stages": list(stages), "events_per_request": len(stages),
                "omit_managed_fields": d.omit_managed_fields,
            })
    shadowed = [{
        "rule_index": s.index, "rule_line": policy.rules[s.index].line,
        "shadowed_by_index": s.by, "shadowed_by_line": policy.rules[s.by].line,
        "reason": f"rules[{s.by}] (line {policy.rules[s.by].line}) matches every request rules[{s.index}] matches",
    } for s in shadowed_rules(policy)]
    return {
        "policy": policy.source,
        "rules": len(policy.rules),
        "omitStages": [s for s in STAGES if s in policy.omit_stages],
        "omitManagedFields": policy.omit_managed_fields,
        "warnings": list(policy.warnings),
        "requests": requests,
        "shadowed_rules": shadowed,
    }


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per request class and outcome; user kinds with the same outcome are merged."""
    all_users = [u.key for u in USER_KINDS]
    rows: list[dict[str, Any]] = []
    index: dict[tuple, dict[str, Any]] = {}
    for r in data["requests"]:
        key = (r["verb"], r["resource"], r["namespace"], r["rule_index"], r["level"], tuple(r["stages"]))
        if key in index:
            index[key]["users"].append(r["user_kind"])
            continue
        row = {"verb": r["verb"], "resource": r["resource"], "namespace": r["namespace"],
               "users": [r["user_kind"]], "rule_index": r["rule_index"], "rule_line": r["rule_line"],
               "level": r["level"], "stages": r["stages"], "events": r["events_per_request"]}
        index[key] = row
        rows.append(row)
    users_present = set(r["user_kind"] for r in data["requests"])
    for row in rows:
        if set(row["users"]) == users_present and len(users_present) == len(all_users):
            row["users"] = ["all"]
    return rows
