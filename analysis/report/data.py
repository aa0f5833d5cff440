"""Assemble every number the report shows into one JSON-able dict (written as ``data.json``).

The recommendation itself comes from one place, :func:`recommendation`, which calls
``analysis.recommend.build_report`` (what ``tune recommend -f json`` prints): the report never
re-derives flags. The calibrated instance models are rebuilt with ``analysis.calibrate.calibrate``
and the burst sigma the recommendation settled on (``calibration[].burst.sigma``), so the plots
replay exactly what the recommender replayed.

Determinism: every simulation is seeded with ``--seed``; no wall-clock time or host-dependent
value enters the dict, floats are rounded to 6 significant digits (:func:`clean`), so the same
input and seed give a byte-identical ``data.json``.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune import __version__
from audit_tune.analysis.calibrate import InstanceModel, calibrate, with_sigma
from audit_tune.analysis.objective import Objective
from audit_tune.analysis.recommend import TUNED, build_report
from audit_tune.analysis.report.model import FORMAT, CapacityReport
from audit_tune.analysis.report.sims import Sims
from audit_tune.basics import files, jsondata
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonMapping, JsonObject, JsonValue, as_float, as_list, as_object, as_str
from audit_tune.loadgen.record import FORMAT as LT_FORMAT
from audit_tune.loadgen.verify import TraceRows, verify_run
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.units import format_duration, parse_duration

SIG = 6


def recommendation(snap: dict[str, Any], current: AuditFlags, current_source: str, objective: Objective, seed: int,
                   source: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """The ``tune recommend -f json`` document for these inputs (the one switch point)."""
    return build_report(snap, current, current_source, objective, seed=seed, source=source, log=log).to_dict()


def _obj(v: JsonValue, where: str) -> JsonObject:
    return {} if v is None else as_object(v, where)


def models_of(snap: JsonObject, rec: JsonMapping) -> list[InstanceModel]:
    """The calibrated instance models the recommendation used (same sigma after validation)."""
    out = []
    for c in as_list(rec.get("calibration"), "recommendation.calibration"):
        cal = as_object(c, "recommendation.calibration[]")
        m = calibrate(snap, as_str(cal.get("instance"), "calibration[].instance"))
        sig = as_float(as_object(cal.get("burst"), "calibration[].burst").get("sigma"), "calibration[].burst.sigma")
        if abs(m.burst.sigma - sig) > 1e-3:
            m = with_sigma(m, sig, "as in the recommendation")
        out.append(m)
    return out


def clean(x: Any) -> Any:
    """JSON-safe and stable: floats to 6 significant digits, NaN/Inf to None, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (bool, type(None), str)):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if not math.isfinite(f):
            return None
        if f == 0:
            return 0.0
        return float(f"{f:.{SIG}g}")
    if hasattr(x, "to_dict"):
        return clean(x.to_dict())
    return str(x)


def _flags(doc: JsonValue, where: str) -> list[str]:
    return [as_str(f, where) for f in as_list(as_object(doc, where).get("flags"), f"{where}.flags")]


def flag_sets(rec: JsonMapping, current: AuditFlags) -> dict[str, AuditFlags]:
    sets = {"current": current}
    if rec.get("recommended"):
        sets["recommended"] = parse_flags(_flags(rec.get("recommended"), "recommended"), base=current,
                                          source="recommendation")
    sets["rule_of_thumb"] = parse_flags(_flags(rec.get("rule_of_thumb"), "rule_of_thumb"), base=current,
                                        source="rule of thumb")
    return sets


def _capacity(f: AuditFlags) -> float | None:
    if f.webhook.mode != "batch":
        return None
    c = f.webhook.batch.drain_capacity
    return c if math.isfinite(c) else None


