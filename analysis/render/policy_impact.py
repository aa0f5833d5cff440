"""The ``tune policy impact`` table, registered for :class:`~analysis.impact_result.PolicyImpact`
(``json``/``yaml`` come from its ``to_dict``)."""
from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table

from audit_tune.analysis.impact_result import PolicyImpact
from audit_tune.basics.formats import register
from audit_tune.sim.units import format_size


def _rate(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "B":
        try:
            return format_size(x) + "/s"
        except Exception:  # pragma: no cover - formatting only
            return f"{x:.0f} B/s"
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


@register(PolicyImpact, "table")
def render_impact_table(r: PolicyImpact) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=160, color_system=None, force_terminal=False, highlight=False, soft_wrap=True)
    src = r.source
    con.print(f"policy {r.policy}" + (f" against {r.against}" if r.against else "")
              + f"; request mix from {src.get('kind')} {src.get('prometheus_url') or src.get('snapshot') or ''}"
              + f" ({r.tool})")
    for name, e in r.instances.items():
        con.print(f"\ninstance {name}: {e.requests_per_s:.2f} requests/s in apiserver_request_total")
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for col in ("policy", "events/s", "range (best..worst)", "peak events/s", "bytes/s", "peak bytes/s",
                    "RR/s", "RS/s", "RC/s"):
            t.add_column(col, justify="left" if col == "policy" else "right")
        rows = [("POLICY", e.estimate)] + ([("--against", e.against)] if e.against is not None else [])
        for label, est in rows:
            lo, hi = est.events_per_s_range
            st = est.events_per_s_by_stage
            pk = est.peak
            t.add_row(label, _rate(est.events_per_s), f"{_rate(lo)}..{_rate(hi)}", _rate(pk.events_per_s if pk else None),
                      _rate(est.bytes_per_s, "B"), _rate(pk.bytes_per_s if pk else None, "B"),
                      _rate(st["RequestReceived"]), _rate(st["ResponseStarted"]), _rate(st["ResponseComplete"]))
        con.print(t)
        if e.change is not None and e.change.events_ratio is not None:
            con.print(f"change: events x{e.change.events_ratio:.3f}, bytes x{e.change.bytes_ratio or 0:.3f}")
        ck = e.check
        if ck:
            ok = ck.observed_within_range
            con.print(f"check ({ck.policy} in force): observed {_rate(ck.observed_events_per_s)} events/s, "
                      f"estimated {_rate(ck.estimated_events_per_s)} (error {_pct(ck.error)}); observed is "
                      + ("inside" if ok else "OUTSIDE") + " the best..worst range")
            lv = "  ".join(f"{k} {_rate(v.observed_requests_per_s)} vs {_rate(v.estimated_requests_per_s)}"
                           f" ({_pct(v.error)})" for k, v in ck.levels.items())
            con.print(f"  requests/s by level, observed vs estimated: {lv}")
            if ck.note:
                con.print(f"  ({ck.note})")
        con.print(f"peak: x{e.estimate.peak.factor if e.estimate.peak else 1:.2f} ({e.peak_source}); "
                  f"sizes: {e.event_size_source}")
        ct = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title="busiest request classes (estimate; range over user kinds)")
        for col in ("class", "scope", "requests", "rule", "level", "levels possible", "events", "events range"):
            ct.add_column(col, justify="right" if col in ("requests", "events", "events range") else "left")
        for c in e.classes[:12]:
            ct.add_row(c.label, c.scope or "-", f"{c.requests:,.0f}",
                       "-" if c.rule_index is None else f"rules[{c.rule_index}]", c.level,
                       ",".join(c.levels_possible), f"{c.events:,.0f}",
                       f"{c.events_range[0]:,.0f}..{c.events_range[1]:,.0f}")
        con.print(ct)
    for n in r.notes:
        con.print(f"note: {n}")
    for m in r.missing:
        con.print(f"missing: {m}")
    return buf.getvalue()
