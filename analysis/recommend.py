"""Recommend webhook buffering flags from calibrated instance models (see ``docs/recommend.md``).

The objective (:class:`~analysis.objective.Objective`; every field is a ``tune recommend`` option):

1. **No buffered drop at the observed peak x headroom**: the busiest ``peak_window`` of every
   instance, rates multiplied by ``headroom``, simulated with ``seeds`` seeds of the fitted bursts
   (fast engine): zero ``buffered`` drops in every run.
2. **P(any drop over the horizon) <= max_drop_probability** at the observed load: the fluid model
   (:mod:`analysis.fluid`) for buffer overflow and batches failing every webhook attempt.
3. Constraints: ``memory_budget`` per apiserver >= (buffer + one batch being collected + simulated
   peak batches in flight x max size) x event size; p99 delivery latency <= ``max_delivery_latency``
   (batch wait + webhook latency and retries); max size x event size x 1.25 <= ``max_batch_bytes``;
   throttle qps x instances <= ``receiver_max_qps``.

Modules, one concept each: :mod:`analysis.objective` (the objective), :mod:`analysis.flagsets`
(flag sets, the grid, the rule of thumb), :mod:`analysis.fluid` (the fluid model),
:mod:`analysis.simrunner` (simulation tasks and the pool), :mod:`analysis.search` (the
:class:`Recommender`), :mod:`analysis.evaluation` and :mod:`analysis.recommendation` (the typed
results). This module calibrates every instance and builds the :class:`RecommendationReport`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from audit_tune import __version__
from audit_tune.analysis import check, logbackend, outage
from audit_tune.analysis.calibrate import (
    InstanceModel,
    Mapper,
    PartResult,
    ReplayPart,
    Validation,
    calibrate,
    missing_items,
    replay_part,
    replay_parts,
    validate,
    validate_many,
    with_sigma,
)
from audit_tune.analysis.evaluation import Evaluation, SearchTrace
from audit_tune.analysis.flagsets import TUNED, nice_up, rule_of_thumb, tuned_args, webhook_flags
from audit_tune.analysis.fluid import fluid_drop_probability
from audit_tune.analysis.memfactor import MemoryBudget
from audit_tune.analysis.objective import Objective
from audit_tune.analysis.recommendation import Calibrated, RecommendationReport, RecommendConfig, Recommended, Skipped
from audit_tune.analysis.restart_at_peak import RestartAtPeak, restart_at_peak
from audit_tune.analysis.search import Recommender
from audit_tune.analysis.taskpool import KeyedRuns, Workers
from audit_tune.basics.errors import NotEnoughData
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.receiver import ATTEMPTS
from audit_tune.sim.units import parse_duration

__all__ = ["TUNED", "Evaluation", "Objective", "RecommendationReport", "Recommender", "build_report", "calibrate_all",
           "fluid_drop_probability", "nice_up", "rule_of_thumb", "tuned_args", "webhook_flags", "why_nothing_fits"]

#: A snapshot document: the ``tune snapshot`` JSON as read from its file (data at the JSON edge).
Snapshot = dict[str, Any]


def calibrate_all(snap: Snapshot, current: AuditFlags, seed: int = 1, engine: str = "fast",
                  log: Callable[[str], None] | None = None,
                  workers: Workers | None = None) -> tuple[list[InstanceModel], list[Validation], list[Skipped]]:
    """Calibrate and validate every instance. Returns (models, validations, skipped instances with why).

    The fits (tens of milliseconds each) run on ``workers`` all at once, and each instance's
    validation replays are queued there as soon as its fit is back, so they run beside the other
    fits; all the replays are one round, so one instance with long stretches does not hold up the
    round. Without parallel workers everything runs in the caller's thread, instance by instance. When a
    replay loses far fewer events than the apiserver did, the burst sigma is raised (up to 3
    times) and that instance replayed again.
    Raises :class:`NotEnoughData` (exit 4) when no instance can be calibrated."""
    log = log or (lambda s: None)
    replays = _Replays(workers) if workers is not None and workers.parallel else None
    mapper = replays.map if replays is not None else workers.map if workers is not None else None
    models: list[InstanceModel] = []
    skipped: list[Skipped] = []
    names = sorted(snap["instances"])
    parts = [({**snap, "instances": {name: snap["instances"][name]}}, name) for name in names]
    fitted: Iterator[tuple[InstanceModel | None, str]]
    if replays is not None and workers is not None and len(names) > 1:
        futures = [workers.executor().submit(_fit, part) for part in parts]  # every fit at once
        fitted = (f.result() for f in futures)
    else:
        fitted = (_fit(part) for part in parts)  # one at a time, in between the prefetches
    for name, (m, why) in zip(names, fitted):
        if m is None:
            skipped.append(Skipped(name, why))
            continue
        log(f"calibrated {name}: mean {m.mean_rate:,.0f} ev/s, peak {m.peak_burst_rate:,.0f} ev/s, "
            f"sigma {m.burst.sigma:.2f}, event {m.event_size} B")
        models.append(m)
        if replays is not None and current.webhook.mode == "batch":
            replays.prefetch(replay_parts(m, current, seed, engine))  # beside the fits still running
    if not models:
        reasons = [f"{s.instance}: {s.why}" for s in skipped] + missing_items(snap)
        raise NotEnoughData("not enough data to recommend: " + ("; ".join(reasons) if reasons else
                            "the snapshot has no instances (no apiserver_audit_event_total series matched the selector)"))
    vals = _first_validations(models, current, seed, engine, mapper)
    for k, m in enumerate(models):
        v = vals[k]
        obs_buf = m.errors_increase.get("buffered", 0.0)
        tries = 0
        while (current.webhook.mode == "batch" and obs_buf > 0 and v.predicted_errors["buffered"] < 0.5 * obs_buf
               and tries < 3 and m.burst.per_step > 1 and not v.partial):
            tries += 1
            sig = min(max(m.burst.sigma, 0.2) * 1.5, 2.5)
            m = with_sigma(m, sig, f"raised to {sig:.2f} to reproduce the observed buffered drops")
            v = validate(m, current, seed=seed, engine=engine, mapper=mapper)
        models[k], vals[k] = m, v
    return models, vals, skipped


def _fit(part: tuple[dict[str, object], str]) -> tuple[InstanceModel | None, str]:
    """One instance's calibration (a pure function of its part of the snapshot): the model, or None
    and why it cannot be calibrated."""
    snap, name = part
    try:
        return calibrate(snap, name), ""
    except NotEnoughData as e:
        return None, str(e).removeprefix(f"instance {name}: ")


class _Replays:
    """Validation replays on the pool, each run once: prefetched as each instance's fit is back, so
    the pool replays beside the fits still running; a :data:`Mapper` for ``validate_many``."""

    def __init__(self, workers: Workers) -> None:
        self._runs: KeyedRuns[tuple[object, ...], ReplayPart, PartResult] = KeyedRuns(workers, replay_part)

    def prefetch(self, parts: list[ReplayPart]) -> None:
        self._runs.prefetch([(p.key(), p) for p in parts])

    def map(self, fn: Callable[[ReplayPart], PartResult], parts: list[ReplayPart]) -> list[PartResult]:
        assert fn is replay_part
        return self._runs.map([(p.key(), p) for p in parts])


def _first_validations(models: list[InstanceModel], current: AuditFlags, seed: int, engine: str,
                       mapper: Mapper | None) -> list[Validation]:
    """Every instance's validation with the fitted sigma: all replayed stretches in one round."""
    if current.webhook.mode != "batch":
        return [Validation(m.name, "not replayed", m.events_increase, 0.0, dict(m.errors_increase),
                           {k: 0.0 for k in m.errors_increase}, 0.0, 0.0, "medium",
                           f"current --audit-webhook-mode={current.webhook.mode}: validation needs batch mode")
                for m in models]
    return validate_many(models, current, seed, engine, mapper=mapper)


