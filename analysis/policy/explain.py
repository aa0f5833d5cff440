"""What a policy does to everyday traffic: the data behind ``tune policy explain``.

For every (request class x user kind) of :mod:`analysis.policy.catalog` it evaluates the policy
(:func:`analysis.policy.matcher.decide`) and records the deciding rule, the level, the stages
that emit an event and so the number of audit events per request. It also lists the rules that
can never match (:mod:`analysis.policy.shadow`). The result is plain data (dicts and lists) so
any formatter can print it; ``table_rows`` merges user kinds that get the same answer.
"""
from __future__ import annotations

import json
from typing import TypedDict

from audit_tune.analysis.policy.catalog import REQUEST_CLASSES, USER_KINDS, RequestClass, UserKind
from audit_tune.analysis.policy.shadow import shadowed_rules
from audit_tune.basics.jsondata import JsonMapping, JsonValue, as_int, as_list, as_object, as_str
from audit_tune.sim.policy.matcher import decide, stages_emitted
from audit_tune.sim.policy.model import STAGES, Policy


class RequestDoc(TypedDict):
    """One request class evaluated for one user kind."""

    user_kind: str
    user: str
    verb: str
    resource: str
    namespace: str
    long_running: bool
    rule_index: int | None
    rule_line: int | None
    level: str
    stages: list[str]
    events_per_request: int
    omit_managed_fields: bool


class ShadowedDoc(TypedDict):
    rule_index: int
    rule_line: int
    shadowed_by_index: int
    shadowed_by_line: int
    reason: str


class ExplainDoc(TypedDict):
    """``tune policy explain -f json`` (without its ``tool`` key)."""

    policy: str
    rules: int
    omitStages: list[str]
    omitManagedFields: bool
    warnings: list[str]
    requests: list[RequestDoc]
    shadowed_rules: list[ShadowedDoc]


class TableRow(TypedDict):
    """One row of the table: a request class and outcome, with the user kinds that get it."""

    verb: str
    resource: str
    namespace: str
    users: list[str]
    rule_index: int | None
    rule_line: int | None
    level: str
    stages: list[str]
    events: int


def _opt_int(v: JsonValue, where: str) -> int | None:
    return None if v is None else as_int(v, where)


def explain_policy(policy: Policy, classes: tuple[RequestClass, ...] = REQUEST_CLASSES,
                   users: tuple[UserKind, ...] = USER_KINDS) -> ExplainDoc:
    """Every evaluated request and every shadowed rule, as plain data."""
    requests: list[RequestDoc] = []
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
    shadowed: list[ShadowedDoc] = [{
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


def table_rows(data: JsonMapping) -> list[TableRow]:
    """One row per request class and outcome (``data``: :func:`explain_policy`'s document as rendered);
    user kinds with the same outcome are merged."""
    all_users = [u.key for u in USER_KINDS]
    rows: list[TableRow] = []
    index: dict[str, TableRow] = {}
    requests = [as_object(r, "requests[]") for r in as_list(data["requests"], "requests")]
    for r in requests:
        key = json.dumps([r["verb"], r["resource"], r["namespace"], r["rule_index"], r["level"], r["stages"]])
        if key in index:
            index[key]["users"].append(as_str(r["user_kind"], "user_kind"))
            continue
        row: TableRow = {"verb": as_str(r["verb"], "verb"), "resource": as_str(r["resource"], "resource"),
                         "namespace": as_str(r["namespace"], "namespace"), "users": [as_str(r["user_kind"], "user_kind")],
                         "rule_index": _opt_int(r["rule_index"], "rule_index"),
                         "rule_line": _opt_int(r["rule_line"], "rule_line"), "level": as_str(r["level"], "level"),
                         "stages": [as_str(s, "stages[]") for s in as_list(r["stages"], "stages")],
                         "events": as_int(r["events_per_request"], "events_per_request")}
        index[key] = row
        rows.append(row)
    users_present = set(str(r["user_kind"]) for r in requests)
    for row in rows:
        if set(row["users"]) == users_present and len(users_present) == len(all_users):
            row["users"] = ["all"]
    return rows
