"""One self-contained HTML page: inline CSS, plots as base64 PNG ``data:`` URIs, no script.

A strict Content-Security-Policy (``default-src 'none'; img-src data:; style-src 'unsafe-inline'``)
forbids every network request, so a page that tried one would fail loudly in the console. Light
and dark themes follow ``prefers-color-scheme``; each plot is a ``<picture>`` with the dark PNG as
a ``media`` source and the light PNG as the ``<img>`` (which is also what prints).
"""
from __future__ import annotations

import base64
from html import escape

from audit_tune.analysis.report import content
from audit_tune.analysis.report.model import CapacityReport
from audit_tune.analysis.report.plots import titles

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root { color-scheme: light dark; --bg:#ffffff; --fg:#1b1f24; --muted:#5a6169; --line:#d0d4d9; --card:#f6f8fa;
  --ok:#009E73; --bad:#D55E00; --warn:#E69F00; }
@media (prefers-color-scheme: dark) { :root { --bg:#16191d; --fg:#e8eaed; --muted:#a9b0b8; --line:#3a4048;
  --card:#1f2329; --ok:#009E73; --bad:#E69F00; --warn:#F0E442; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 20px 60px; }
h1 { font-size: 1.55rem; margin: 0 0 4px; } h2 { font-size: 1.2rem; margin: 34px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.verdict { border: 2px solid var(--line); border-left: 10px solid var(--warn); background: var(--card); padding: 12px 16px; border-radius: 6px; }
.verdict.ok { border-left-color: var(--ok); } .verdict.change, .verdict.no-solution { border-left-color: var(--bad); }
.verdict strong { font-size: 1.1rem; }
.badge { display:inline-block; font-weight:700; letter-spacing:.04em; text-transform:uppercase; font-size:.8rem; padding:2px 8px; border-radius:4px; border:1px solid currentColor; margin-right:8px; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto; font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 12px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
figure { margin: 14px 0 22px; } figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; }
ul.problems li { margin: 2px 0; }
code { font-size: 13px; }
@media print { body { background: #fff; color: #000; } figure { break-inside: avoid; } }
"""


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(fid: str, title: str, caption: str, pngs: dict[str, bytes]) -> str:
    dark = f'<source media="(prefers-color-scheme: dark)" srcset="{_uri(pngs["dark"])}">' if "dark" in pngs else ""
    return (f'<figure id="fig-{fid}"><picture>{dark}<img class="plot" data-plot="{fid}" alt="{escape(title)}" '
            f'src="{_uri(pngs["light"])}"></picture><figcaption><strong>{escape(title)}.</strong> '
            f'{escape(caption)}</figcaption></figure>')


def render(d: CapacityReport, figures: dict[str, dict[str, bytes]]) -> str:
    v, vtext = content.verdict(d)
    s = d.summary
    caps = content.captions(d)
    tt = titles()
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{escape(content.title(d))}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(content.title(d))}</h1>",
        f'<p class="sub">audit-tune {escape(d.tool_version)} · seed {d.config.seed} · data window '
        f'{escape(d.window.start_utc or "?")} to {escape(d.window.end_utc or "?")}</p>',
        '<section id="summary"><h2>Summary</h2>',
        f'<div class="verdict {escape(v)}" id="verdict" data-verdict="{escape(v)}"><span class="badge">{escape(v)}</span>'
        f"<strong>{escape(vtext)}</strong></div>",
    ]
    if s.recommended_flags:
        parts.append("<h3>Recommended flags</h3>")
        parts.append('<pre id="recommended-flags">' + escape("\n".join(s.recommended_flags)) + "</pre>")
    parts.append('<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(val)}</dd>"
                                              for k, val in content.key_facts(d)) + "</dl>")
    probs = content.problems(d)
    if probs:
        parts.append('<ul class="problems">' + "".join(f"<li>{escape(p)}</li>" for p in probs) + "</ul>")
    parts.append("</section>")
    parts.append('<section id="flags"><h2>Flag sets compared</h2>' + _table(*content.flags_table(d)))
    if s.per_flag:
        parts.append("<h3>Why each recommended value</h3>" + _table(*content.why_table(d)))
    parts.append("</section>")
    parts.append('<section id="plots"><h2>Evidence</h2>')
    for fid, pngs in figures.items():
        if fid == "loadtest":
            continue
        parts.append(_figure(fid, tt[fid], caps[fid], pngs))
    parts.append("</section>")
    lt = content.loadtest_table(d)
    if lt:
        parts.append('<section id="loadtest"><h2>Load test: observed vs predicted</h2>')
        if "loadtest" in figures:
            parts.append(_figure("loadtest", tt["loadtest"], caps["loadtest"], figures["loadtest"]))
        parts.append(_table(*lt, cls="loadtest"))
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in content.loadtest_notes(d)) + "</ul></section>")
    parts.append('<section id="config"><h2>Effective configuration</h2>')
    parts.append(_table(["item", "value"], [list(r) for r in content.config_table(d)], cls="config"))
    parts.append("<details><summary>Every audit flag of each set</summary>")
    sets = list(d.effective_flags)
    names = list(d.effective_flags[sets[0]])
    parts.append(_table(["flag"] + [content.SET_LABELS[k] for k in sets],
                        [[f"--{n}"] + [d.effective_flags[k][n] for k in sets] for n in names]))
    parts.append("</details><p class=\"sub\">Every number on this page is in data.json next to it.</p></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