def build_report(snap: Snapshot, current: AuditFlags, current_source: str, objective: Objective,
                 seed: int = 1, source: dict[str, object] | None = None, engine: str = "fast",
                 log: Callable[[str], None] | None = None, evaluate: AuditFlags | None = None) -> RecommendationReport:
    """Calibrate, validate, search, and compare current, recommended and rule-of-thumb flags (and the
    ``evaluate`` flags, judged without the snapshot's observed drops), each also under the receiver
    failure scenarios (:mod:`analysis.outage`) and, with ``--audit-log-path``, the log backend."""
    log = log or (lambda s: None)
    obj = objective.validated()
    source = dict(source or {})
    src = snap.get("source") or {}
    source.setdefault("selector", src.get("selector"))
    source.setdefault("window", src.get("window"))
    workers = Workers(obj.jobs)
    try:
        return _build(snap, current, current_source, obj, seed, source, engine, log, evaluate, workers)
    finally:
        workers.close()


def _build(snap: Snapshot, current: AuditFlags, current_source: str, obj: Objective, seed: int,
           source: dict[str, object], engine: str, log: Callable[[str], None], evaluate: AuditFlags | None,
           workers: Workers) -> RecommendationReport:
    log(f"calibrating {len(snap.get('instances') or {})} instance(s)")
    models, vals, skipped = calibrate_all(snap, current, seed, engine, log, workers)
    rec = Recommender(models, obj, seed=seed, engine=engine, progress=log, workers=workers)
    try:
        rot_flags, rot = rule_of_thumb(models, current)
        # the shown flag sets that do not depend on the search: at x headroom their runs ride along
        # with the search's passes over the same events (every seed of every instance)
        rec.prefetch([("current", current), ("rule-of-thumb", rot_flags)]
                     + ([("evaluated", evaluate)] if evaluate is not None else []), x1=False, idle=False)
        log(f"searching: {len(models)} instance(s), {obj.seeds} seeds, peak window {obj.peak_window}")
        best, trace = rec.search(current)
        named = [("current", current)]
        if best is not None:
            named.append(("recommended", best.flags))
        named.append(("rule-of-thumb", rot_flags))
        if evaluate is not None:
            named.append(("evaluated", evaluate))
        # at x1, every shown flag set in one pass over each workload's events, on the cores the
        # failure scenarios leave idle
        rec.prefetch(named)
        failures = _assess_failures(snap, models, obj, named, best, trace, log, rec)
        if best is not None and failures.survivor_flags is not None and failures.survivor != "recommended":
            named[1] = ("recommended", failures.survivor_flags)
            failures.promote()
        log(f"comparing {', '.join(n for n, _ in named)} at x1 and x {obj.headroom:g}")
        shown = named[:2] if best is not None else named[:1]  # current, and the recommended flags

        def restart() -> RestartAtPeak | None:
            log("one restart at the peak")
            return restart_at_peak(models, shown, obj.headroom, seed=seed, engine=engine)
        restarted = workers.beside(restart)  # on the cores the comparison's last runs leave idle
        evs = rec.evaluate_many(named, x1=True)
        at_peak = restarted()
        trace = replace(trace, simulation_runs=rec.runner.runs)
    finally:
        rec.close()
    for e in evs:
        e.violations.extend(failures.violations_for(e.name))
    by = {e.name: e for e in evs}
    log_part = logbackend.assess_log(current, max(m.peak_burst_rate for m in models), obj.headroom,
                                     max(m.epr for m in models), max(m.event_size for m in models), obj.memory_bytes,
                                     obj.log_write_latency, obj.tolerate_log_stall)
    if log_part:
        by["current"].violations.extend(log_part.current_violations)
    observed_drops = {m.name: {k: v for k, v in m.errors_increase.items() if v} for m in models
                      if any(m.errors_increase.values())}
    cur_viol = list(by["current"].violations)
    if observed_drops:
        cur_viol.insert(0, "observed drops in the snapshot window: " + "; ".join(
            f"{i}: {', '.join(f'{k}={v:.0f}' for k, v in d.items())}" for i, d in observed_drops.items()))
    by["current"] = replace(by["current"], violations=cur_viol)
    evs = [by[e.name] for e in evs]
    conf_rank = {"high": 2, "medium": 1, "low": 0}
    confidence = min((v.confidence for v in vals), key=lambda c: conf_rank[c])
    warnings = [f"{m.name}: {w}" for m in models for w in m.warnings]
    if any("default" in m.sources.get("event_size", "") or "default" in m.sources.get("webhook_latency", "")
           for m in models) and confidence == "high":
        confidence = "medium"
        warnings.append("confidence lowered to medium: event size or webhook latency are defaults, not measured")
    warnings += [f"{s.instance}: skipped, {s.why}" for s in skipped]
    for miss in snap.get("missing") or []:  # apiservers the snapshot itself could not read
        if miss.get("instance") not in snap["instances"] and miss.get("instance") not in ("*", "", None):
            warnings.append(f"{miss.get('instance')}: not in the recommendation, {miss.get('item')}: {miss.get('why')}"
                            + (f" (fix: {miss['fix']})" if miss.get("fix") else ""))
    if current_source.startswith("kube-apiserver defaults") and any(v.confidence == "low" for v in vals):
        warnings.append("the current flags were not given and the defaults do not explain the observed counters: "
                        "pass --current-flags (flags, a flags file or the kube-apiserver manifest) and re-run")
    recommended: Recommended | None = None
    if best is not None:
        ev = by["recommended"]
        recommended = Recommended(tuned_args(ev.flags) + (log_part.recommended_flags if log_part else []),
                                  [a for a in tuned_args(ev.flags) if a not in tuned_args(current)],
                                  rec.explain(ev, trace.excluded), ev.ok, ev.violations)
    blockers = [] if best is not None else why_nothing_fits(trace, models, obj)
    config = RecommendConfig(seed, engine, source, obj, rec.horizon, tuned_args(current), current_source)
    return RecommendationReport(__version__, config, confidence, [Calibrated(m, v) for m, v in zip(models, vals)],
                                skipped, recommended, blockers, rot, evs, by["current"].ok, cur_viol, trace, warnings,
                                failures, log_part, _evaluated(by["evaluated"], failures) if evaluate is not None else None,
                                at_peak)


