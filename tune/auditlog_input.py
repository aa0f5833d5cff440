"""``--audit-log [INSTANCE=]PATH``: audit log files as the history for snapshot, recommend, report
and simulate (``analysis.auditlog``; ``docs/audit-log.md``).

Files are read on ``--jobs`` processes (default: the cores available). Reading shows a progress
bar (a terminal) or line (MiB, lines/s, ETA) on stderr once it takes more than 2 s, fed by every
worker, then one line per file that had unusable lines (how many, why, where). Combined with
``--prometheus-url``, Prometheus is read for the log's window and gives what a log cannot see
(drops, webhook latency and failures); the snapshot's ``audit_log.instances.*.sources`` says which
source every quantity came from.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypedDict

import numpy as np

from audit_tune.analysis.auditlog import LogRead, read_logs, sample_path, to_snapshot
from audit_tune.analysis.auditlog.completeness import MODES
from audit_tune.analysis.auditlog.scan import RateLine
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.basics.jsondata import JsonObject, as_float, as_list, as_object, as_str
from audit_tune.basics.output import Progress, log

if TYPE_CHECKING:
    from audit_tune.analysis.prom_settings import PromSettings
    from audit_tune.sim.workload import Workload

HELP = ("Audit log of one apiserver: a file or a folder of rotated (.gz) files, [INSTANCE=]PATH "
        "(repeatable; default instance: the file or folder name). Also reads a 'tune sink' store.")


@dataclass(frozen=True)
class ReadOptions:
    """How to read: ``jobs`` processes (None: the cores available), and whether to show progress."""

    jobs: int | None = None
    progress: bool = True


class ReplayInfo(TypedDict):
    """What ``tune simulate --audit-log`` replays."""

    instances: list[str]
    events: int
    event_size_bytes: int
    skipped_lines: int


class _Bar:
    """A Rich progress bar (MiB read) on a terminal, for reads that take more than 2 s."""

    def __init__(self, label: str) -> None:
        self.label, self.t0 = label, time.monotonic()
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int, lines: int) -> None:
        if self.bar is None:
            if time.monotonic() - self.t0 < 2.0:
                return
            self.bar = Progress(total / 2**20, self.label)
        self.bar.update(done / 2**20)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def read(specs: list[str], who: str, opts: ReadOptions = ReadOptions(), whole: bool = False) -> LogRead:
    """Read the logs; skipped lines reported once per file on stderr. Progress: a bar on a terminal,
    else a plain line with MiB, lines/s and ETA (``scan.RateLine``)."""
    line: _Bar | RateLine | None = None
    progress = opts.progress
    if progress:
        line = _Bar(f"tune {who}: reading audit logs (MiB)") if sys.stderr.isatty() else \
            RateLine(lambda m: log(f"tune {who}: {m}"))
    try:
        r = read_logs(list(specs), jobs=opts.jobs, progress=line, trace_max_events=math.inf if whole else None)
    finally:
        if isinstance(line, _Bar):
            line.close()
    for m in r.skip_messages():
        log(f"tune {who}: {m}")
    if progress:
        log(f"tune {who}: read {r.lines:,} lines of {len(r.files)} file(s) in {r.seconds:.1f}s "
            f"({r.lines / max(r.seconds, 1e-9):,.0f} lines/s): "
            + ", ".join(f"{k} {v.events:,} events" for k, v in sorted(r.instances.items())))
    return r


def snapshot(specs: list[str], who: str, step: float, log_mode: str = "blocking", prom: PromSettings | None = None,
             selector: str = "", webhook_host: str | None = None, opts: ReadOptions = ReadOptions(),
             say: Callable[[str], None] = lambda m: None) -> JsonObject:
    """An ``audit-tune-snapshot/v1`` dict from the logs (and Prometheus for the same window)."""
    from audit_tune import __version__

    if log_mode not in MODES:
        raise InputError(f"--audit-log-mode {log_mode}: use one of {', '.join(MODES)} (the mode the log backend ran in)")
    r = read(_specs(specs, who), who, opts)
    prom_doc, url = None, ""
    if prom is not None and prom.url:
        prom_doc, url = _prometheus(r, prom, step, selector, webhook_host, who, say), prom.display_url
        window = as_object(as_object(prom_doc["source"], "source")["window"], "source.window")
        step = as_float(window["step"], "source.window.step")
    snap = to_snapshot(r, step, log_mode, prom=prom_doc, prom_url=url, tool_version=__version__)
    for item in as_list(snap["missing"], "missing"):
        m = {k: as_str(v, f"missing.{k}") for k, v in as_object(item, "missing").items()}
        say(f"missing: {m['instance']}: {m['item']}: {m['why']}" + (f" (fix: {m['fix']})" if m.get("fix") else ""))
    return snap


def _prometheus(r: LogRead, prom: PromSettings, step: float, selector: str, webhook_host: str | None, who: str,
                say: Callable[[str], None]) -> JsonObject:
    from audit_tune.analysis.prom import PromClient, SnapshotRequest
    from audit_tune.cli.inputs import take_snapshot_or_say_missing

    prom.validate()
    t0 = min(v.bins.t0 for v in r.instances.values() if v.events)
    t1 = max(v.bins.t1 for v in r.instances.values() if v.events)
    hist = max(math.ceil((t1 - t0) / step) * step, 3 * step)
    req = SnapshotRequest(history=hist, step=step, end=math.ceil(t1), selector=selector, webhook_host=webhook_host)
    say(f"reading the log's window ({hist:.0f}s) from {prom.display_url}")
    try:
        snap = take_snapshot_or_say_missing(PromClient(prom), req, who, say)
    except NotEnoughData as e:
        raise NotEnoughData(f"Prometheus has no audit data for the log's window: {e}") from None
    doc: JsonObject = snap.to_dict()
    return doc


def history(specs: list[str], who: str, prom: PromSettings | None, step: str, selector: str | None, log_mode: str,
            say: Callable[[str], None], opts: ReadOptions = ReadOptions()) -> tuple[dict[str, Any], dict[str, Any]]:
    """``load_history`` for ``--audit-log``: the snapshot dict and where it came from."""
    from audit_tune.sim.units import parse_duration

    st = parse_duration(step, "--step")
    if not st > 0:
        raise InputError("--step: must be > 0s, e.g. 15s")
    snap = snapshot(specs, who, st, log_mode, prom, selector or "", None, opts, say=say)
    src = as_object(snap["source"], "source")
    source = {"kind": "audit log", "audit_log": list(specs), "log_mode": log_mode,
              "prometheus_url": prom.display_url if prom is not None and prom.url else None,
              "selector": src.get("selector"), "window": src["window"]}
    return snap, source


def _specs(specs: list[str], who: str) -> list[str]:
    out = []
    for s in specs:
        if s == "sample":
            p = sample_path()
            if not p.exists():
                raise InputError(f"--audit-log sample: the bundled sample {p} is missing from this install")
            log(f"tune {who}: --audit-log sample: the bundled audit log {p.name} (a real local kube-apiserver "
                "under tune loadtest; an example, not yours)")
            s = f"sample={p}"
        out.append(s)
    return out


def load(who: str, specs: list[str], snapshot: str | None, prom: PromSettings | None, step: str, selector: str | None,
         extra: list[str], current_flags: str | None, say: Callable[[str], None],
         opts: ReadOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tune recommend/report --audit-log``: the history from the logs; the log's mode (complete or
    not) from the flags in force (``--audit-log-mode``)."""
    from audit_tune.cli.inputs import current_flags_of

    if snapshot:
        raise InputError("--snapshot and --audit-log: give one of them (an audit log snapshot is a --snapshot too)")
    current, _ = current_flags_of(current_flags, extra)
    return history(_specs(specs, who), who, prom, step, selector, current.log.mode, say, opts)


