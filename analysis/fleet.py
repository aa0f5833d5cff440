"""Fleet-wide recommendation: every cluster in one Prometheus (or snapshot), in parallel.

Instances are grouped by their cluster label (``instances[*].cluster`` in the snapshot, set by
``--prometheus-label``/``-l``; instances without one form the cluster ``""``). Each cluster gets its
own recommendation (``analysis.recommend.build_report`` on the sub-snapshot of its instances), run
through ``analysis.executors.map_points`` on a local process pool or Dask, one cluster per task.
Inside a task the recommender runs single-process (``jobs=1``): the parallelism is across clusters,
and nested pools inside pool workers would oversubscribe the cores.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from audit_tune import __version__
from audit_tune.analysis.executors import map_points
from audit_tune.analysis.recommend import build_report
from audit_tune.sim.config import AuditFlags, parse_flags


def split_by_cluster(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One sub-snapshot per cluster label value, with the missing-data items that concern it."""
    groups: dict[str, list[str]] = {}
    for name, inst in (snap.get("instances") or {}).items():
        groups.setdefault(str(inst.get("cluster") or ""), []).append(name)
    out = {}
    for cluster, names in sorted(groups.items()):
        sub = dict(snap)
        sub["instances"] = {n: snap["instances"][n] for n in names}
        sub["missing"] = [m for m in snap.get("missing") or [] if m.get("instance") in names or m.get("instance") == "*"]
        out[cluster] = sub
    return out


def _one(item: tuple[str, dict[str, Any], list[str], str, Any, int, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Top-level (picklable) task: one cluster's report."""
    cluster, sub, flags, csrc, obj, seed, source = item
    current = parse_flags(flags, ignore_unknown=True, source="current flags")
    src = dict(source, cluster=cluster)
    return cluster, build_report(sub, current, csrc, obj, seed=seed, source=src)


def recommend_fleet(snap: dict[str, Any], current: AuditFlags, current_source: str, objective: Any, seed: int = 1,
                    source: dict[str, Any] | None = None, executor: str = "local", jobs: int | None = None,
                    scheduler: str | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reports for every cluster, and a summary row per cluster."""
    log = log or (lambda s: None)
    groups = split_by_cluster(snap)
    obj1 = dataclasses.replace(objective, jobs=1)
    flags = current.to_flags()
    items = [(c, sub, flags, current_source, obj1, seed, dict(source or {})) for c, sub in groups.items()]
    log(f"{len(items)} cluster(s), {sum(len(s['instances']) for s in groups.values())} apiserver(s), executor {executor}")
    done = {"n": 0}

    def progress(n: int, _res: list[Any]) -> None:
        done["n"] = n
        log(f"{n}/{len(items)} clusters done")

    results = map_points(_one, items, executor, jobs=jobs or objective.jobs, scheduler=scheduler, chunk_size=1,
                         on_chunk=progress)
    reports = dict(results)
    summary = []
    for cluster, rep in reports.items():
        rec = rep.get("recommended")
        summary.append({
            "cluster": cluster,
            "instances": len(groups[cluster]["instances"]),
            "peak_event_rate": max((c.get("peak_burst_event_rate") or 0.0 for c in rep.get("calibration") or []),
                                   default=0.0),
            "confidence": rep.get("confidence"),
            "current_ok": rep.get("current_ok"),
            "current_violations": rep.get("current_violations"),
            "recommended_flags": rec["flags"] if rec else None,
            "binding_constraint": rec["explanation"].get("binding_constraint") if rec else None,
            "why_none": None if rec else rep.get("no_recommendation_why"),
        })
    return {"kind": "audit-tune-fleet/v1", "tool_version": __version__, "seed": seed, "executor": executor,
            "current_flags": {"source": current_source, "flags": flags},
            "objective": dataclasses.asdict(objective), "summary": summary, "clusters": reports}