def _evaluated(ev: Evaluation, failures: outage.FailureAssessment) -> check.Evaluated:
    return check.Evaluated(tuned_args(ev.flags), check.checks(ev.to_dict(), failures.to_dict()))


def _assess_failures(snap: Snapshot, models: list[InstanceModel], obj: Objective, named: list[tuple[str, AuditFlags]],
                     best: Evaluation | None, trace: SearchTrace, log: Callable[[str], None],
                     rec: Recommender) -> outage.FailureAssessment:
    """The shown flag sets and the search's healthy-feasible candidates under the failure scenarios.

    A candidate the search left at seed 1 as dominated (:meth:`Recommender._screened`) counts as
    feasible here until it matters: when it (or its longer-backoff variant) would be the survivor,
    or nothing survives and the frontier lists it, it runs every seed first; one that then fails is
    dropped and the scenarios are judged again. So the survivor is the one the full evaluation of
    every candidate would give."""
    scenarios = outage.parse_scenarios(obj.tolerate_outage, obj.tolerate_slowdown, snap,
                                       obj.webhook_retry_after)
    base = named[0][1]
    cands: dict[str, AuditFlags] = {}
    unconfirmed: set[str] = set()
    for r, rnd in enumerate(trace.rounds):
        for k, c in enumerate(rnd):
            if not c.violations:
                cands[f"candidate-{r}.{k}"] = parse_flags(c.flags, base=base)
                if c.screened:
                    unconfirmed.add(f"candidate-{r}.{k}")
    window = parse_duration(obj.peak_window, "--peak-window")
    confirming: list[tuple[list[str], Callable[[], list[bool]]]] = []

    def judged(survivor: str | None) -> None:
        """Confirm the candidates that matter as soon as the survivor is known, beside the bisection
        of the outage tolerances (both only read the models and their own runs)."""
        check = [n for n in ([survivor.split("+backoff-")[0]] if survivor else sorted(unconfirmed)) if n in unconfirmed]
        flags = [cands[n] for n in check]
        confirming.append((check, rec.workers.beside(lambda: rec.confirm_many(flags))))

    while True:
        feasible = ([("recommended", best.flags)] if best is not None else []) + list(cands.items())
        judge = outage.FailureJudge(models, scenarios, MemoryBudget(obj.memory_bytes, obj.memory_factor), window,
                                    rec.seed, rec.workers, rec.runner.engine, log)
        fa = outage.assess(judge, named, feasible, judged)
        if not scenarios:
            return fa
        check, confirmed = confirming.pop()
        unconfirmed.difference_update(check)
        failed = [n for n, ok in zip(check, confirmed()) if not ok]
        for n in failed:
            del cands[n]
        if not failed:
            return fa


