"""The fidelity catalogue: scenarios that each show one regime of the audit pipeline, a few seconds
of real time with the flags scaled down, run by the simulator and by the Go oracle side by side
(:mod:`audit_tune.analysis.fidelity.compare`).

Add a case by appending a :class:`FidelityCase` to the list in :func:`cases`: a name, the regime in
one line, and the scenario (``_sc`` builds the usual single-class webhook or log one).
A case the simulator is known to get wrong goes into :data:`KNOWN_GAPS` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.sim.config import parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

ONE_EVENT = RequestClass("one", level="Metadata", omit_stages=frozenset({"RequestReceived"}),
                         sizes=(1000, 1000, 1000, 1000))
FAST_BACKOFF = "--audit-webhook-initial-backoff=100ms"


@dataclass(frozen=True)
class FidelityCase:
    name: str
    regime: str
    scenario: Scenario
    # |sim - oracle| allowed for max in-flight batches: 1, unless the real code itself spreads wider
    # on identical input (measured, and said where the case is defined)
    inflight_tol: int = 1

    @property
    def max_batch(self) -> int:
        b = "webhook" if "webhook" in self.scenario.enabled else "log"
        return self.scenario.flags.backend(b).batch.max_batch_size


def _sc(flags: list[str], *, rate: float | None = None, duration: float = 3.0, profile: RateProfile | None = None,
        process: str = "poisson", instances: int = 1, latency: float = 0.02, outages: tuple[Outage, ...] = (),
        backends: tuple[str, ...] = ("webhook",), log_writer: LogWriter | None = None) -> Scenario:
    """One request class of one 1000-byte Metadata event, a fixed receiver latency, fast webhook backoff;
    seed 7 for every case."""
    prof = profile if profile is not None else RateProfile.constant(rate or 0.0)
    w = Workload(Arrivals(process, prof), duration, (ONE_EVENT,), instances=instances)
    return Scenario(flags=parse_flags([FAST_BACKOFF, *flags]), workload=w,
                    receiver=Receiver(latency=Latency("fixed", latency), outages=outages),
                    log_writer=log_writer or LogWriter(), backends=backends, seed=7).validate()


def _watches_after_stop() -> Scenario:
    """200 requests/s for 3 s, 30 % watches of 1.5 s (ResponseStarted at 10 ms, ResponseComplete at
    1.5 s): the audit backend stops at 3 s (no grace period), so the watches still open then end on a
    closed buffer."""
    one = RequestClass("get", weight=0.7, level="Metadata", omit_stages=frozenset({"RequestReceived"}),
                       sizes=(1000, 1000, 1000, 1000))
    watch = RequestClass("watch", weight=0.3, level="Metadata", long_running=True, duration=1.5, first_byte=0.01,
                         omit_stages=frozenset({"RequestReceived"}), sizes=(1000, 1000, 1000, 1000))
    w = Workload(Arrivals("poisson", RateProfile.constant(200.0)), 3.0, (one, watch))
    wb = "--audit-webhook-batch-"
    return Scenario(flags=parse_flags([FAST_BACKOFF, f"{wb}max-size=10", f"{wb}max-wait=100ms",
                                       f"{wb}throttle-qps=50", f"{wb}throttle-burst=5"]),
                    workload=w, receiver=Receiver(latency=Latency("fixed", 0.02)), seed=7).validate()


def cases() -> list[FidelityCase]:
    """The fidelity scenarios: each a few seconds of real time, flags scaled down per regime."""
    wb = "--audit-webhook-batch-"
    return [
        FidelityCase("under_capacity", "200 ev/s, size-triggered batches of 50, throttle 10/s never binds",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=200, duration=4)),
        FidelityCase("overload_throttle", "1500 ev/s vs drain 5 x 50 = 250 ev/s: throttle-bound, buffer 500 overflows",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=100ms", f"{wb}buffer-size=500",
                          f"{wb}throttle-qps=5", f"{wb}throttle-burst=2"], rate=1500, duration=3)),
        FidelityCase("burst_absorbed", "100 ev/s with a 0.5 s burst of 1500 ev/s; buffer 2000 absorbs it",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=100ms", f"{wb}buffer-size=2000",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"],
                         profile=RateProfile((0.0, 1.0, 1.5), (100.0, 1500.0, 100.0)), duration=4)),
        FidelityCase("burst_overflows", "the same burst into a buffer of 300: drops during the burst only",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=100ms", f"{wb}buffer-size=300",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"],
                         profile=RateProfile((0.0, 1.0, 1.5), (100.0, 1500.0, 100.0)), duration=4)),
        FidelityCase("max_size_1", "max-size 1 (no timer): one event per batch, throttle 50/s, 80 ev/s, buffer 40",
                     _sc([f"{wb}max-size=1", f"{wb}buffer-size=40", f"{wb}throttle-qps=50", f"{wb}throttle-burst=5"],
                         rate=80, duration=3)),
        FidelityCase("throttle_disabled", "2000 ev/s, no throttle: size-triggered batches of 100 every 50 ms",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=50ms", f"{wb}throttle-enable=false"],
                         rate=2000, duration=3, latency=0.05)),
        FidelityCase("log_sync_slow", "log backend in batch mode (sync delegate): 20 events per 50 ms write "
                     "= 400 ev/s vs 700 ev/s arriving, buffer 300",
                     _sc(["--audit-log-mode=batch", "--audit-log-batch-max-size=20", "--audit-log-batch-max-wait=50ms",
                          "--audit-log-batch-buffer-size=300"], rate=700, duration=3, backends=("log",),
                         log_writer=LogWriter(per_event=Latency("fixed", 0.0025)))),
        FidelityCase("log_throttled_max1", "log backend in batch mode with its default max-size 1, throttle 100/s burst 1, "
                     "1 ms writes; 150 ev/s into a buffer of 50: throttle-bound sync collector",
                     _sc(["--audit-log-mode=batch", "--audit-log-batch-throttle-enable=true",
                          "--audit-log-batch-throttle-qps=100", "--audit-log-batch-throttle-burst=1",
                          "--audit-log-batch-buffer-size=50"], rate=150, duration=3, backends=("log",),
                         log_writer=LogWriter(per_event=Latency("fixed", 0.001)))),
        FidelityCase("webhook_slow", "400 ms receiver, batches every 100 ms: ~4 in flight, no drops",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=500, duration=3, latency=0.4)),
        FidelityCase("webhook_fail_recover", "receiver answers 503 from 1.0 to 1.4 s; 1000 ev/s in batches of 10 every "
                     "10 ms; retries (backoff 100 ms) deliver all, the first ~10 batches at their 4th attempt",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=3, outages=(Outage(1.0, 1.4, "status", 503),))),
        FidelityCase("webhook_restart_refuse", "the same, but the receiver restarts: connections refused 1.0-1.4 s",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=3, outages=(Outage(1.0, 1.4, "refuse"),)),
                     # the real client's connection teardown at the restart decides, to the
                     # millisecond, which attempts die or are retried after a delivered 2xx: six
                     # undisturbed oracle runs of this same trace gave max in-flight 47, 47, 48, 48,
                     # 48, 49 (webhook_fail_recover, 503s instead: 46 every time), so 2, not 1
                     inflight_tol=2),
        FidelityCase("webhook_retry_after", "receiver answers 503 with Retry-After: 1 from 1.0 to 2.5 s; the REST "
                     "client retries inside the attempt after 1 s, so nothing reaches the webhook backoff (100 ms, "
                     "which alone would drop the first batches) and every batch is delivered by 3.1 s",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=4, outages=(Outage(1.0, 2.5, "status", 503, retry_after=1),))),
        FidelityCase("webhook_down", "receiver answers 503 throughout: every batch dropped after 5 attempts",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=200, duration=3,
                         outages=(Outage(0.0, 60.0, "status", 503),))),
        FidelityCase("max_wait_short", "max-wait 20 ms < 50 ms between arrivals: every event alone, waits U(0, 20 ms)",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=20ms", f"{wb}throttle-qps=100", f"{wb}throttle-burst=5"],
                         rate=20, duration=4, process="deterministic")),
        FidelityCase("three_instances", "3 apiservers, 900 ev/s in all; each drains 4 x 50 = 200 ev/s < 300, buffer 100: drops",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=100ms", f"{wb}buffer-size=100",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"], rate=900, duration=3, instances=3)),
        FidelityCase("events_after_stop", "watches outlive the audit stop: their ResponseComplete events reach a "
                     "closed buffer and count as errors{plugin=\"buffered\"} (~90 of ~1,000)",
                     # four oracle runs of this trace: errors.buffered 90, 90, 90, 90 (simulator 90),
                     # batches 69 every time (69), p50 38.8-40.1 ms (37.6), p99 85.0-88.8 ms (84.4),
                     # max in flight 2 every time (1: the first POST's TLS handshake); the fixed
                     # tolerances hold, none widened
                     _watches_after_stop()),
    ]


# Known simulator gaps, case name -> why: the scenario still runs and is compared; a row outside
# tolerance is shown as "NO (known gap)" and does not fail the command (the test marks it xfail,
# not strict). Empty: every case is expected within tolerance.
KNOWN_GAPS: dict[str, str] = {}
