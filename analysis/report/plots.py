"""The report's figures, drawn with matplotlib (Agg) from the assembled data (``data.json``).

Every figure is drawn once per page theme (``light``, ``dark``): the HTML shows the one matching
``prefers-color-scheme``; Markdown links the light PNGs. Colours are the Okabe-Ito palette
(colour-blind safe), and each flag set also has its own line style and marker so the plots read in
grey print. PNGs carry no timestamp or software tag, so the same data gives the same bytes.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from audit_tune.analysis.report.model import CapacityReport  # noqa: E402
from audit_tune.sim.units import parse_size  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

# Okabe & Ito (2008), "Color Universal Design"
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}

#: Colour by role (background, text, each flag set, observed, predicted).
Theme = dict[str, str]

THEMES: dict[str, Theme] = {
    "light": {"bg": "#ffffff", "fg": "#1b1f24", "grid": "#d0d4d9", "muted": "#5a6169",
              "current": OKABE_ITO["vermillion"], "recommended": OKABE_ITO["blue"],
              "rule_of_thumb": OKABE_ITO["green"], "observed": OKABE_ITO["purple"], "peak": OKABE_ITO["orange"],
              "predicted": OKABE_ITO["sky"]},
    "dark": {"bg": "#16191d", "fg": "#e8eaed", "grid": "#3a4048", "muted": "#a9b0b8",
             "current": OKABE_ITO["orange"], "recommended": OKABE_ITO["sky"],
             "rule_of_thumb": OKABE_ITO["green"], "observed": OKABE_ITO["purple"], "peak": OKABE_ITO["yellow"],
             "predicted": OKABE_ITO["blue"]},
}
STYLE = {  # line style and marker per flag set: distinguishable without colour
    "current": {"ls": "--", "marker": "s", "label": "current"},
    "recommended": {"ls": "-", "marker": "o", "label": "recommended"},
    "rule_of_thumb": {"ls": ":", "marker": "^", "label": "rule of thumb (kubernetes.io)"},
}
DPI = 100


def _rc(th: Theme) -> dict[RcKeyType, str | float | bool]:
    return {"figure.facecolor": th["bg"], "axes.facecolor": th["bg"], "savefig.facecolor": th["bg"],
            "text.color": th["fg"], "axes.labelcolor": th["fg"], "axes.edgecolor": th["muted"],
            "xtick.color": th["fg"], "ytick.color": th["fg"], "grid.color": th["grid"], "axes.grid": True,
            "grid.linewidth": 0.6, "font.size": 10, "axes.titlesize": 11, "legend.frameon": True,
            "legend.facecolor": th["bg"], "legend.edgecolor": th["grid"], "legend.labelcolor": th["fg"],
            "lines.linewidth": 1.8, "lines.markersize": 5, "svg.hashsalt": "audit-tune",
            "font.family": "DejaVu Sans"}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _time_axis(seconds: float) -> tuple[float, str]:
    if seconds <= 180:
        return 1.0, "s"
    if seconds <= 3 * 3600:
        return 60.0, "min"
    if seconds <= 3 * 86400:
        return 3600.0, "h"
    return 86400.0, "days"


def _plain(ax: Axes, which: str = "x") -> None:
    """Log axis with plain numbers (0.01, 1, 200, 4,000), not 10^k."""
    fmt = FuncFormatter(lambda v, _p: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(fmt)
    lo, hi = (ax.get_xlim() if which == "x" else ax.get_ylim())
    if hi / max(lo, 1e-12) < 300:  # two decades or less: also label 2x and 5x

        def minor(v: float, _p: int | None) -> str:
            lead = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
            return fmt(v, _p) if lead in (2, 5) else ""

        axis.set_minor_formatter(FuncFormatter(minor))
    else:
        axis.set_minor_formatter(NullFormatter())


def _sets(d: Mapping[str, object]) -> list[str]:
    return [k for k in STYLE if k in d]


# ------------------------------------------------------------------------------------------------
def history(data: CapacityReport, th: Theme) -> Figure:
    hs = data.history[:6]
    fig, axes = plt.subplots(len(hs), 1, figsize=(9, 2.6 * len(hs) + 0.6), squeeze=False)
    span = max((h["t"][-1] if h["t"] else 0.0) for h in hs)
    div, unit = _time_axis(span)
    for ax, h in zip(axes[:, 0], hs):
        t = [x / div for x in h["t"]]
        ax.plot(t, h["event_rate"], color=th["observed"], lw=1.2, label="observed event rate")
        if h["peak_rate"]:
            ax.plot([x / div for x in h["peak_t"]], h["peak_rate"], color=th["peak"], lw=0.8, ls="-.",
                    label=f"peak over {h['peak_window']}")
        top = max(max(h["event_rate"] or [0]), max(h["peak_rate"] or [0]))
        caps = {k: v for k, v in h["capacity_events_per_second"].items() if v and k in ("current", "recommended")}
        for k, c in caps.items():
            ax.axhline(c, color=th[k], ls=STYLE[k]["ls"], lw=1.6,
                       label=f"{STYLE[k]['label']} capacity qps x max-size = {c:,.0f}/s")
        hi = max([top] + list(caps.values()))
        if top > 0 and hi / top > 20:
            ax.set_yscale("log")
            _plain(ax, "y")
        else:
            ax.set_ylim(0, hi * 1.15 if hi else 1)
        ax.set_ylabel("audit events/s")
        ax.set_title(f"{h['instance']}: observed rate against drain capacity")
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel(f"time since window start ({unit})")
    fig.tight_layout()
    return fig


def knee(data: CapacityReport, th: Theme) -> Figure:
    k = data.knee
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for name in _sets(k["series"]):
        st = STYLE[name]
        ax.plot(k["rates"], [100 * x for x in k["series"][name]], color=th[name], ls=st["ls"], marker=st["marker"],
                label=st["label"])
        cap = data.summary.capacity_events_per_second.get(name)
        if cap:
            ax.axvline(cap, color=th[name], ls=st["ls"], lw=0.9, alpha=0.8)
    mean = data.config.simulated_stretch.mean_event_rate
    h = data.config.objective["headroom"]
    ax.axvline(mean, color=th["fg"], ls="-.", lw=1.1, label=f"observed mean of the stretch {mean:,.0f}/s")
    ax.axvline(mean * h, color=th["muted"], ls=(0, (1, 3)), lw=1.3, label=f"x headroom {h:g} = {mean * h:,.0f}/s")
    ax.set_xscale("log")
    _plain(ax)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("mean audit event rate (events/s, log scale); thin vertical lines: qps x max-size")
    ax.set_ylabel("events dropped (%)")
    ax.set_title(f"The knee: drops against load (busiest {k['stretch_seconds']:g} s replayed at each rate)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def peak_window(data: CapacityReport, th: Theme) -> Figure:
    p = data.peak_window
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.6), sharex=True)
    for name in [n for n in ("current", "recommended") if n in p["sets"]]:
        s, st = p["sets"][name], STYLE[name]
        dt = s["occupancy_interval_seconds"]
        t = [i * dt for i in range(len(s["occupancy_max"]))]
        a1.step(t, s["occupancy_max"], where="post", color=th[name], ls=st["ls"], label=f"{st['label']}")
        a1.axhline(s["buffer_size"], color=th[name], ls=st["ls"], lw=0.8, alpha=0.7)
        a1.annotate(f"{st['label']} buffer {s['buffer_size']:,}", (0, s["buffer_size"]), fontsize=8,
                    color=th[name], xytext=(2, 2), textcoords="offset points")
        a2.plot(s["drops_t"], s["drops_cumulative"], color=th[name], ls=st["ls"], marker=st["marker"],
                label=f"{st['label']}: {s['drops_cumulative'][-1]:,} lost")
    a1.set_ylabel("events in buffer (max per interval)")
    a1.set_title(f"Busiest {p['seconds']:g} s at the observed rate: buffer occupancy and drops")
    a1.legend(loc="upper right", fontsize=8)
    a2.set_ylabel("events lost (cumulative)")
    a2.set_xlabel("time into the busiest stretch (s)")
    a2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def latency_cdf(data: CapacityReport, th: Theme) -> Figure:
    p = data.peak_window
    fig, ax = plt.subplots(figsize=(9, 4.0))
    for name in _sets(p["sets"]):
        s, st = p["sets"][name], STYLE[name]
        if not s["cdf"]["seconds"]:
            continue
        ax.step([max(x, 1e-4) for x in s["cdf"]["seconds"]], [100 * q for q in s["cdf"]["q"]], where="post",
                color=th[name], ls=st["ls"], marker=st["marker"], markevery=5, label=st["label"])
    lim = data.config.objective["max_delivery_latency"]
    ax.set_xscale("log")
    _plain(ax)
    ax.set_ylim(0, 101)
    ax.set_xlabel(f"delivery latency, event to receiver (s, log scale); objective p99 <= {lim}")
    ax.set_ylabel("events delivered within (%)")
    ax.set_title("Delivery latency CDF over the busiest stretch (delivered events)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def latency_sweep(data: CapacityReport, th: Theme) -> Figure:
    s = data.latency_sweep
    lat = s["webhook_latency_seconds"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    for name in _sets(s["sets"]):
        d, st = s["sets"][name], STYLE[name]
        a1.plot(lat, [max(x, 0.5) for x in d["max_inflight_batches"]], color=th[name], ls=st["ls"],
                marker=st["marker"], label=st["label"])
        a2.plot(lat, [m / 2**20 for m in d["peak_memory_bytes"]], color=th[name], ls=st["ls"],
                marker=st["marker"], label=st["label"])
    budget = data.config.objective["memory_budget"]
    for ax in (a1, a2):
        ax.set_xscale("log")
        _plain(ax)
        ax.set_xlabel("webhook latency per POST (s, log scale)")
    a1.set_yscale("log")
    _plain(a1, "y")
    a1.set_ylabel("most batches in flight")
    a1.set_title("In-flight batches (goroutines)")
    a2.set_ylabel("peak audit memory (MiB)")
    a2.set_title(f"Backend memory (budget {budget})")
    a1.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def sensitivity(data: CapacityReport, th: Theme) -> Figure:
    s = data.sensitivity
    if s is None:
        raise ValueError("the report has no sensitivity grid to plot")
    z = [[100 * v for v in row] for row in s["drop_fraction"]]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    im = ax.imshow(z, origin="lower", aspect="auto", cmap="cividis", vmin=0, vmax=max(1.0, max(map(max, z))))
    ax.set_xticks(range(len(s["qps"])), [f"{q:g}" for q in s["qps"]])
    ax.set_yticks(range(len(s["max_size"])), [str(m) for m in s["max_size"]])
    ax.grid(False)
    vmax = im.get_clim()[1]
    ci = s["max_size"].index(s["chosen"]["max_size"])
    cq = min(range(len(s["qps"])), key=lambda j: abs(s["qps"][j] - s["chosen"]["qps"]))
    for i, row in enumerate(z):
        for j, v in enumerate(row):
            if (i, j) == (ci, cq):
                continue
            ax.text(j, i, _cell(v), ha="center", va="center", fontsize=7.5,
                    color="#000000" if v > 0.55 * vmax else "#ffffff")
    ax.add_patch(Rectangle((cq - 0.5, ci - 0.5), 1, 1, fill=False, ec=OKABE_ITO["vermillion"], lw=2.5, hatch="//"))
    ax.annotate(f"chosen: {_cell(z[ci][cq])}", (cq, ci), ha="center", va="center", color="#000000", fontsize=8,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "#ffffff", "ec": OKABE_ITO["vermillion"], "lw": 1.2})
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("events dropped (%)")
    cb.ax.yaxis.set_tick_params(color=th["fg"])
    ax.set_xlabel("--audit-webhook-batch-throttle-qps (batches/s)")
    ax.set_ylabel("--audit-webhook-batch-max-size (events)")
    ax.set_title(f"Sensitivity: drops at the busiest stretch x {s['scale']:g} (other flags as recommended)")
    fig.tight_layout()
    return fig


def _cell(v: float) -> str:
    """A drop percentage for a heatmap cell: exactly 0 reads "0", tiny losses are not rounded away."""
    if v == 0:
        return "0"
    if v < 0.1:
        return "<0.1"
    return f"{v:.1f}" if v < 99.95 else "100"


def loadtest(data: CapacityReport, th: Theme) -> Figure:
    lt = data.loadtest
    if lt is None:
        raise ValueError("the report has no load test to plot")
    rows = [r for r in lt.rows if r.observed is not None or r.predicted is not None]
    counts = [r for r in rows if "latency" not in r.metric]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = range(len(counts))
    w = 0.38
    obs = [r.observed or 0 for r in counts]
    pre = [r.predicted or 0 for r in counts]
    b1 = ax.bar([i - w / 2 for i in x], obs, w, color=th["observed"], hatch="//", ec=th["fg"], lw=0.6, label="observed (real apiserver)")
    b2 = ax.bar([i + w / 2 for i in x], pre, w, color=th["predicted"], hatch="..", ec=th["fg"], lw=0.6, label="predicted (simulator)")
    for bars in (b1, b2):
        for b in bars:
            ax.annotate(f"{b.get_height():,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(list(x), [r.metric for r in counts])
    ax.set_ylabel("audit events in the run")
    ax.set_title(f"Load test {lt.run_id}: observed vs predicted")
    ax.margins(y=0.15)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def frontier(data: CapacityReport, th: Theme) -> Figure:
    """Outage tolerance against apiserver memory over the candidates (nothing survives both), and
    what the outage and one twice as long lose."""
    pts = data.frontier
    scen = list(dict.fromkeys(p.scenario for p in pts))
    need = data.outage_seconds
    budget = data.config.objective["memory_budget"]
    budget_b = parse_size(str(budget), "--memory-budget")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    marks = ("o", "s", "^", "D")
    for k, sc in enumerate(scen):
        ps = [p for p in pts if p.scenario == sc]
        x = [p.outage_tolerance_seconds or 0.0 for p in ps]
        y = [p.peak_apiserver_memory_bytes / 2**20 for p in ps]
        a1.plot(x, y, ls="", marker=marks[k % len(marks)], color=th["recommended" if k == 0 else "current"],
                markersize=7, label=sc)
        # points that (nearly) coincide share one label: within 1 s and 3 % of the highest memory
        gy = 0.03 * max(y + [budget_b / 2**20])
        at: dict[tuple[int, int], tuple[float, float, list[str]]] = {}
        for p, xi, yi in zip(ps, x, y):
            at.setdefault((round(xi), round(yi / gy)), (xi, yi, []))[2].append(("≥" if p.at_least else "") + p.flag_set)
        for xi, yi, labels in at.values():
            a1.annotate("\n".join(labels), (xi, yi), fontsize=7, color=th["muted"], xytext=(5, 0),
                        textcoords="offset points", va="center")
        if sc in need:
            a1.axvline(need[sc], color=th["fg"], ls="-.", lw=1.0, label=f"{sc}: outage to survive")
    a1.axhline(budget_b / 2**20, color=th["peak"], ls="--", lw=1.2, label=f"--memory-budget {budget}")
    a1.set_xlabel("outage tolerance (s): longest outage losing nothing within the budget")
    a1.set_ylabel("peak apiserver memory for audit (MiB)")
    a1.set_title("Frontier: tolerance against memory")
    a1.legend(loc="best", fontsize=7)
    names = [f"{p.flag_set} ({p.scenario.split(' ')[0]})" if len(scen) > 1 else p.flag_set for p in pts]
    yy = range(len(pts))
    w = 0.38
    a2.barh([i - w / 2 for i in yy], [p.lost for p in pts], w, color=th["current"], hatch="//", ec=th["fg"], lw=0.5,
            label="lost in the outage")
    a2.barh([i + w / 2 for i in yy], [p.lost_if_twice_as_long or 0 for p in pts], w, color=th["predicted"],
            hatch="..", ec=th["fg"], lw=0.5, label="lost if 2x longer")
    a2.set_yticks(list(yy), names, fontsize=7)
    a2.set_xlabel("audit events lost")
    a2.set_title("What a longer outage loses")
    a2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


FIGURES: list[tuple[str, str, Callable[[CapacityReport, Theme], Figure], Callable[[CapacityReport], bool]]] = [
    ("history", "Observed event rate and drain capacity", history, lambda d: bool(d.history)),
    ("knee", "Drops against event rate (the knee)", knee, lambda d: bool(d.knee["series"])),
    ("peak-window", "Buffer occupancy and drops over the busiest stretch", peak_window,
     lambda d: bool(d.peak_window["sets"])),
    ("latency-cdf", "Delivery latency CDF", latency_cdf, lambda d: bool(d.peak_window["sets"])),
    ("inflight-memory", "In-flight batches and memory against webhook latency", latency_sweep,
     lambda d: bool(d.latency_sweep["sets"])),
    ("sensitivity", "Sensitivity: qps x max-size", sensitivity, lambda d: d.sensitivity is not None),
    ("frontier", "Receiver outage: tolerance against memory (nothing survives both)", frontier,
     lambda d: bool(d.frontier)),
    ("loadtest", "Load test: observed vs predicted", loadtest, lambda d: d.loadtest is not None),
]


def render_all(data: CapacityReport, themes: tuple[str, ...] = ("light", "dark")) -> dict[str, dict[str, bytes]]:
    """``{figure id: {theme: PNG bytes}}`` for every figure the data supports."""
    out: dict[str, dict[str, bytes]] = {}
    for fid, _title, fn, ok in FIGURES:
        if not ok(data):
            continue
        out[fid] = {}
        for t in themes:
            with plt.rc_context(_rc(THEMES[t])):
                out[fid][t] = _png(fn(data, THEMES[t]))
    return out


def titles() -> dict[str, str]:
    return {fid: title for fid, title, _fn, _ok in FIGURES}

