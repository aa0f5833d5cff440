"""``tune report``: an HTML and Markdown capacity report from the same inputs as ``tune recommend``.

Modules, one concern each:

* :mod:`analysis.report.data`: the recommendation (through ``analysis.recommend.build_report``,
  one switch point), the calibrated models, and every number shown (``data.json``);
* :mod:`analysis.report.sims`: the simulations behind the plots (fast engine, seeded);
* :mod:`analysis.report.plots`: matplotlib figures, light and dark, Okabe-Ito colours;
* :mod:`analysis.report.content`: the words and tables both renderers share;
* :mod:`analysis.report.html` / :mod:`analysis.report.markdown`: the two renderings.

:func:`write` puts ``index.html`` (self-contained), ``report.md`` + ``<plot>.png`` and
``data.json`` into one folder, each file atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

from audit_tune.analysis.report import html, markdown, plots
from audit_tune.analysis.report.model import CapacityReport
from audit_tune.basics.formats import register
from audit_tune.basics.output import write_atomic

__all__ = ["CapacityReport", "write"]


def write(report: CapacityReport, out_dir: str | Path) -> list[Path]:
    """Render and write the report files; returns their paths. Stale PNGs of plots no longer drawn
    are removed so report.md never links a file from an earlier run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = plots.render_all(report)
    written = []
    for fid, pngs in figs.items():
        p = out / markdown.png_name(fid)
        write_atomic(p, pngs["light"])
        written.append(p)
    known = {markdown.png_name(fid) for fid, *_ in plots.FIGURES}
    for stale in out.glob("*.png"):
        if stale.name in known and stale not in written:
            stale.unlink()
    for name, text in (("data.json", json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n"),
                       ("report.md", markdown.render(report, figs)),
                       ("index.html", html.render(report, figs))):
        write_atomic(out / name, text)
        written.append(out / name)
    return written


@register(CapacityReport, "markdown")
def render_markdown(report: CapacityReport) -> str:
    """``report.md`` (plots rendered for it; :func:`write` renders them once for every file)."""
    return markdown.render(report, plots.render_all(report))


@register(CapacityReport, "html")
def render_html(report: CapacityReport) -> str:
    """``index.html``, plots embedded."""
    return html.render(report, plots.render_all(report))
