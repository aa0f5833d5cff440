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
from typing import Any

from audit_tune.analysis.sweep_params import NUMERIC, is_flag, kind_of, numeric_value
from audit_tune.analysis.sweep_spec import SweepSpec

PARETO_LIMIT = 25


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def summarize(spec: SweepSpec, rows: list[dict[str, Any]], total_points: int) -> dict[str, Any]:
    names = spec.axis_names
    knobs = [a for a in names if is_flag(a) and kind_of(a) in NUMERIC]
    conds = [a for a in names if a not in knobs]
    nseeds = len(spec.seed_list())

    configs: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = _key([r.get(a) for a in names])
        c = configs.setdefault(k, {"values": {a: r.get(a) for a in names}, "rows": [], "capacity": r.get("drain_capacity")})
        c["rows"].append(r)
    for c in configs.values():
        rs = c["rows"]
        c["errors"] = sum(1 for r in rs if r.get("error"))
        c["dropped"] = any((r.get("lost") or 0) > 0 for r in rs)
        c["drop_free"] = len(rs) >= nseeds and not c["errors"] and not c["dropped"]
        c["max_drop_fraction"] = max((r.get("drop_fraction") or 0.0 for r in rs if not r.get("error")), default=None)

    by_cond: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in configs.values():
        by_cond[_key([c["values"][a] for a in conds])].append(c)

    def order(name: str, v: Any) -> tuple[int, float, str]:
        x = numeric_value(name, v)
        return (0, x, "") if x is not None else (1, 0.0, str(v))

    conditions = []
    for _ck, cs in sorted(by_cond.items(), key=lambda kv: [order(a, kv[1][0]["values"][a]) for a in conds]):
        free = [c for c in cs if c["drop_free"]]
        dropped = [c for c in cs if c["dropped"]]
        entry: dict[str, Any] = {
            "condition": {a: cs[0]["values"][a] for a in conds},
            "configs": len(cs), "drop_free": len(free), "dropped": len(dropped),
            "errors": sum(c["errors"] for c in cs),
            "max_drop_fraction": max((c["max_drop_fraction"] for c in cs if c["max_drop_fraction"] is not None), default=None),
        }
        caps = [c for c in free if c["capacity"] is not None]
        if caps:
            best = min(caps, key=lambda c: (c["capacity"], [order(a, c["values"][a]) for a in knobs]))
            entry["min_drain_capacity"] = {"events_per_second": best["capacity"], "flags": {a: best["values"][a] for a in knobs}}
        else:
            entry["min_drain_capacity"] = None
        dcaps = [c for c in dropped if c["capacity"] is not None]
        if dcaps:
            worst = max(dcaps, key=lambda c: c["capacity"])
            entry["max_dropping_capacity"] = {"events_per_second": worst["capacity"], "flags": {a: worst["values"][a] for a in knobs}}
        else:
            entry["max_dropping_capacity"] = None
        frontiers = []
        for i, x in enumerate(knobs):
            for y in knobs[i + 1:]:
                best_y: dict[str, Any] = {}
                for c in free:
                    xv, yv = c["values"][x], c["values"][y]
                    cur = best_y.get(_key(xv))
                    if cur is None or order(y, yv) < order(y, cur[1]):
                        best_y[_key(xv)] = (xv, yv)
                pts = sorted(best_y.values(), key=lambda p: order(x, p[0]))
                frontiers.append({"x": x, "y": y, "points": [{"x": p[0], "y_min": p[1]} for p in pts]})
        entry["frontiers"] = frontiers
        entry["pareto"] = _pareto(free, knobs, order)
        conditions.append(entry)

    return {
        "points": total_points, "finished": len(rows), "seeds": spec.seed_list(), "configs": len(configs),
        "errors": sum(1 for r in rows if r.get("error")),
        "drop_free_configs": sum(1 for c in configs.values() if c["drop_free"]),
        "dropped_configs": sum(1 for c in configs.values() if c["dropped"]),
        "flag_axes": knobs, "condition_axes": conds, "conditions": conditions,
    }


def _pareto(free: list[dict[str, Any]], knobs: list[str], order: Any) -> list[dict[str, Any]]:
    if not knobs:
        return []
    vecs = []
    for c in free:
        v = [order(a, c["values"][a]) for a in knobs]
        vecs.append((v, {a: c["values"][a] for a in knobs}))
    out = []
    for v, vals in vecs:
        dominated = any(all(o <= s for o, s in zip(w, v)) and w != v for w, _ in vecs)
        if not dominated and vals not in out:
            out.append(vals)
    out.sort(key=lambda vals: [order(a, vals[a]) for a in knobs])
    return out[:PARETO_LIMIT]


def _short(name: str) -> str:
    return name.removeprefix("audit-webhook-batch-").removeprefix("audit-log-batch-").removeprefix("audit-")


def _fmt_vals(d: dict[str, Any]) -> str:
    return " ".join(f"{_short(k)}={v}" for k, v in d.items())


def summary_text(s: dict[str, Any]) -> str:
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