def summary(rec: dict[str, Any], sets: dict[str, AuditFlags], peak: float) -> dict[str, Any]:
    r = rec.get("recommended")
    if r is None:
        verdict, text = "no-solution", "No flag set meets the objective within the constraints."
    elif rec["current_ok"]:
        verdict, text = "ok", "The current flags meet the objective; the recommendation may save memory."
    else:
        verdict, text = "change", "The current flags violate the objective: apply the recommended flags."
    cal = [{"instance": c["instance"], "confidence": c["validation"]["confidence"],
            "rate_error": c["validation"]["rate_error"], "drop_error": c["validation"]["drop_error"],
            "observed_drops": sum((c["validation"]["observed_errors"] or {}).values()),
            "predicted_drops": sum((c["validation"]["predicted_errors"] or {}).values()),
            "replayed": c["validation"]["replayed"], "why": c["validation"]["why"]} for c in rec["calibration"]]
    caps = {k: _capacity(f) for k, f in sets.items()}
    return {
        "verdict": verdict, "verdict_text": text,
        "current_ok": rec["current_ok"], "current_violations": rec["current_violations"],
        "recommended_flags": r["flags"] if r else [],
        "flags_changed_from_current": r["flags_changed_from_current"] if r else [],
        "binding_constraint": r["explanation"]["binding_constraint"] if r else None,
        "slack": r["explanation"]["slack"] if r else {},
        "observed_peak_events_per_second": peak,
        "capacity_events_per_second": caps,
        "headroom": {k: (c / peak if c and peak else None) for k, c in caps.items()},
        "per_flag": r["explanation"]["flags"] if r else {},
        "confidence": rec["confidence"],
        "calibration": cal,
        "warnings": rec.get("warnings") or [],
    }


def _times(series: JsonObject, key: str, w0: float, where: str) -> list[JsonValue]:
    return [as_float(t, where) - w0 if key == "t" else as_float(t, where)
            for t in as_list(series.get(key, []), f"{where}.{key}")]


def history(snap: JsonMapping, models: list[InstanceModel], sets: dict[str, AuditFlags]) -> list[JsonObject]:
    """Per instance: observed event rate (and short-window peaks) over the window, seconds from its start."""
    out: list[JsonObject] = []
    w0v = _obj(_obj(snap.get("source"), "source").get("window"), "source.window").get("start")
    w0 = as_float(w0v, "source.window.start") if w0v is not None else 0.0
    for m in models:
        inst = as_object(as_object(snap.get("instances"), "instances").get(m.name), f"instances.{m.name}")
        er = _obj(inst.get("event_rate"), "event_rate")
        pk = _obj(inst.get("event_rate_peak"), "event_rate_peak")
        out.append({
            "instance": m.name,
            "t": _times(er, "t", w0, "event_rate"), "event_rate": _times(er, "v", w0, "event_rate"),
            "peak_window": pk.get("window") if pk else None,
            "peak_t": _times(pk, "t", w0, "event_rate_peak"), "peak_rate": _times(pk, "v", w0, "event_rate_peak"),
            "mean_event_rate": m.mean_rate, "peak_burst_event_rate": m.peak_burst_rate,
            "errors_increase": {k: float(v) for k, v in m.errors_increase.items()},
            "capacity_events_per_second": {k: _capacity(f) for k, f in sets.items()},
        })
    return out


def load_loadtest(path: str | Path) -> tuple[JsonObject, TraceRows | None]:
    """A ``tune loadtest`` record and its trace (inline or the CSV sidecar next to it)."""
    p = Path(path)
    doc = jsondata.loads(files.read_text(p, "--loadtest", "a record of 'tune loadtest -o run.json'"), f"--loadtest {path}")
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or fmt != LT_FORMAT:
        raise InputError(f"--loadtest {path}: format {fmt!r} is not {LT_FORMAT!r} (write one with 'tune loadtest -o run.json')")
    rec = doc
    tr = as_object(rec.get("trace") or {}, f"--loadtest {path}: trace")
    trace: TraceRows | None = None
    sidecar = tr.get("sidecar")
    if isinstance(tr.get("rows"), list):
        trace = TraceRows.of(tr)
    elif sidecar:
        side = p.parent / as_str(sidecar, f"--loadtest {path}: trace.sidecar")
        if not side.is_file():
            raise InputError(f"--loadtest {path}: trace sidecar {side} is missing (keep it next to the record)")
        trace = TraceRows.from_csv(side)
    return rec, trace


