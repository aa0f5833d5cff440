"""Per-check answers for one flag set (``tune recommend --evaluate``): the objective's checks, each
ok or not with its figure, judged on the same simulations as the report's other flag sets. The
flag set is not assumed to be in force, so the snapshot's observed drops are not held against it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from audit_tune.sim.units import format_duration, format_size

# (check, the prefix of the violation text analysis/recommend.py writes for it)
CHECKS = (
    ("headroom", ("buffered drops at the observed peak",)),
    ("observed load", ("drops at the observed load",)),
    ("drop probability", ("P(any drop",)),
    ("memory budget", ("memory ",)),
    ("delivery latency", ("p99 delivery latency",)),
    ("batch bytes", ("batch body",)),
    ("receiver qps", ("throttle",)),
    ("webhook mode", ("--audit-webhook-mode",)),
)


class CheckDoc(TypedDict):
    check: str
    ok: bool
    detail: str


class EvaluatedDoc(TypedDict):
    flags: list[str]
    ok: bool
    checks: list[CheckDoc]


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool
    detail: str

    def to_dict(self) -> CheckDoc:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Evaluated:
    """``--evaluate``: the given flags and each check's answer; ``ok`` when every check passes."""

    flags: list[str]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> EvaluatedDoc:
        return {"flags": self.flags, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def checks(ev: dict[str, Any], failures: dict[str, Any], name: str = "evaluated") -> list[Check]:
    """``ev``: the flag set's ``comparison`` entry; ``failures``: the report's ``failures``."""
    out: list[Check] = []
    viol = list(ev["violations"])
    figure = {
        "headroom": f"{sum(ev['drops_per_run_headroom'].values()) if ev['drops_per_run_headroom'] else 0:,.0f} drops per run",
        "observed load": f"{sum(ev['drops_per_run_x1'].values()) if ev['drops_per_run_x1'] else 0:,.0f} drops per run",
        "drop probability": f"P(any drop) = {ev['p_any_drop_horizon']:.3g}",
        "memory budget": f"{format_size(ev['memory_bound_bytes'])}",
        "delivery latency": ("p99 -" if ev["delivery_latency_p99_seconds"] is None
                             else f"p99 {ev['delivery_latency_p99_seconds']:.2f}s"),
    }
    for check, prefixes in CHECKS:
        bad = [v for v in viol if v.startswith(prefixes)]
        if check == "webhook mode" and not bad:
            continue
        out.append(Check(check, not bad, "; ".join(bad) if bad else figure.get(check, "within the limit")))
    for o in failures.get("outcomes", []):
        if o["flag_set"] != name:
            continue
        tol = o["outage_tolerance_seconds"]
        t = "" if tol is None else (f", outage tolerance {'>= ' if o['outage_tolerance_at_least'] else ''}"
                                    f"{format_duration(tol)}")
        out.append(Check(o["scenario"], o["ok"],
                         f"lost {o['lost_webhook'] + o['lost_buffered']:,} (webhook {o['lost_webhook']:,}, buffered "
                         f"{o['lost_buffered']:,}), peak memory {format_size(o['peak_memory_bytes'])} of events "
                         f"({format_size(o['peak_apiserver_memory_bytes'])} apiserver), backlog delivered "
                         f"{o['recovery_seconds']:.0f}s after the receiver returns{t}"))
    return out
