"""The report's words and tables, shared by the HTML and Markdown renderers (same findings in both).

Each function takes the :class:`~analysis.report.model.CapacityReport` and returns plain structures:
strings, ``(header, rows)`` tables, figure captions. No markup here.
"""
from __future__ import annotations

from audit_tune.analysis.render.recommend import burst_lines
from audit_tune.analysis.report.model import CapacityReport
from audit_tune.sim.units import format_size

FLAG_ROWS = ("audit-webhook-mode", "audit-webhook-batch-buffer-size", "audit-webhook-batch-max-size",
             "audit-webhook-batch-max-wait", "audit-webhook-batch-throttle-enable",
             "audit-webhook-batch-throttle-qps", "audit-webhook-batch-throttle-burst")
SET_LABELS = {"current": "current", "recommended": "recommended", "rule_of_thumb": "rule of thumb (kubernetes.io)"}


def _n(x: object, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def title(d: CapacityReport) -> str:
    return d.title


def verdict(d: CapacityReport) -> tuple[str, str]:
    return d.summary.verdict, d.summary.verdict_text


def key_facts(d: CapacityReport) -> list[tuple[str, str]]:
    s = d.summary
    caps, hr = s.capacity_events_per_second, s.headroom
    facts = [("Observed peak", f"{_n(s.observed_peak_events_per_second)} events/s (busiest short window)")]
    for k in ("current", "recommended"):
        if k in caps:
            facts.append((f"Capacity, {k} flags",
                          f"{_n(caps[k])} events/s (qps x max-size); headroom {_n(hr.get(k), 2)}x the observed peak"))
    facts.append(("Binding constraint", s.binding_constraint or "none (no solution)"))
    cal = "; ".join(f"{c.instance}: events {_pct(c.rate_error)}, drops {_pct(c.drop_error)} "
                    f"(observed {_n(c.observed_drops)} lost, predicted {_n(c.predicted_drops)})"
                    for c in s.calibration)
    facts.append(("Calibration error", cal))
    for line in burst_lines(d.recommendation):  # an audit log input: the bursts it showed
        facts.append(("Bursts (audit log)", line.split(": ", 1)[1]))
    facts.append(("Confidence", s.confidence))
    w = d.window
    facts.append(("Data window", f"{w.start_utc or '?'} to {w.end_utc or '?'} ({w.length or '?'}, "
                                 f"step {_n(w.step, 0)} s)"))
    return facts


def flags_table(d: CapacityReport) -> tuple[list[str], list[list[str]]]:
    sets = [k for k in ("current", "recommended", "rule_of_thumb") if k in d.effective_flags]
    head = ["flag"] + [SET_LABELS[k] for k in sets]
    rows = []
    for f in FLAG_ROWS:
        rows.append([f"--{f}"] + [d.effective_flags[k].get(f, "") for k in sets])
    caps = d.summary.capacity_events_per_second
    rows.append(["capacity qps x max-size (events/s)"] + [_n(caps.get(k)) for k in sets])
    cmp = {c["name"]: c for c in d.recommendation["comparison"]}
    rows.append(["meets the objective"] + [("yes" if cmp[k.replace("_", "-")]["ok"] else "no")
                                           if k.replace("_", "-") in cmp else "n/a" for k in sets])
    rows.append(["memory bound per apiserver"] + [format_size(cmp[k.replace("_", "-")]["memory_bound_bytes"])
                                                  if k.replace("_", "-") in cmp else "n/a" for k in sets])
    return head, rows


def why_table(d: CapacityReport) -> tuple[list[str], list[list[str]]]:
    rows = []
    for flag, e in d.summary.per_flag.items():
        hr = "" if e.headroom is None else f"{e.headroom:g} ({e.headroom_meaning})"
        rows.append([f"--{flag}={e.value}", e.why, hr])
    return ["flag", "why", "headroom"], rows


def problems(d: CapacityReport) -> list[str]:
    s = d.summary
    return [f"current flags: {v}" for v in s.current_violations] + [f"warning: {w}" for w in s.warnings]


def captions(d: CapacityReport) -> dict[str, str]:
    s = d.summary
    k = d.knee
    out = {
        "history": "Audit events/s entering each apiserver's pipeline over the snapshot window (observed), with the "
                   "sustained drain capacity qps x max-size of the current flags (dashed) and of the recommended "
                   "flags (solid). Above the line, the buffer fills; once it is full, events are dropped.",
        "knee": f"Share of events lost when the busiest {k['stretch_seconds']:g} s of "
                f"{d.config.simulated_instance} is replayed at each mean rate (fast engine, seed "
                f"{d.config.seed}). Losses start where the rate passes qps x max-size (thin vertical "
                "lines) plus what the buffer absorbs.",
        "peak-window": "Buffer occupancy (most events waiting per interval; horizontal lines: buffer size) and events "
                       "lost so far over the busiest stretch at the observed rate, current against recommended.",
        "latency-cdf": "Time from an event's creation to the receiver's acknowledgement, for delivered events over the "
                       "busiest stretch. Larger batches and longer max-wait move the curve right.",
        "inflight-memory": "With the async webhook, a slow receiver does not slow the drain: it multiplies batches in "
                           "flight (qps x latency) and the memory they hold. Fixed webhook latencies, busiest "
                           "stretch at the observed rate.",
        "sensitivity": "Share of events dropped at the busiest stretch x headroom for each throttle qps (columns) and "
                       "batch max size (rows), other flags as recommended. The hatched square is the recommendation.",
        "loadtest": "A real kube-apiserver run (tune loadtest) against the simulator's replay of the same run.",
        "frontier": "No flag set both survives the receiver outage and stays within --memory-budget. Each point is a "
                    "candidate that meets the rest of the objective, or its variant with a longer initial backoff: "
                    "the longest outage it survives against the apiserver memory it needs (held event bytes x the "
                    "Go heap overhead factor). A longer backoff keeps every batch of the outage in memory, a shorter "
                    "one drops them; the bars show what the outage and one twice as long lose.",
    }
    if s.binding_constraint:
        out["sensitivity"] += f" Binding constraint: {s.binding_constraint}."
    return out


def loadtest_table(d: CapacityReport) -> tuple[list[str], list[list[str]]] | None:
    lt = d.loadtest
    if not lt:
        return None
    rows = []
    for r in lt.rows:
        lat = "latency" in r.metric
        fmt = (lambda x: "n/a" if x is None else f"{x:.3f}") if lat else (lambda x: _n(x))
        ok = "-" if r.ok is None else ("yes" if r.ok else "NO")
        rows.append([r.metric, fmt(r.observed), fmt(r.predicted), fmt(r.diff),
                     "" if r.tolerance is None else fmt(r.tolerance), ok])
    return ["metric", "observed", "predicted", "observed - predicted", "tolerance", "within"], rows


def loadtest_notes(d: CapacityReport) -> list[str]:
    lt = d.loadtest
    if lt is None:
        return []
    judged = [r for r in lt.rows if r.ok is not None]
    agree = sum(1 for r in judged if r.ok)
    out = [f"prediction within tolerance for {agree} of {len(judged)} compared metrics"
           + ("" if agree == len(judged) else " (see the table)"),
           f"run {lt.run_id} ({lt.file}): {lt.how}",
           f"requested {_n(lt.load.get('requested_rate'), 1)} req/s, achieved {_n(lt.load.get('achieved_rate'), 1)} req/s"
           + ("" if lt.load.get("kept_up") is not False else f" (behind: {lt.load.get('behind_reason')})"),
           "flags in force: " + " ".join(a for a in lt.flags
                                         if a.startswith(("--audit-webhook-batch-", "--audit-webhook-mode")))]
    out += [f"failure: {f}" for f in lt.failures] + [f"note: {n}" for n in lt.notes]
    return out


def config_table(d: CapacityReport) -> list[tuple[str, str]]:
    c = d.config
    src = c.source or {}
    obj = c.objective
    st = c.simulated_stretch
    return [
        ("tool", f"audit-tune {d.tool_version}"),
        ("seed", str(c.seed)),
        ("engine", c.engine),
        ("input", ", ".join(f"{k}={v}" for k, v in src.items() if k in ("kind", "snapshot", "prometheus_url",
                                                                          "history", "step") and v)),
        ("selector", src.get("selector") or "(none)"),
        ("data window", f"{d.window.start_utc or '?'} to {d.window.end_utc or '?'}"),
        ("current flags", c.current_flags_source),
        ("objective", ", ".join(f"{k}={v}" for k, v in obj.items() if v != "")),
        ("simulated instance", f"{c.simulated_instance}, busiest {st.seconds:g} s from +{st.start_offset_seconds:g} s "
                               f"(mean {st.mean_event_rate:,.1f} events/s)"),
        ("load test record", c.loadtest or "(none)"),
        ("simulation runs", f"{c.report_simulation_runs} for the plots, "
                            f"{d.recommendation['search'].get('simulation_runs')} for the recommendation"),
    ]
