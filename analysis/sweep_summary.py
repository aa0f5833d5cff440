"""The drop-free region of a sweep.

A *config* is one combination of axis values (all seeds together). It is **drop-free** when every
seed ran, none raised, and none lost an event (``lost == 0``, all plugins); it **dropped** when any
seed lost events.

Axes split in two: numeric audit-flag axes (the knobs: max size, qps, buffer size, max wait, ...)
and *condition* axes (workload, receiver, non-numeric flags such as the mode). For each condition
(combination of condition-axis values) the summary gives:

* ``min_drain_capacity``: the smallest drain capacity (effective throttle qps x batch max size,
  events/s) among drop-free configs, with its flags; ``max_dropping_capacity``: the largest that dropped;
* ``frontiers``: for each pair of flag axes (x, y), for each value of x, the least y that was drop-free;
* ``pareto``: the minimal drop-free flag settings (no other drop-free setting is <= on every flag axis).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from audit_tune.analysis.sweep_params import NUMERIC, ParamValue, is_flag, kind_of, numeric_value
from audit_tune.analysis.sweep_spec import SweepSpec
from audit_tune.basics.jsondata import JsonObject, JsonValue

PARETO_LIMIT = 25

Order = tuple[int, float, str]  # numeric values first, in value order; then the others as text


class CapacityDoc(TypedDict):
    events_per_second: float
    flags: dict[str, ParamValue]


class FrontierPointDoc(TypedDict):
    x: ParamValue
    y_min: ParamValue


class FrontierDoc(TypedDict):
    x: str
    y: str
    points: list[FrontierPointDoc]


class ConditionDoc(TypedDict):
    condition: dict[str, ParamValue]
    configs: int
    drop_free: int
    dropped: int
    errors: int
    max_drop_fraction: float | None
    min_drain_capacity: CapacityDoc | None
    max_dropping_capacity: CapacityDoc | None
    frontiers: list[FrontierDoc]
    pareto: list[dict[str, ParamValue]]


class SweepSummary(TypedDict):
    """``summary.json``: the drop-free region, per condition."""

    points: int
    finished: int
    seeds: list[int]
    configs: int
    errors: int
    drop_free_configs: int
    dropped_configs: int
    flag_axes: list[str]
    condition_axes: list[str]
    conditions: list[ConditionDoc]


def empty_summary() -> SweepSummary:
    """The summary of a sweep before any table is written."""
    return {"points": 0, "finished": 0, "seeds": [], "configs": 0, "errors": 0, "drop_free_configs": 0,
            "dropped_configs": 0, "flag_axes": [], "condition_axes": [], "conditions": []}


@dataclass
class _Config:
    """One combination of axis values with the rows of its seeds."""

    values: dict[str, ParamValue]
    capacity: float | None
    rows: list[JsonObject] = field(default_factory=list)
    errors: int = 0
    dropped: bool = False
    drop_free: bool = False
    max_drop_fraction: float | None = None


def _key(v: JsonValue) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _number(v: JsonValue) -> float:
    """A result field as a number (absent or null: 0); the value itself, so ints stay ints."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    return v


