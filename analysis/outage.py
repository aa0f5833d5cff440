"""Receiver failures in the objective: outages and slowdowns, per flag set (``docs/recommend.md``).

A scenario is one receiver failure starting at an instance's busiest step (the stretch of rates
from there, the history repeated when it is shorter than the outage):

* an **outage** of ``kind`` ``refuse`` (connection refused), ``hang`` (no answer: every attempt
  times out at 30 s), ``503`` or ``429`` (answered), lasting ``duration``; the workload runs until
  the receiver returns, then the run drains: the batches still held by goroutines retrying
  (``plugin/pkg/audit/webhook/webhook.go`` with ``pkg/util/webhook`` backoff) are delivered or
  dropped after their 5th attempt;
* a **slowdown**: the receiver's latency multiplied by ``factor`` over the busiest ``--peak-window``.

Per flag set and scenario: events lost (webhook drops = batches that failed all attempts;
buffered drops = a full buffer), peak memory (buffer + batch being collected + every batch held by
a goroutine, event bytes), the time from the receiver's return until the backlog is delivered,
and the **outage tolerance**: the longest outage of that kind that loses nothing and keeps peak
memory within ``--memory-budget``, found by bisection on the busiest instance.

No buffering flag changes how long one batch survives an outage: its goroutine gives up after 5
attempts, about ``8.125 x --audit-webhook-initial-backoff`` of backoff plus the attempts themselves
(``4 x 30 s`` when they hang). So a flag set that does not survive gets variants with a longer
initial backoff, which hold every batch of the outage in memory instead: the trade-off between
loss and memory the frontier shows.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from audit_tune.analysis import retries
from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.analysis.memfactor import MemoryBudget, MemoryFactor
from audit_tune.analysis.outage_runs import FailureScenario, Pool, RunResult, RunTask
from audit_tune.analysis.taskpool import Workers
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonMapping, JsonObject, as_float, as_int, as_list, as_str
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, ATTEMPTS, BACKOFF_FACTOR
from audit_tune.sim.units import format_duration, parse_duration

KINDS = ("refuse", "hang", "503", "429")
DEFAULT_OUTAGE = 120.0
BACKOFFS = (10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)  # initial backoffs the variants try
SHOWN = ("audit-webhook-batch-buffer-size", "audit-webhook-batch-max-size", "audit-webhook-batch-max-wait",
         "audit-webhook-batch-throttle-qps", "audit-webhook-batch-throttle-burst", "audit-webhook-initial-backoff")
CHAIN = sum(BACKOFF_FACTOR ** k for k in range(ATTEMPTS - 1))  # 8.125 initial backoffs between 5 attempts


def parse_retry_after(text: str, ev: retries.RetryEvidence) -> tuple[int | None, str]:
    """``--webhook-retry-after``: ``none``, whole seconds (``5s``), or empty for what the data shows."""
    if not text:
        return retries.default_retry_after(ev)
    if text == "none":
        return None, "no Retry-After: --webhook-retry-after none"
    try:
        n = parse_duration(text, "--webhook-retry-after")
    except InputError:
        n = math.nan
    if not (1 <= n <= ATTEMPT_TIMEOUT and float(n).is_integer()):
        raise InputError(f"--webhook-retry-after {text}: whole seconds from 1s to {ATTEMPT_TIMEOUT:g}s, or none")
    return int(n), f"Retry-After {int(n)}s: --webhook-retry-after"


def parse_scenarios(outages: list[str] | tuple[str, ...], slowdown: float, snap: JsonMapping,
                    retry_after: str = "") -> list[FailureScenario]:
    """``--tolerate-outage DURATION[:KIND]`` (repeatable), ``--tolerate-slowdown FACTOR`` and
    ``--webhook-retry-after`` (on the 429/503 outages)."""
    ev = retries.evidence(snap)
    kind, why = retries.default_kind(ev)
    ra, ra_why = parse_retry_after(retry_after, ev)
    out: list[FailureScenario] = []
    off = list(outages or ()) == ["none"]
    for text in () if off else outages or ():
        span, sep, k = str(text).partition(":")
        try:
            d = parse_duration(span, "--tolerate-outage")
        except InputError:
            raise InputError(f"--tolerate-outage {text}: expected DURATION[:refuse|hang|503|429], e.g. 2m:refuse") from None
        if not d > 0 or not math.isfinite(d):
            raise InputError(f"--tolerate-outage {text}: the duration must be > 0, e.g. 2m")
        if sep and k not in KINDS:
            raise InputError(f"--tolerate-outage {text}: kind must be one of {', '.join(KINDS)}")
        out.append(FailureScenario(k if sep else kind, d, origin="--tolerate-outage" if sep else f"--tolerate-outage, kind {kind}: {why}"))
    if not outages and not off:
        out.append(FailureScenario(kind, DEFAULT_OUTAGE, origin=f"default: one {format_duration(DEFAULT_OUTAGE)} {kind} outage; {why}"))
    out = [replace(sc, retry_after=ra, origin=f"{sc.origin}; {ra_why}") if sc.kind in ("429", "503") else sc
           for sc in out]
    if not (slowdown >= 1 and math.isfinite(slowdown)):
        raise InputError(f"--tolerate-slowdown {slowdown}: must be a number >= 1 (1 = off, 3 = three times slower)")
    if slowdown > 1:
        out.append(FailureScenario("slowdown", factor=slowdown, origin="--tolerate-slowdown"))
    return out


def chain_seconds(flags: AuditFlags, sc: FailureScenario) -> float:
    """How long one batch's goroutine keeps a batch through the outage ``sc``: the backoff between
    its 5 attempts (jitter at its least) plus the attempts themselves when they last."""
    attempt = sc.attempt_seconds
    return CHAIN * flags.webhook_initial_backoff + (ATTEMPTS - 1) * attempt


def shown_flags(flags: AuditFlags) -> list[str]:
    return flags.to_flags(include=SHOWN)


@dataclass
class Outcome:
    """One flag set under one scenario (all instances; memory is the worst apiserver's)."""

    name: str
    flags: AuditFlags
    scenario: FailureScenario
    lost_webhook: int
    lost_buffered: int
    peak_memory: int
    recovery_seconds: float
    tolerance_seconds: float | None = None  # outages only
    tolerance_capped: bool = False  # survived the longest outage tried
    tolerance_limit: str = ""  # what ends it: drops or memory
    longer_loss: int | None = None  # events lost by an outage twice as long
    budget: int = 0
    memory: MemoryFactor = field(default_factory=MemoryFactor)

    @property
    def apiserver_memory(self) -> int:
        """Peak held event bytes x the Go heap overhead factor: what the budget is compared with."""
        return self.memory.apiserver_bytes(self.peak_memory)

    @property
    def lost(self) -> int:
        return self.lost_webhook + self.lost_buffered

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.apiserver_memory <= self.budget

    def violations(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"a {self.scenario.label} loses {self.lost:,} events (webhook {self.lost_webhook:,}, "
                       f"buffered {self.lost_buffered:,})")
        if self.apiserver_memory > self.budget:
            out.append(f"a {self.scenario.label} holds {self.memory.explain(self.peak_memory)} > --memory-budget")
        return out

    def to_dict(self) -> JsonObject:
        return {"flag_set": self.name, "flags": [*shown_flags(self.flags)], "scenario": self.scenario.label,
                "lost_webhook": self.lost_webhook, "lost_buffered": self.lost_buffered,
                "peak_memory_bytes": self.peak_memory, "peak_apiserver_memory_bytes": self.apiserver_memory,
                "recovery_seconds": round(self.recovery_seconds, 1),
                "outage_tolerance_seconds": None if self.tolerance_seconds is None else round(self.tolerance_seconds, 1),
                "outage_tolerance_at_least": self.tolerance_capped, "outage_tolerance_limit": self.tolerance_limit,
                "lost_if_twice_as_long": self.longer_loss, "ok": self.ok}


@dataclass(frozen=True)
class FrontierPoint:
    """One candidate (or its longer-backoff variant) under one outage when nothing survives."""

    flag_set: str
    flags: list[str]
    scenario: str
    outage_tolerance_seconds: float | None
    at_least: bool
    peak_memory_bytes: int
    peak_apiserver_memory_bytes: int
    lost: int
    lost_if_twice_as_long: int | None

    @classmethod
    def of(cls, o: Outcome) -> FrontierPoint:
        return cls(o.name, shown_flags(o.flags), o.scenario.label, o.tolerance_seconds, o.tolerance_capped,
                   o.peak_memory, o.apiserver_memory, o.lost, o.longer_loss)

    @classmethod
    def from_doc(cls, d: JsonMapping) -> FrontierPoint:
        """A point of ``failures.frontier`` in the report's JSON."""
        tol, twice = d.get("outage_tolerance_seconds"), d.get("lost_if_twice_as_long")
        return cls(as_str(d.get("flag_set"), "frontier.flag_set"),
                   [as_str(f, "frontier.flags") for f in as_list(d.get("flags"), "frontier.flags")],
                   as_str(d.get("scenario"), "frontier.scenario"),
                   None if tol is None else as_float(tol, "frontier.outage_tolerance_seconds"),
                   bool(d.get("at_least")), as_int(d.get("peak_memory_bytes"), "frontier.peak_memory_bytes"),
                   as_int(d.get("peak_apiserver_memory_bytes"), "frontier.peak_apiserver_memory_bytes"),
                   as_int(d.get("lost"), "frontier.lost"),
                   None if twice is None else as_int(twice, "frontier.lost_if_twice_as_long"))

    def to_dict(self) -> JsonObject:
        return {"flag_set": self.flag_set, "flags": [*self.flags], "scenario": self.scenario,
                "outage_tolerance_seconds": self.outage_tolerance_seconds, "at_least": self.at_least,
                "peak_memory_bytes": self.peak_memory_bytes,
                "peak_apiserver_memory_bytes": self.peak_apiserver_memory_bytes, "lost": self.lost,
                "lost_if_twice_as_long": self.lost_if_twice_as_long}


@dataclass
class FailureAssessment:
    scenarios: list[FailureScenario]
    outcomes: list[Outcome]
    survivor: str | None  # the flag set to recommend: healthy-feasible and surviving every scenario
    survivor_flags: AuditFlags | None
    sentence: str  # when nothing survives: says so
    frontier: list[FrontierPoint] = field(default_factory=list)
    runs: int = 0

    def promote(self) -> None:
        """The survivor becomes the report's "recommended"; the search's first choice is kept by name."""
        if self.survivor in (None, "recommended"):
            return
        for o in self.outcomes:
            if o.name == "recommended":
                o.name = "search's choice"
        for o in self.outcomes:
            if o.name == self.survivor:
                o.name = "recommended"
        self.survivor = "recommended"

    def violations_for(self, name: str) -> list[str]:
        return [v for o in self.outcomes if o.name == name for v in o.violations()]

    def to_dict(self) -> JsonObject:
        return {"scenarios": [s.to_dict() for s in self.scenarios], "outcomes": [o.to_dict() for o in self.outcomes],
                "survivor": self.survivor,
                "survivor_flags": [*shown_flags(self.survivor_flags)] if self.survivor_flags else None,
                "no_survivor": self.sentence, "frontier": [p.to_dict() for p in self.frontier],
                "simulation_runs": self.runs}


class FailureJudge:
    """Evaluates flag sets under the failure scenarios (one seed, the fast engine by default)."""

    def __init__(self, models: list[InstanceModel], scenarios: list[FailureScenario], budget: MemoryBudget,
                 window: float, seed: int = 1, jobs: Workers | int = 2, engine: str = "fast",
                 log: Callable[[str], None] | None = None) -> None:
        self.models, self.scenarios, self.budget, self.window, self.seed = models, scenarios, budget, window, seed
        self.busiest = max(models, key=lambda m: m.peak_burst_rate)
        self.pool = Pool(jobs, engine)
        self.log = log or (lambda s: None)

    def _one(self, named: list[tuple[str, AuditFlags]], sc: FailureScenario, durations: list[float],
             models: list[InstanceModel]) -> list[list[RunResult]]:
        tasks = [RunTask(m, f, self.seed, sc, d, self.window) for (_, f), d in zip(named, durations) for m in models]
        res = self.pool.map(tasks)
        k = len(models)
        return [res[i * k:(i + 1) * k] for i in range(len(named))]

    def judge(self, named: list[tuple[str, AuditFlags]]) -> list[Outcome]:
        out: list[Outcome] = []
        for sc in self.scenarios:
            rows = self._one(named, sc, [sc.duration] * len(named), self.models)
            out.extend(Outcome(n, f, sc, sum(r.webhook for r in rr), sum(r.buffered for r in rr),
                               max(r.peak_memory for r in rr), max(r.recovery for r in rr), budget=self.budget.limit,
                               memory=self.budget.factor)
                       for (n, f), rr in zip(named, rows))
        return out

    def tolerances(self, outcomes: list[Outcome]) -> None:
        """Fill in the outage tolerance (and the loss of a twice-as-long outage) of these outcomes."""
        for sc in self.scenarios:
            outs = [o for o in outcomes if o.scenario == sc and o.tolerance_seconds is None]
            if sc.is_outage and outs:
                self._tolerance(outs, sc)

    def _survives(self, r: RunResult) -> bool:
        return r.lost == 0 and self.budget.fits(r.peak_memory)

    def _tolerance(self, outs: list[Outcome], sc: FailureScenario) -> None:
        """Bisection on the busiest instance, in lockstep over the flag sets (one pool map per round)."""
        named = [(o.name, o.flags) for o in outs]
        cap = [max(2 * sc.duration, 1.25 * chain_seconds(o.flags, sc) + ATTEMPT_TIMEOUT) for o in outs]
        first = self._one(named, sc, [sc.duration] * len(outs), [self.busiest])
        lo = [sc.duration if self._survives(r[0]) else 0.0 for r in first]
        hi = [c if lo_ else sc.duration for c, lo_ in zip(cap, lo)]
        limit = ["" for _ in outs]
        twice = self._one(named, sc, [2 * sc.duration] * len(outs), self.models)
        for o, rr in zip(outs, twice):
            o.longer_loss = sum(r.lost for r in rr)
        # is the cap itself survived?
        top = self._one(named, sc, hi, [self.busiest])
        capped = [bool(lo[i]) and self._survives(top[i][0]) for i in range(len(outs))]
        for i, r in enumerate(top):
            if not capped[i]:
                limit[i] = "drops" if r[0].lost else "memory"
        for _ in range(8):
            live = [i for i in range(len(outs)) if not capped[i] and hi[i] - lo[i] > max(5.0, 0.1 * lo[i])]
            if not live:
                break
            mids = [round((lo[i] + hi[i]) / 2, 1) for i in live]
            res = self._one([named[i] for i in live], sc, mids, [self.busiest])
            for i, mid, r in zip(live, mids, res):
                if self._survives(r[0]):
                    lo[i] = mid
                else:
                    hi[i] = mid
                    limit[i] = "drops" if r[0].lost else "memory"
        for i, o in enumerate(outs):
            o.tolerance_seconds = hi[i] if capped[i] else lo[i]
            o.tolerance_capped = capped[i]
            o.tolerance_limit = "" if capped[i] else limit[i]

    def close(self) -> None:
        self.pool.close()


def backoff_variants(flags: AuditFlags, scenarios: list[FailureScenario]) -> list[AuditFlags]:
    """The same flags with an initial backoff long enough for every outage's batches to outlast it."""
    need = max((s.duration - (ATTEMPTS - 1) * s.attempt_seconds) / CHAIN
               for s in scenarios if s.is_outage) if any(s.is_outage for s in scenarios) else 0.0
    out = []
    for b in BACKOFFS:
        if b > flags.webhook_initial_backoff and b >= need:
            out.append(replace(flags, webhook_initial_backoff=b))
            break
    return out


def assess(judge: FailureJudge, shown: list[tuple[str, AuditFlags]], feasible: list[tuple[str, AuditFlags]],
           judged: Callable[[str | None], None] | None = None) -> FailureAssessment:
    """Judge the shown flag sets and the healthy-feasible ones (with longer-backoff variants) under
    every scenario of ``judge``; pick the least-memory survivor among the feasible ones, else the
    frontier. ``judged`` is told the survivor's name (None: none) as soon as it is known, before the
    outage tolerances are bisected. Closes ``judge``."""
    scenarios, log = judge.scenarios, judge.log
    if not scenarios:
        judge.close()
        return FailureAssessment([], [], None, None, "")
    try:
        named = list(shown)
        seen = {tuple(shown_flags(f)) for _, f in named}
        for n, f in feasible:
            for k, v in enumerate([f, *backoff_variants(f, scenarios)]):
                key = tuple(shown_flags(v))
                if key not in seen:
                    seen.add(key)
                    named.append((n if k == 0 else f"{n}+backoff-{format_duration(v.webhook_initial_backoff)}", v))
        log(f"failure scenarios: {', '.join(s.label for s in scenarios)} x {len(named)} flag sets")
        outcomes = judge.judge(named)
        feasible_names = {n for n, _ in feasible} | {n for n, _ in named if "+backoff-" in n}
        by_name: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_name.setdefault(o.name, []).append(o)
        survivors = [n for n in by_name if n in feasible_names and all(o.ok for o in by_name[n])]
        order = {n: k for k, (n, _) in enumerate(named)}  # ties: the search's own order (least healthy memory first)
        best = min(survivors, key=lambda n: (max(o.peak_memory for o in by_name[n]), order[n])) if survivors else None
        if judged is not None:
            judged(best)
        # tolerance: for the flag sets the report shows and the survivor; for every candidate (the
        # frontier) only when nothing survives
        want = {n for n, _ in shown} | ({best} if best else set(by_name))
        judge.tolerances([o for o in outcomes if o.name in want])
        runs = judge.pool.runs
    finally:
        judge.close()
    flags_of = dict(named)
    if best is not None:
        return FailureAssessment(scenarios, outcomes, best, flags_of[best], "", runs=runs)
    outs = [s for s in scenarios if s.is_outage]
    sentence = ("no flag set both survives " + " and ".join(s.label for s in scenarios)
                + " and stays within the memory budget: a longer backoff holds every batch of the outage "
                "in memory, a shorter one drops them; choose on the frontier below")
    frontier = sorted((FrontierPoint.of(o) for n in by_name if n in feasible_names for o in by_name[n]
                       if o.scenario in outs), key=lambda p: (p.scenario, p.peak_memory_bytes))
    return FailureAssessment(scenarios, outcomes, None, None, sentence, frontier, runs)
