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
from collections.abc import Callable
from dataclasses import dataclass

from audit_tune import __version__
from audit_tune.analysis.executors import map_points
from audit_tune.analysis.objective import Objective
from audit_tune.analysis.recommend import Snapshot, build_report
from audit_tune.analysis.recommendation import RecommendationReport
from audit_tune.sim.config import AuditFlags, parse_flags

KIND = "audit-tune-fleet/v1"


@dataclass(frozen=True)
class ClusterRow:
    """One cluster's line of the fleet summary."""

    cluster: str
    instances: int
    peak_event_rate: float
    confidence: str
    current_ok: bool
    current_violations: list[str]
    recommended_flags: list[str] | None
    binding_constraint: str | None
    why_none: list[str] | None

    @property
    def fits(self) -> bool:
        return self.current_ok and bool(self.recommended_flags)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FleetResult:
    """Every cluster's recommendation and a summary row per cluster."""

    tool_version: str
    seed: int
    executor: str
    current_flags_source: str
    current_flags: list[str]
    objective: Objective
    summary: list[ClusterRow]
    clusters: dict[str, RecommendationReport]

    def to_dict(self) -> dict[str, object]:
        return {"kind": KIND, "tool_version": self.tool_version, "seed": self.seed, "executor": self.executor,
                "current_flags": {"source": self.current_flags_source, "flags": self.current_flags},
                "objective": dataclasses.asdict(self.objective), "summary": [r.to_dict() for r in self.summary],
                "clusters": {k: v.to_dict() for k, v in self.clusters.items()}}


@dataclass(frozen=True)
class ClusterTask:
    """One cluster's recommendation inputs (picklable, for the executors)."""

    cluster: str
    snapshot: Snapshot
    flags: list[str]
    current_source: str
    objective: Objective
    seed: int
    source: dict[str, object]


def split_by_cluster(snap: Snapshot) -> dict[str, Snapshot]:
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


def _one(task: ClusterTask) -> tuple[str, RecommendationReport]:
    """Top-level (picklable) task: one cluster's report."""
    current = parse_flags(task.flags, ignore_unknown=True, source="current flags")
    src = dict(task.source, cluster=task.cluster)
    return task.cluster, build_report(task.snapshot, current, task.current_source, task.objective, seed=task.seed,
                                      source=src)


def _row(cluster: str, instances: int, rep: RecommendationReport) -> ClusterRow:
    rec = rep.recommended
    return ClusterRow(cluster, instances, rep.peak_burst_event_rate, rep.confidence, rep.current_ok,
                      rep.current_violations, rec.flags if rec else None,
                      rec.explanation.binding_constraint if rec else None,
                      None if rec else rep.no_recommendation_why)


def recommend_fleet(snap: Snapshot, current: AuditFlags, current_source: str, objective: Objective, seed: int = 1,
                    source: dict[str, object] | None = None, executor: str = "local", jobs: int | None = None,
                    scheduler: str | None = None, log: Callable[[str], None] | None = None) -> FleetResult:
    """Reports for every cluster, and a summary row per cluster."""
    log = log or (lambda s: None)
    groups = split_by_cluster(snap)
    obj1 = dataclasses.replace(objective, jobs=1)
    flags = current.to_flags()
    items = [ClusterTask(c, sub, flags, current_source, obj1, seed, dict(source or {})) for c, sub in groups.items()]
    log(f"{len(items)} cluster(s), {sum(len(s['instances']) for s in groups.values())} apiserver(s), executor {executor}")

    def progress(n: int, _res: list[tuple[str, RecommendationReport]]) -> None:
        log(f"{n}/{len(items)} clusters done")

    results = map_points(_one, items, executor, jobs=jobs or objective.jobs, scheduler=scheduler, chunk_size=1,
                         on_chunk=progress)
    reports: dict[str, RecommendationReport] = dict(results)
    summary = [_row(c, len(groups[c]["instances"]), rep) for c, rep in reports.items()]
    return FleetResult(__version__, seed, executor, current_source, flags, objective, summary, reports)
