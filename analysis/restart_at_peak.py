"""What one apiserver restart at the peak loses, for the flag sets a recommendation shows.

Operators restart kube-apiserver at every upgrade and certificate rotation. The kubelet sends
SIGTERM, waits ``terminationGracePeriodSeconds`` (30 s in kubeadm's static pod) and then kills the
process; what is still in the audit buffer, in a POST or in a retry chain at that moment is lost
(:func:`audit_tune.sim.restart.restart_loss`, which runs the shutdown sequence of
``k8s.io/apiserver`` ``pkg/server/genericapiserver.go``). Each flag set is judged on the busiest
apiserver at its peak short-window rate x headroom, with that apiserver's calibrated receiver.
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.restart import RestartLoss, restart_loss

KILL_AFTER = 30.0  # kubeadm's static pod: terminationGracePeriodSeconds


@dataclass(frozen=True)
class RestartRow:
    """One flag set's loss in one restart."""

    name: str
    loss: RestartLoss

    def to_dict(self) -> dict[str, object]:
        return {"flag_set": self.name, "events_lost": self.loss.total, "lost_by_cause": dict(self.loss.by_cause),
                "exit_seconds": round(self.loss.exit_seconds, 3), "killed": self.loss.killed}


@dataclass(frozen=True)
class RestartAtPeak:
    """One restart of the busiest apiserver at ``rate`` events/s, per flag set."""

    instance: str
    rate: float
    kill_after: float
    rows: tuple[RestartRow, ...]

    def to_dict(self) -> dict[str, object]:
        return {"instance": self.instance, "events_per_second": round(self.rate, 3), "kill_after_seconds": self.kill_after,
                "flag_sets": [r.to_dict() for r in self.rows]}

    def lines(self) -> list[str]:
        """One sentence per flag set, for the text outputs."""
        out = []
        for r in self.rows:
            causes = ", ".join(f"{k} {v:,}" for k, v in r.loss.by_cause.items() if v)
            how = f"killed {self.kill_after:g} s after SIGTERM" if r.loss.killed else \
                f"exited {r.loss.exit_seconds:.1f} s after SIGTERM"
            out.append(f"one restart of {self.instance} at {self.rate:,.0f} events/s, {r.name} flags: "
                       f"{r.loss.total:,} events lost" + (f" ({causes})" if causes else "") + f"; {how}")
        return out


def restart_at_peak(models: list[InstanceModel], flag_sets: list[tuple[str, AuditFlags]], headroom: float,
                    seed: int = 1, engine: str = "fast", kill_after: float = KILL_AFTER) -> RestartAtPeak | None:
    """Simulate one restart at the busiest apiserver's peak x headroom for each named flag set."""
    if not models or not flag_sets:
        return None
    m = max(models, key=lambda x: x.peak_burst_rate)
    rate = m.peak_burst_rate * headroom
    if rate <= 0:
        return None
    rows = tuple(RestartRow(name, restart_loss(flags, rate, kill_after=kill_after, receiver=m.receiver(), seed=seed,
                                               engine=engine)) for name, flags in flag_sets)
    return RestartAtPeak(m.name, rate, kill_after, rows)