def summarize(spec: SweepSpec, rows: list[JsonObject], total_points: int) -> SweepSummary:
    names = spec.axis_names
    knobs = [a for a in names if is_flag(a) and kind_of(a) in NUMERIC]
    conds = [a for a in names if a not in knobs]
    nseeds = len(spec.seed_list())

    configs: dict[str, _Config] = {}
    for r in rows:
        k = _key([r.get(a) for a in names])
        cap = r.get("drain_capacity")
        c = configs.setdefault(k, _Config({a: r.get(a) for a in names}, None if cap is None else _number(cap)))
        c.rows.append(r)
    for c in configs.values():
        rs = c.rows
        c.errors = sum(1 for r in rs if r.get("error"))
        c.dropped = any(_number(r.get("lost") or 0) > 0 for r in rs)
        c.drop_free = len(rs) >= nseeds and not c.errors and not c.dropped
        c.max_drop_fraction = max((_number(r.get("drop_fraction") or 0.0) for r in rs if not r.get("error")), default=None)

    by_cond: dict[str, list[_Config]] = defaultdict(list)
    for c in configs.values():
        by_cond[_key([c.values[a] for a in conds])].append(c)

    def order(name: str, v: ParamValue) -> Order:
        x = numeric_value(name, v)
        return (0, x, "") if x is not None else (1, 0.0, str(v))

    conditions: list[ConditionDoc] = []
    for _ck, cs in sorted(by_cond.items(), key=lambda kv: [order(a, kv[1][0].values[a]) for a in conds]):
        free = [c for c in cs if c.drop_free]
        dropped = [c for c in cs if c.dropped]
        best_cap: CapacityDoc | None = None
        caps = [(c.capacity, c) for c in free if c.capacity is not None]
        if caps:
            cap, best = min(caps, key=lambda cc: (cc[0], [order(a, cc[1].values[a]) for a in knobs]))
            best_cap = {"events_per_second": cap, "flags": {a: best.values[a] for a in knobs}}
        worst_cap: CapacityDoc | None = None
        dcaps = [(c.capacity, c) for c in dropped if c.capacity is not None]
        if dcaps:
            cap, worst = max(dcaps, key=lambda cc: cc[0])
            worst_cap = {"events_per_second": cap, "flags": {a: worst.values[a] for a in knobs}}
        frontiers: list[FrontierDoc] = []
        for i, x in enumerate(knobs):
            for y in knobs[i + 1:]:
                best_y: dict[str, tuple[ParamValue, ParamValue]] = {}
                for c in free:
                    xv, yv = c.values[x], c.values[y]
                    cur = best_y.get(_key(xv))
                    if cur is None or order(y, yv) < order(y, cur[1]):
                        best_y[_key(xv)] = (xv, yv)
                pts = sorted(best_y.values(), key=lambda p: order(x, p[0]))
                frontiers.append({"x": x, "y": y, "points": [{"x": p[0], "y_min": p[1]} for p in pts]})
        conditions.append({
            "condition": {a: cs[0].values[a] for a in conds},
            "configs": len(cs), "drop_free": len(free), "dropped": len(dropped),
            "errors": sum(c.errors for c in cs),
            "max_drop_fraction": max((c.max_drop_fraction for c in cs if c.max_drop_fraction is not None), default=None),
            "min_drain_capacity": best_cap, "max_dropping_capacity": worst_cap,
            "frontiers": frontiers, "pareto": _pareto(free, knobs, order),
        })

    return {
        "points": total_points, "finished": len(rows), "seeds": spec.seed_list(), "configs": len(configs),
        "errors": sum(1 for r in rows if r.get("error")),
        "drop_free_configs": sum(1 for c in configs.values() if c.drop_free),
        "dropped_configs": sum(1 for c in configs.values() if c.dropped),
        "flag_axes": knobs, "condition_axes": conds, "conditions": conditions,
    }


def _pareto(free: list[_Config], knobs: list[str],
            order: Callable[[str, ParamValue], Order]) -> list[dict[str, ParamValue]]:
    if not knobs:
        return []
    vecs = []
    for c in free:
        v = [order(a, c.values[a]) for a in knobs]
        vecs.append((v, {a: c.values[a] for a in knobs}))
    out: list[dict[str, ParamValue]] = []
    for v, vals in vecs:
        dominated = any(all(o <= s for o, s in zip(w, v)) and w != v for w, _ in vecs)
        if not dominated and vals not in out:
            out.append(vals)
    out.sort(key=lambda vals: [order(a, vals[a]) for a in knobs])
    return out[:PARETO_LIMIT]


def _short(name: str) -> str:
    return name.removeprefix("audit-webhook-batch-").removeprefix("audit-log-batch-").removeprefix("audit-")


def _fmt_vals(d: Mapping[str, ParamValue]) -> str:
    return " ".join(f"{_short(k)}={v}" for k, v in d.items())


def summary_text(s: SweepSummary) -> str:
    nseeds = len(s["seeds"])
    lines = [f"sweep: {s['finished']}/{s['points']} points finished ({s['configs']} configs x {nseeds} seed"
             f"{'s' if nseeds != 1 else ''}), {s['errors']} raised; {s['drop_free_configs']} configs drop-free on every "
             f"seed, {s['dropped_configs']} dropped events"]
    for c in s["conditions"]:
        head = _fmt_vals(c["condition"]) or "all points"
        lines.append(f"{head}: {c['drop_free']}/{c['configs']} configs drop-free, {c['dropped']} dropped"
                     + (f", {c['errors']} errors" if c["errors"] else "")
                     + (f", worst drop fraction {c['max_drop_fraction']:.4f}" if c["max_drop_fraction"] else ""))
        m, w = c["min_drain_capacity"], c["max_dropping_capacity"]
        if m:
            lines.append(f"  least drain capacity without drops: {m['events_per_second']:,.0f} events/s ({_fmt_vals(m['flags'])})")
        if w:
            lines.append(f"  most drain capacity that still dropped: {w['events_per_second']:,.0f} events/s ({_fmt_vals(w['flags'])})")
        for f in c["frontiers"]:
            if f["points"]:
                pts = ", ".join(f"{p['x']} -> {p['y_min']}" for p in f["points"])
                lines.append(f"  {_short(f['x'])} -> least {_short(f['y'])} without drops: {pts}")
        if c["pareto"] and len(s["flag_axes"]) > 2:
            lines.append("  minimal drop-free settings: " + "; ".join(_fmt_vals(p) for p in c["pareto"]))
        if not c["drop_free"]:
            lines.append("  no drop-free config in this sweep")
    return "\n".join(lines) + "\n"
