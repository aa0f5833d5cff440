"""What the recommender finds out about a flag set: the per-instance checks, the evaluation against
the objective, why each recommended flag has its value, and the trace of the search.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from audit_tune.analysis.flagsets import tuned_args
from audit_tune.sim.config import AuditFlags


@dataclass(frozen=True)
class InstanceCheck:
    """One instance's busiest stretch under one flag set (worst over the seeds)."""

    instance: str
    segment: list[float]  # [start, end] seconds from the window start
    buffered_drops_headroom_max: float
    buffered_drops_x1_max: float
    max_buffer_occupancy_headroom: int
    max_inflight_batches: int
    memory_bound_bytes: int
    p_any_drop_horizon: float
    capacity_events_per_second: float
    peak_burst_event_rate: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evaluation:
    """A flag set run against every instance's busiest stretch at x1 and x headroom."""

    name: str
    flags: AuditFlags
    per_instance: list[InstanceCheck]
    drops_x1: dict[str, float]  # mean events lost per run, by plugin (all instances)
    drops_headroom: dict[str, float]
    runs_with_drops_x1: float  # share of runs with any loss
    runs_with_drops_headroom: float
    p_drop: float  # fluid model, any drop over the horizon, worst instance
    p_drop_detail: dict[str, float | str]
    memory_bound: int  # bytes per apiserver, worst instance
    sim_peak_memory: int
    latency_p99: float | None
    violations: list[str]
    evaluated_x1: bool = True
    seeds: int = 0  # runs per instance and load behind the figures

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def args(self) -> list[str]:
        return tuned_args(self.flags)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "flags": tuned_args(self.flags), "ok": self.ok, "violations": self.violations,
            "drops_per_run_x1": self.drops_x1, "drops_per_run_headroom": self.drops_headroom,
            "runs_with_drops_x1": self.runs_with_drops_x1, "runs_with_drops_headroom": self.runs_with_drops_headroom,
            "p_any_drop_horizon": self.p_drop, "p_drop_detail": self.p_drop_detail,
            "memory_bound_bytes": self.memory_bound, "sim_peak_memory_bytes": self.sim_peak_memory,
            "delivery_latency_p99_seconds": self.latency_p99, "per_instance": [p.to_dict() for p in self.per_instance],
            "seeds": self.seeds,
        }


@dataclass(frozen=True)
class FlagReason:
    """Why one recommended flag has its value, and how much room it leaves."""

    value: str | int
    why: str
    headroom: float | None
    headroom_meaning: str

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "why": self.why, "headroom": self.headroom, "headroom_meaning": self.headroom_meaning}


@dataclass(frozen=True)
class Explanation:
    """Each tuned flag's reason, the constraint with the least slack, and every constraint's slack."""

    flags: dict[str, FlagReason]
    binding_constraint: str
    slack: dict[str, float | None]

    def to_dict(self) -> dict[str, object]:
        return {"flags": {k: v.to_dict() for k, v in self.flags.items()}, "binding_constraint": self.binding_constraint,
                "slack": dict(self.slack)}


@dataclass(frozen=True)
class Trial:
    """One candidate simulated in a search round."""

    flags: list[str]
    violations: list[str]
    seeds: int
    screened: str = ""  # why it was not run past seed 1 although it met the objective there

    def to_dict(self) -> dict[str, object]:
        return {"flags": self.flags, "violations": self.violations, "seeds": self.seeds, "screened": self.screened}


@dataclass(frozen=True)
class SearchTrace:
    """How the search went: analytic candidates, max sizes excluded (why), simulated rounds."""

    analytic_candidates: int
    excluded: list[str]
    rounds: list[list[Trial]] = field(default_factory=list)
    simulation_runs: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"analytic_candidates": self.analytic_candidates, "excluded": self.excluded,
                "rounds": [[t.to_dict() for t in r] for r in self.rounds], "simulation_runs": self.simulation_runs}
