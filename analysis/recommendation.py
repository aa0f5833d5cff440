"""The result of ``tune recommend``: :class:`RecommendationReport`, built once by
:func:`analysis.recommend.build_report` and rendered by the formatters registered for it
(:mod:`analysis.render.recommend`); :meth:`RecommendationReport.to_dict` is the ``-f json`` document.
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.analysis.calibrate import InstanceModel, Validation
from audit_tune.analysis.check import Evaluated
from audit_tune.analysis.evaluation import Evaluation, Explanation, SearchTrace
from audit_tune.analysis.flagsets import RuleOfThumb
from audit_tune.analysis.logbackend import LogAssessment
from audit_tune.analysis.objective import Objective
from audit_tune.analysis.outage import FailureAssessment
from audit_tune.analysis.restart_at_peak import RestartAtPeak

KIND = "AuditTuneRecommendation"


@dataclass(frozen=True)
class Calibrated:
    """One apiserver's calibrated model and its validation against the observed counters. The
    properties are the figures of ``to_dict`` (same rounding), for renderers."""

    model: InstanceModel
    validation: Validation

    @property
    def instance(self) -> str:
        return self.model.name

    @property
    def mean_event_rate(self) -> float:
        return round(self.model.mean_rate, 3)

    @property
    def peak_burst_event_rate(self) -> float:
        return round(self.model.peak_burst_rate, 3)

    @property
    def webhook_failure_rate(self) -> float:
        return round(self.model.failure_rate, 6)

    @property
    def webhook_latency(self) -> str:
        return str(self.model.to_dict()["webhook_latency"])

    def to_dict(self) -> dict[str, object]:
        return dict(self.model.to_dict(), validation=self.validation.to_dict())


@dataclass(frozen=True)
class Skipped:
    """An instance left out of the recommendation, and why."""

    instance: str
    why: str

    def to_dict(self) -> dict[str, object]:
        return {"instance": self.instance, "why": self.why}


@dataclass(frozen=True)
class Recommended:
    """The chosen flag set: its flags, those that differ from the current ones, and why."""

    flags: list[str]
    flags_changed_from_current: list[str]
    explanation: Explanation
    ok: bool
    violations: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"flags": self.flags, "flags_changed_from_current": self.flags_changed_from_current,
                "explanation": self.explanation.to_dict(), "ok": self.ok, "violations": self.violations}


@dataclass(frozen=True)
class RecommendConfig:
    """The inputs echoed in every output: seed, engine, source, objective, current flags."""

    seed: int
    engine: str
    source: dict[str, object]
    objective: Objective
    horizon_seconds: float
    current_flags: list[str]
    current_flags_source: str

    def to_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "engine": self.engine, "source": self.source, "objective": self.objective.to_dict(),
                "horizon_seconds": self.horizon_seconds, "current_flags": self.current_flags,
                "current_flags_source": self.current_flags_source,
                "memory_factor": self.objective.memory_factor.to_dict()}


@dataclass(frozen=True)
class RecommendationReport:
    """Everything ``tune recommend`` found: calibration, the recommendation (or why none), the flag
    sets compared (current, recommended, rule of thumb), the search trace and the warnings; every
    flag set under the receiver failure scenarios (``failures``), the log backend when its path is
    set (``log_backend``) and the ``--evaluate`` flags' checks (``evaluated``)."""

    tool_version: str
    config: RecommendConfig
    confidence: str
    calibration: list[Calibrated]
    skipped_instances: list[Skipped]
    recommended: Recommended | None
    no_recommendation_why: list[str]
    rule_of_thumb: RuleOfThumb
    comparison: list[Evaluation]
    current_ok: bool
    current_violations: list[str]
    search: SearchTrace
    warnings: list[str]
    failures: FailureAssessment
    log_backend: LogAssessment | None = None
    evaluated: Evaluated | None = None
    restart_at_peak: RestartAtPeak | None = None  # one apiserver restart at the peak, current and recommended

    @property
    def peak_burst_event_rate(self) -> float:
        """The busiest instance's peak burst rate (events/s), 0 without instances."""
        return max((c.peak_burst_event_rate or 0.0 for c in self.calibration), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": KIND,
            "tool": "audit-tune",
            "tool_version": self.tool_version,
            "config": self.config.to_dict(),
            "confidence": self.confidence,
            "calibration": [c.to_dict() for c in self.calibration],
            "skipped_instances": [s.to_dict() for s in self.skipped_instances],
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "no_recommendation_why": self.no_recommendation_why,
            "rule_of_thumb": self.rule_of_thumb.to_dict(),
            "comparison": [e.to_dict() for e in self.comparison],
            "current_ok": self.current_ok,
            "current_violations": self.current_violations,
            "search": self.search.to_dict(),
            "failures": self.failures.to_dict(),
            "log_backend": self.log_backend.to_dict() if self.log_backend else None,
            "evaluated": self.evaluated.to_dict() if self.evaluated else None,
            "restart_at_peak": self.restart_at_peak.to_dict() if self.restart_at_peak else None,
            "warnings": self.warnings,
        }
