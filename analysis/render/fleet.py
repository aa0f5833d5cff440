"""The ``tune recommend --all-clusters`` summary table, registered for
:class:`~analysis.fleet.FleetResult` (``json``/``yaml`` come from its ``to_dict``)."""
from __future__ import annotations

from io import StringIO

from rich.console import Console
from rich.table import Table

from audit_tune.analysis.fleet import FleetResult
from audit_tune.basics.formats import register


@register(FleetResult, "table")
def render_fleet_table(fleet: FleetResult) -> str:
    buf = StringIO()
    con = Console(file=buf, width=160, force_terminal=False, color_system=None, soft_wrap=True)
    con.print(f"audit-tune {fleet.tool_version} recommend --all-clusters  seed={fleet.seed}  "
              f"executor={fleet.executor}  current flags: {fleet.current_flags_source}")
    t = Table(title="per cluster")
    for c in ("cluster", "apiservers", "peak ev/s", "current", "confidence", "recommended (changed flags)", "binding"):
        t.add_column(c)
    for r in fleet.summary:
        flags = r.recommended_flags
        changed = [f for f in (flags or []) if f not in fleet.current_flags]
        t.add_row(r.cluster or "(none)", str(r.instances), f"{r.peak_event_rate:,.0f}",
                  "ok" if r.current_ok else "VIOLATES", str(r.confidence),
                  "\n".join(changed) if flags else "none fits: " + "; ".join(r.why_none or []),
                  str(r.binding_constraint or "-"))
    con.print(t)
    return buf.getvalue()