def simulate_workload(specs: list[str], opts: ReadOptions = ReadOptions()) -> tuple[Workload, ReplayInfo]:
    """The logs' exact arrivals as a simulator workload: one request per event, at its
    ``stageTimestamp`` (1 ms), one apiserver per instance, each event the instance's mean size."""
    from audit_tune.sim.workload import Arrivals, RequestClass, Workload

    r = read(_specs(specs, "simulate"), "simulate", opts, whole=True)
    names = sorted(k for k, v in r.instances.items() if v.events)
    t0 = min(r.instances[k].bins.t0 for k in names)
    times: list[float] = []
    insts: list[int] = []
    for i, k in enumerate(names):
        t = r.instances[k].trace[0][2] if r.instances[k].trace else np.zeros(0)
        times.extend((t - t0).tolist())
        insts.extend([i] * len(t))
    order = sorted(range(len(times)), key=times.__getitem__)
    times = [times[j] for j in order]
    insts = [insts[j] for j in order]
    sizes = [r.instances[k].sizes.mean or 850 for k in names]
    size = int(round(sum(s * r.instances[k].events for s, k in zip(sizes, names)) / sum(r.instances[k].events for k in names)))
    wl = Workload(Arrivals("trace", trace=tuple(times), trace_instances=tuple(insts) if len(names) > 1 else ()),
                  duration=max(times[-1] + 1e-3, 1e-3),
                  classes=(RequestClass("audit-log", 1.0, "Metadata", sizes=(size, size, size, size)),),
                  policy_omit_stages=frozenset({"RequestReceived"}), instances=len(names)).validate()
    return wl, {"instances": names, "events": len(times), "event_size_bytes": size,
                "skipped_lines": sum(s.skipped for v in r.instances.values() for s in v.skips)}