def why_nothing_fits(trace: SearchTrace, models: list[InstanceModel], obj: Objective) -> list[str]:
    """Plain reasons no flag set met the objective: the violations every simulated candidate shared,
    and what would change them."""
    rounds = [c for r in trace.rounds for c in r]
    out: list[str] = []
    if not rounds:
        out.append("every max-size was excluded before simulation: " + "; ".join(trace.excluded))
        return out
    every = lambda prefix: all(any(v.startswith(prefix) for v in c.violations) for c in rounds)  # noqa: E731
    pf = max(m.failure_rate for m in models)
    if every("P(any") and pf > 0:
        out.append(f"the receiver fails {100 * pf:.1f}% of POST attempts, so some batch fails all {ATTEMPTS} attempts "
                   "whatever the buffering flags: fix the receiver, or raise --max-drop-probability")
    if every("p99 delivery latency"):
        out.append("webhook latency and retry backoffs (10 s, 15 s, 22.5 s, 33.75 s) alone exceed "
                   f"--max-delivery-latency {obj.max_delivery_latency}: raise it, or fix the receiver")
    if every("memory"):
        out.append(f"every candidate needs more than --memory-budget {obj.memory_budget}")
    if every("buffered drops") or every("drops at the observed"):
        out.append("drops remain at the largest buffer tried: raise --receiver-max-qps or --max-batch-bytes "
                   "so the drain capacity can grow")
    return out or ["each candidate failed a different constraint; see search.rounds in -f json"]
