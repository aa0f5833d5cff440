"""The result of ``tune loadtest --verify``: :class:`VerifyReport` (observed vs predicted, the
decision and what the replay was built from), and its side-by-side table, registered as its
``table`` format (``json``/``yaml`` come from ``to_dict``; the record stores it as ``verify``).
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.basics.formats import register
from audit_tune.loadgen.quiet import Accounting


@dataclass(frozen=True)
class VerifyRow:
    """One metric side by side; ``ok`` None for information only."""

    metric: str
    observed: float | None
    predicted: float | None
    diff: float | None
    tolerance: float | None
    ok: bool | None

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "observed": self.observed, "predicted": self.predicted, "diff": self.diff,
                "tolerance": self.tolerance, "ok": self.ok}


@dataclass(frozen=True)
class ReplayInputs:
    """What the replay was built from, and where each part came from."""

    events: str
    requests_by_kind: dict[str, object]
    user: list[object]
    event_sizes_source: str
    event_sizes_bytes: dict[str, int]
    receiver_latency: str
    error_rate: float
    outages_run_relative: list[list[object]]
    flags: list[str]
    webhook_drops: str
    delivered: str
    engine: str

    def to_dict(self) -> dict[str, object]:
        return {"events": self.events, "requests_by_kind": self.requests_by_kind, "user": self.user,
                "event_sizes": {"source": self.event_sizes_source, "bytes": self.event_sizes_bytes},
                "receiver_latency": self.receiver_latency, "error_rate": self.error_rate,
                "outages_run_relative": self.outages_run_relative, "flags": self.flags,
                "webhook_drops": self.webhook_drops, "delivered": self.delivered, "engine": self.engine}


@dataclass(frozen=True)
class VerifyReport:
    """Observed vs predicted for one run, the failures (any makes the CLI exit 3) and the inputs.
    ``predicted`` and ``observed`` map metric names to values; ``accounting`` is
    :func:`loadgen.quiet.accounting` over the whole run, when it was measured."""

    failures: list[str]
    rows: list[VerifyRow]
    tolerance_counts: str
    tolerance_latency: str
    accounting: Accounting | None
    inputs: ReplayInputs
    predicted: dict[str, float | None]
    observed: dict[str, float | None]
    notes: list[str]
    bucket_tokens_at_start: float | None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 3 if self.failures else 0

    def row(self, metric: str) -> VerifyRow:
        return next(r for r in self.rows if r.metric == metric)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "exit_code": self.exit_code, "failures": self.failures,
            "rows": [r.to_dict() for r in self.rows],
            "tolerance": {"counts": self.tolerance_counts, "latency": self.tolerance_latency},
            "accounting": self.accounting, "inputs": self.inputs.to_dict(), "predicted": self.predicted,
            "observed": self.observed, "notes": self.notes, "bucket_tokens_at_start": self.bucket_tokens_at_start,
        }


def fmt_value(x: object) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.3f}"
    return f"{x:.0f}" if isinstance(x, (int, float)) else str(x)


@register(VerifyReport, "table")
def render_verify(report: VerifyReport) -> str:
    """The side-by-side table (plain text)."""
    out = [f"{'metric':<28}{'observed':>12}{'predicted':>12}{'diff':>10}{'tolerance':>11}  ok"]
    for r in report.rows:
        ok = "-" if r.ok is None else ("yes" if r.ok else "NO")
        tol = "" if r.tolerance is None else fmt_value(float(r.tolerance))
        out.append(f"{r.metric:<28}{fmt_value(r.observed):>12}{fmt_value(r.predicted):>12}"
                   f"{fmt_value(r.diff):>10}{tol:>11}  {ok}")
    a = report.accounting
    if a:
        out.append(f"accounting (whole run, quiet): events_total {a['events_total']:.0f} = delivered "
                   f"{a['delivered']:.0f} + dropped {sum(a['drops_by_plugin'].values()):.0f} "
                   f"(residual {a['residual']:+.0f}, lost {a['lost']:.0f})")
    i = report.inputs
    out.append(f"events from: {i.events}")
    out.append(f"receiver: {i.receiver_latency}; error rate {i.error_rate:g}; outages {i.outages_run_relative}")
    for n in report.notes:
        out.append(f"note: {n}")
    out.append("verdict: " + ("ok" if report.ok else "FAIL: " + "; ".join(report.failures)))
    return "\n".join(out) + "\n"
