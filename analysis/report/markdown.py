"""``report.md``: the same findings as the HTML page, plots linked as PNG files beside it."""
from __future__ import annotations

from audit_tune.analysis.report import content
from audit_tune.analysis.report.model import CapacityReport
from audit_tune.analysis.report.plots import titles


def _cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def png_name(fid: str) -> str:
    return f"{fid}.png"


def render(d: CapacityReport, figures: dict[str, dict[str, bytes]]) -> str:
    v, vtext = content.verdict(d)
    s = d.summary
    caps = content.captions(d)
    tt = titles()
    out = [f"# {content.title(d)}", "",
           f"audit-tune {d.tool_version} · seed {d.config.seed} · data window "
           f"{d.window.start_utc or '?'} to {d.window.end_utc or '?'}", "",
           "## Summary", "", f"**{v.upper()}: {vtext}**", ""]
    if s.recommended_flags:
        out += ["Recommended flags:", "", "```", *s.recommended_flags, "```", ""]
    out += [f"- **{k}**: {val}" for k, val in content.key_facts(d)] + [""]
    probs = content.problems(d)
    if probs:
        out += [f"- {p}" for p in probs] + [""]
    out += ["## Flag sets compared", "", _table(*content.flags_table(d)), ""]
    if s.per_flag:
        out += ["### Why each recommended value", "", _table(*content.why_table(d)), ""]
    out += ["## Evidence", ""]
    for fid in figures:
        if fid == "loadtest":
            continue
        out += [f"### {tt[fid]}", "", f"![{tt[fid]}]({png_name(fid)})", "", caps[fid], ""]
    lt = content.loadtest_table(d)
    if lt:
        out += ["## Load test: observed vs predicted", ""]
        if "loadtest" in figures:
            out += [f"![{tt['loadtest']}]({png_name('loadtest')})", "", caps["loadtest"], ""]
        out += [_table(*lt), ""] + [f"- {n}" for n in content.loadtest_notes(d)] + [""]
    out += ["## Effective configuration", "", _table(["item", "value"], [list(r) for r in content.config_table(d)]), "",
            "Every number in this report is in [data.json](data.json); the same report as one page: "
            "[index.html](index.html).", ""]
    return "\n".join(out)
