"""The capacity report as a typed result: :class:`CapacityReport`, a view of the report's document
(``data.json``: every number the report shows, rounded by :func:`analysis.report.data.clean`) built
once by :func:`analysis.report.data.assemble`. The renderers (:mod:`analysis.report.content`,
``markdown``, ``html``, ``plots``) read its attributes; :meth:`CapacityReport.to_dict` gives the
document back. The plot series (history, knee, peak window, latency sweep, sensitivity) stay the
simulations' own data structures (:mod:`analysis.report.sims`), which the plots draw as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit_tune.analysis.evaluation import FlagReason
from audit_tune.analysis.outage import FrontierPoint
from audit_tune.loadgen.verify_result import VerifyRow

FORMAT = "audit-tune-report/v1"

#: A JSON document (or a part of one): what ``data.json`` stores.
Doc = dict[str, Any]


@dataclass(frozen=True)
class ReportWindow:
    """The snapshot window, with its UTC texts and length when the bounds are numbers."""

    start: float | None
    end: float | None
    step: float | None
    start_utc: str | None = None
    end_utc: str | None = None
    length: str | None = None

    @classmethod
    def from_doc(cls, d: Doc) -> ReportWindow:
        return cls(d.get("start"), d.get("end"), d.get("step"), d.get("start_utc"), d.get("end_utc"), d.get("length"))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"start": self.start, "end": self.end, "step": self.step}
        for k in ("start_utc", "end_utc", "length"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


@dataclass(frozen=True)
class SimulatedStretch:
    start_offset_seconds: float
    seconds: float
    mean_event_rate: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReportConfig:
    """What the report was made from: seed, engine, input, objective, the simulated stretch."""

    seed: int
    engine: str
    source: Doc
    objective: Doc
    horizon_seconds: float
    current_flags_source: str
    loadtest: str | None
    simulated_instance: str
    simulated_stretch: SimulatedStretch
    report_simulation_runs: int

    @classmethod
    def from_doc(cls, d: Doc) -> ReportConfig:
        return cls(d["seed"], d["engine"], d["source"], d["objective"], d["horizon_seconds"],
                   d["current_flags_source"], d["loadtest"], d["simulated_instance"],
                   SimulatedStretch(**d["simulated_stretch"]), d["report_simulation_runs"])

    def to_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "engine": self.engine, "source": self.source, "objective": self.objective,
                "horizon_seconds": self.horizon_seconds, "current_flags_source": self.current_flags_source,
                "loadtest": self.loadtest, "simulated_instance": self.simulated_instance,
                "simulated_stretch": self.simulated_stretch.to_dict(),
                "report_simulation_runs": self.report_simulation_runs}


@dataclass(frozen=True)
class CalibrationSummary:
    """One apiserver's calibration check: replayed drops against the observed ones."""

    instance: str
    confidence: str
    rate_error: float
    drop_error: float
    observed_drops: float
    predicted_drops: float
    replayed: str
    why: str

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Summary:
    """The verdict and the figures behind it."""

    verdict: str
    verdict_text: str
    current_ok: bool
    current_violations: list[str]
    recommended_flags: list[str]
    flags_changed_from_current: list[str]
    binding_constraint: str | None
    slack: dict[str, float | None]
    observed_peak_events_per_second: float
    capacity_events_per_second: dict[str, float | None]
    headroom: dict[str, float | None]
    per_flag: dict[str, FlagReason]
    confidence: str
    calibration: list[CalibrationSummary]
    warnings: list[str]

    @classmethod
    def from_doc(cls, d: Doc) -> Summary:
        return cls(d["verdict"], d["verdict_text"], d["current_ok"], d["current_violations"], d["recommended_flags"],
                   d["flags_changed_from_current"], d["binding_constraint"], d["slack"],
                   d["observed_peak_events_per_second"], d["capacity_events_per_second"], d["headroom"],
                   {k: FlagReason(**v) for k, v in d["per_flag"].items()}, d["confidence"],
                   [CalibrationSummary(**c) for c in d["calibration"]], d["warnings"])

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["per_flag"] = {k: v.to_dict() for k, v in self.per_flag.items()}
        out["calibration"] = [c.to_dict() for c in self.calibration]
        return out


@dataclass(frozen=True)
class LoadtestComparison:
    """A real load-test run against the simulator's replay of it."""

    file: str
    run_id: str | None
    how: str
    window: Doc
    load: Doc
    flags: list[str]
    rows: list[VerifyRow]
    ok: bool | None
    failures: list[str]
    notes: list[str]
    tolerance: Doc | None
    inputs: Doc | None

    @classmethod
    def from_doc(cls, d: Doc) -> LoadtestComparison:
        return cls(d["file"], d["run_id"], d["how"], d["window"], d["load"], d["flags"],
                   [VerifyRow(**r) for r in d["rows"]], d["ok"], d["failures"], d["notes"], d["tolerance"],
                   d["inputs"])

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["rows"] = [r.to_dict() for r in self.rows]
        return out


@dataclass(frozen=True)
class CapacityReport:
    """Everything ``tune report`` shows (``data.json``)."""

    tool_version: str
    name: str
    config: ReportConfig
    window: ReportWindow
    flag_sets: dict[str, list[str]]
    effective_flags: dict[str, Doc]
    summary: Summary
    history: list[Doc]
    knee: Doc
    peak_window: Doc
    latency_sweep: Doc
    sensitivity: Doc | None
    loadtest: LoadtestComparison | None
    recommendation: Doc

    @classmethod
    def from_doc(cls, d: Doc) -> CapacityReport:
        lt = d.get("loadtest")
        return cls(d["tool_version"], d["name"], ReportConfig.from_doc(d["config"]), ReportWindow.from_doc(d["window"]),
                   d["flag_sets"], d["effective_flags"], Summary.from_doc(d["summary"]), d["history"], d["knee"],
                   d["peak_window"], d["latency_sweep"], d.get("sensitivity"),
                   LoadtestComparison.from_doc(lt) if lt else None, d["recommendation"])

    @property
    def frontier(self) -> list[FrontierPoint]:
        """The recommendation's frontier (``failures.frontier``): filled only when no flag set both
        survives the receiver outage and stays within the memory budget."""
        fr = (self.recommendation.get("failures") or {}).get("frontier") or []
        return [FrontierPoint.from_doc(p) for p in fr]

    @property
    def outage_seconds(self) -> dict[str, float]:
        """The outage scenarios' durations by label."""
        scs = (self.recommendation.get("failures") or {}).get("scenarios") or []
        return {s["label"]: float(s["duration_seconds"]) for s in scs if s.get("duration_seconds") is not None}

    @property
    def title(self) -> str:
        return f"Audit webhook capacity report: {self.name}"

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT, "tool": "audit-tune", "tool_version": self.tool_version, "name": self.name,
            "config": self.config.to_dict(), "window": self.window.to_dict(), "flag_sets": self.flag_sets,
            "effective_flags": self.effective_flags, "summary": self.summary.to_dict(), "history": self.history,
            "knee": self.knee, "peak_window": self.peak_window, "latency_sweep": self.latency_sweep,
            "sensitivity": self.sensitivity, "loadtest": self.loadtest.to_dict() if self.loadtest else None,
            "recommendation": self.recommendation,
        }
