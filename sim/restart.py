"""What one apiserver restart loses: :func:`restart_loss`, for callers that compare flag sets.

One apiserver at a steady load (or any workload the caller gives) runs until the load has filled
its pipeline, receives SIGTERM, is killed ``kill_after`` later if it has not exited, and comes
back; the shutdown sequence is the one of :mod:`sim.shutdown` (``genericapiserver.go``). The
answer counts the events the restart itself loses, by cause, next to the run's other losses.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.receiver import Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.shutdown import LOSS_CAUSES, ShutdownOptions
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

WARMUP = 120.0  # seconds of load before the SIGTERM: past max-wait windows, retries and backoff


@dataclass(frozen=True)
class RestartLoss:
    """Events lost by one restart, by cause (``sim.shutdown.LOSS_CAUSES``), and its context."""

    by_cause: dict[str, int]
    events_refused: int  # requests' events while no apiserver accepted (not audit loss: never audited)
    exit_seconds: float  # SIGTERM to the old process's exit (= kill_after when it was killed)
    killed: bool

    @property
    def total(self) -> int:
        """Audited events lost: accepted but never delivered, or never emitted."""
        return sum(self.by_cause.values())


def restart_loss(flags: AuditFlags, rate: float, *, kill_after: float = 30.0, receiver: Receiver | None = None,
                 scenario: Scenario | None = None, at: float | None = None, seed: int = 1,
                 engine: str = "fast") -> RestartLoss:
    """Simulate one restart of one apiserver and return what it loses.

    ``flags``: the audit flags to judge; ``rate``: audit events/s at the restart (e.g. the peak);
    ``kill_after``: the kubelet's grace period (``terminationGracePeriodSeconds``, 30 s in kubeadm's
    static pod). ``receiver``: the webhook's behaviour (default: 50 ms, no failures). ``scenario``
    replaces the built-in steady load (its flags are replaced by ``flags``, its shutdown options
    kept except the restart); ``at``: SIGTERM time (default: after ``WARMUP`` s of load)."""
    if scenario is None:
        t = WARMUP if at is None else at
        w = Workload(Arrivals("poisson", RateProfile.constant(rate)), t + kill_after + 60.0,
                     (RequestClass("event", level="Metadata", omit_stages=frozenset({"RequestReceived"})),))
        sc = Scenario(flags=flags, workload=w, receiver=receiver or Receiver(), seed=seed,
                      shutdown=ShutdownOptions(restart_at=(t,), kill_after=kill_after))
    else:
        t = at if at is not None else scenario.workload.duration / 2
        sc = replace(scenario, flags=flags, drain=True,
                     shutdown=replace(scenario.shutdown, restart_at=(t,), kill_after=kill_after))
    d = run(sc.validate(), engine=engine).to_dict(series=False)
    first = d["lifetimes"][0][0]
    by = {k: sum(inst[0]["lost"][k] for inst in d["lifetimes"]) for k in LOSS_CAUSES}
    return RestartLoss(by, d["events_refused"], first["exit"] - first["sigterm"], first["killed"])