def loadtest_comparison(path: str | Path, seed: int) -> dict[str, Any]:
    """Observed vs predicted for a load-test run: the record's own ``verify`` section when it was
    run with ``--verify``, else ``loadgen.verify.verify_run`` replayed from the record and trace."""
    doc, trace = load_loadtest(path)
    rec: dict[str, Any] = doc  # the record's sections, read as its writer (loadgen.record) laid them out
    if rec.get("verify"):
        v, how = rec["verify"], "the record's --verify section (measured when the run ended)"
    else:
        if trace is None:
            raise InputError(f"--loadtest {path}: no trace in the record and no --verify section: nothing to replay")
        v, how = verify_run(rec, trace).to_dict(), "replayed now from the record and its trace (loadgen.verify.verify_run)"
    load = rec.get("load") or {}
    win = rec.get("window") or {}
    return {
        "file": Path(path).name, "run_id": rec.get("run_id"), "how": how,
        "window": {"start": win.get("start_unix"), "end": win.get("end_unix"), "duration_s": win.get("duration_s")},
        "load": {k: load.get(k) for k in ("requested_rate", "achieved_rate", "kept_up", "behind_reason")},
        "flags": (rec.get("flags") or {}).get("args") or [],
        "rows": v.get("rows") or [], "ok": v.get("ok"), "failures": v.get("failures") or [],
        "notes": v.get("notes") or [], "tolerance": v.get("tolerance"), "inputs": v.get("inputs"),
    }


def window_of(snap: JsonMapping) -> JsonObject:
    w = _obj(_obj(snap.get("source"), "source").get("window"), "source.window")
    out: JsonObject = {"start": w.get("start"), "end": w.get("end"), "step": w.get("step")}
    num = {k: float(v) for k in ("start", "end") if isinstance(v := w.get(k), (int, float))}
    for k, v in num.items():
        out[f"{k}_utc"] = dt.datetime.fromtimestamp(v, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if len(num) == 2:
        out["length"] = format_duration(num["end"] - num["start"])
    return out


def assemble(snap: dict[str, Any], rec: dict[str, Any], current: AuditFlags, objective: Objective, seed: int,
             name: str, loadtest: str | None = None, engine: str = "fast",
             log: Callable[[str], None] | None = None) -> CapacityReport:
    """Everything the report shows, built once. ``rec`` is :func:`recommendation`'s document."""
    log = log or (lambda s: None)
    obj = objective.validated()
    sets = flag_sets(rec, current)
    models = models_of(snap, rec)
    worst = max(models, key=lambda m: m.peak_burst_rate)
    peak = max(m.peak_burst_rate for m in models)
    seg = worst.busiest_segments(parse_duration(obj.peak_window, "--peak-window"), 1)[0]
    sims = Sims(worst, seg, seed, engine, log, jobs=obj.jobs)
    chosen = sets.get("recommended")
    data: dict[str, Any] = {
        "format": FORMAT, "tool": "audit-tune", "tool_version": __version__, "name": name,
        "config": {"seed": seed, "engine": engine, "source": rec["config"]["source"],
                   "objective": rec["config"]["objective"], "horizon_seconds": rec["config"]["horizon_seconds"],
                   "current_flags_source": rec["config"]["current_flags_source"],
                   "loadtest": Path(loadtest).name if loadtest else None,
                   "simulated_instance": worst.name,
                   "simulated_stretch": {"start_offset_seconds": worst.times[seg[0]], "seconds": sims.seconds,
                                         "mean_event_rate": sims.mean_rate}},
        "window": window_of(snap),
        "flag_sets": {k: f.to_flags(include=_tuned()) for k, f in sets.items()},
        "effective_flags": {k: f.to_dict() for k, f in sets.items()},
        "summary": summary(rec, sets, peak),
        "history": history(snap, models, sets),
    }
    try:
        data["knee"] = sims.knee(sets, peak)
        data["peak_window"] = sims.peak_window(sets)
        data["latency_sweep"] = sims.latency_sweep({k: v for k, v in sets.items() if k != "rule_of_thumb"})
        data["sensitivity"] = sims.sensitivity(chosen, obj.headroom) if chosen is not None else None
    finally:
        sims.close()
    data["loadtest"] = loadtest_comparison(loadtest, seed) if loadtest else None
    data["config"]["report_simulation_runs"] = sims.runs
    data["recommendation"] = rec
    return CapacityReport.from_doc(clean(data))


def _tuned() -> tuple[str, ...]:
    return TUNED
