"""The log backend's flags (``--audit-log-mode``, ``--audit-log-batch-*``) when ``--audit-log-path``
is set: blocking mode's added request latency against batch mode's throughput and buffer.

The model mirrors ``plugin/pkg/audit/log/backend.go``: every event is encoded and written with its
own ``Write`` call to the lumberjack logger (``gopkg.in/natefinch/lumberjack.v2``), which appends to
the file under a mutex and, when the file would pass ``--audit-log-maxsize`` MiB, renames it and
opens a new one. So one event costs one write ``c`` (seconds), whatever the mode:

* ``blocking`` (the default): the request's goroutine writes its events itself: each request waits
  ``events per request x c``; a disk that stalls for ``D`` blocks every request for up to ``D``,
  and nothing is lost;
* ``batch``: the buffered backend writes batches on its one (synchronous) delegate goroutine, so it
  drains ``min(1 / c, qps x max-size)`` events/s; the buffer absorbs what arrives faster, and
  during a stall ``D`` it must hold ``rate x D`` events or drop the rest
  (``apiserver_audit_error_total{plugin="log"}`` is not incremented for those; they are
  ``buffered`` drops).

The write cost comes from ``--log-write-latency`` or from :func:`probe_write_cost`, a short probe
on this host that appends audit-sized lines one write each and rotates like lumberjack: it measures
this host's disk, not the apiserver's.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict

from audit_tune.basics.errors import InputError
from audit_tune.sim.config import AuditFlags, BackendOptions, BatchOptions
from audit_tune.sim.units import format_duration, format_size, parse_duration

PROBE_LINES = 4000
PROBE_ROTATE_BYTES = 1 << 20  # the probe rotates every MiB so that a few rotations are timed
LOG_FLAGS = ("audit-log-mode", "audit-log-batch-buffer-size", "audit-log-batch-max-size", "audit-log-batch-max-wait",
             "audit-log-batch-throttle-enable")


@dataclass(frozen=True)
class WriteCost:
    per_event: float  # seconds per event write, rotation amortised
    source: str


def probe_write_cost(event_size: int, maxsize_mib: int, lines: int = PROBE_LINES, folder: str | None = None) -> WriteCost:
    """Append ``lines`` lines of ``event_size`` bytes, one ``write`` each on an ``O_APPEND`` file (as
    lumberjack's ``*os.File``), renaming the file and opening a new one every MiB; the rotation cost
    is amortised over ``--audit-log-maxsize`` (0 = lumberjack's 100 MiB)."""
    line = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"' +
            b"x" * max(event_size - 80, 1) + b'"}\n')
    with tempfile.TemporaryDirectory(prefix="audit-tune-logprobe-", dir=folder) as d:
        path = Path(d) / "audit.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written, rot_time, rotations = 0, 0.0, 0
        t0 = time.perf_counter()
        for _ in range(lines):
            if written + len(line) > PROBE_ROTATE_BYTES:
                r0 = time.perf_counter()
                os.close(fd)
                path.rename(Path(d) / f"audit-{rotations}.log")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                rot_time += time.perf_counter() - r0
                rotations += 1
                written = 0
            os.write(fd, line)
            written += len(line)
        total = time.perf_counter() - t0
        os.close(fd)
    per_write = (total - rot_time) / lines
    per_rotation = rot_time / rotations if rotations else 0.0
    lines_per_file = (maxsize_mib or 100) * (1 << 20) / len(line)
    cost = per_write + per_rotation / lines_per_file
    return WriteCost(cost, f"measured on THIS host, not the apiserver's: {lines} writes of {len(line)} B with "
                           f"{rotations} rotations, {cost * 1e6:.1f} us per event (pass --log-write-latency to use "
                           "the apiserver's disk figure)")


def write_cost(given: str | None, event_size: int, maxsize_mib: int) -> WriteCost:
    if given:
        c = parse_duration(given, "--log-write-latency")
        if not c > 0:
            raise InputError(f"--log-write-latency {given}: must be > 0, e.g. 20us")
        return WriteCost(c, "--log-write-latency")
    return probe_write_cost(event_size, maxsize_mib)


def parse_stall(text: str | None) -> float:
    if not text:
        return 0.0
    d = parse_duration(text, "--tolerate-log-stall")
    if not d > 0 or not math.isfinite(d):
        raise InputError(f"--tolerate-log-stall {text}: must be > 0, e.g. 30s")
    return d


def _nice(x: float) -> int:
    e = 10 ** math.floor(math.log10(max(x, 1)))
    return int(next(m * e for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * e >= x))


class LogJudgementDoc(TypedDict):
    name: str
    flags: list[str]
    drain_events_per_second: float | None
    added_request_latency_seconds: float
    stall_added_request_latency_seconds: float
    stall_loss_events: int
    memory_bytes: int
    ok: bool
    violations: list[str]


class LogAssessmentDoc(TypedDict):
    write_cost_seconds: float
    write_cost_source: str
    stall_seconds: float
    peak_event_rate: float
    flag_sets: list[LogJudgementDoc]
    recommended_flags: list[str]


@dataclass
class LogJudgement:
    """A log backend flag set under the peak and the stall."""

    name: str
    flags: AuditFlags
    drain: float  # events/s (inf for blocking: the request pays instead)
    added_latency: float  # seconds each request waits for its writes (blocking) else 0
    stall_added_latency: float  # blocking: a stall holds each request this long
    stall_loss: float  # batch: events the buffer cannot hold during the stall, at the peak
    memory: int
    violations: list[str]

    def to_dict(self) -> LogJudgementDoc:
        shown = LOG_FLAGS if self.flags.log.mode == "batch" else LOG_FLAGS[:1]
        return {"name": self.name, "flags": self.flags.to_flags(include=shown),
                "drain_events_per_second": None if math.isinf(self.drain) else round(self.drain, 1),
                "added_request_latency_seconds": self.added_latency,
                "stall_added_request_latency_seconds": self.stall_added_latency,
                "stall_loss_events": round(self.stall_loss), "memory_bytes": self.memory,
                "ok": not self.violations, "violations": self.violations}


def judge(name: str, f: AuditFlags, cost: float, peak: float, headroom: float, epr: float, size: int,
          stall: float, budget: int) -> LogJudgement:
    b = f.log
    viol: list[str] = []
    if b.mode == "batch":
        c = b.batch
        drain = 1.0 / cost
        if c.throttle_enable:
            drain = min(drain, c.effective_qps * c.max_batch_size)
        need = peak * headroom
        if drain < need:
            viol.append(f"log batch drain {drain:,.0f} ev/s < peak x {headroom:g} = {need:,.0f} ev/s")
        loss = max(0.0, peak * stall - c.buffer_size) if stall else 0.0
        if loss:
            viol.append(f"a {format_duration(stall)} log stall drops about {loss:,.0f} events (buffer {c.buffer_size})")
        mem = int((c.buffer_size + c.max_batch_size) * size)
        if mem > budget:
            viol.append(f"log buffer {format_size(mem)} > --memory-budget")
        return LogJudgement(name, f, drain, 0.0, 0.0, loss, mem, viol)
    lat = epr * cost
    if stall:
        viol.append(f"a {format_duration(stall)} log stall blocks every API request for up to {format_duration(stall)} "
                    "(blocking mode writes in the request)")
    return LogJudgement(name, f, math.inf, lat, stall, 0.0, 0, viol)


def recommend_log(current: AuditFlags, cost: float, peak: float, headroom: float, size: int, stall: float) -> AuditFlags:
    """Batch mode sized for the peak x headroom: a batch is what arrives in 100 ms, the buffer holds
    the stall (or 5 s) at peak x headroom, written as fast as the disk allows (no throttle)."""
    need = peak * headroom
    ms = max(1, _nice(need * 0.1))
    buf = max(_nice(need * max(stall, 5.0) * 1.0), 2 * ms, 1000)
    return replace(current, log=BackendOptions("batch", BatchOptions(buf, ms, 1.0, False, 0.0, 0, async_delegate=False),
                                               current.log.truncate))


@dataclass(frozen=True)
class LogAssessment:
    """The log backend section of the report: the write cost used, the stall, and the flag sets judged
    (current, blocking when current is not, recommended)."""

    write_cost_seconds: float
    write_cost_source: str
    stall_seconds: float
    peak_event_rate: float
    flag_sets: list[LogJudgement]
    recommended_flags: list[str]

    @property
    def current_violations(self) -> list[str]:
        return list(self.flag_sets[0].violations)

    def to_dict(self) -> LogAssessmentDoc:
        return {"write_cost_seconds": self.write_cost_seconds, "write_cost_source": self.write_cost_source,
                "stall_seconds": self.stall_seconds, "peak_event_rate": self.peak_event_rate,
                "flag_sets": [r.to_dict() for r in self.flag_sets], "recommended_flags": self.recommended_flags}


def assess_log(current: AuditFlags, peak: float, headroom: float, epr: float, size: int, budget: int,
               given_cost: str | None, stall_text: str | None) -> LogAssessment | None:
    """The log section of the report, or None when ``--audit-log-path`` is not set."""
    stall = parse_stall(stall_text)
    if not current.log_file.path:
        return None
    wc = write_cost(given_cost, size, current.log_file.maxsize)
    rec = recommend_log(current, wc.per_event, peak, headroom, size, stall)
    blocking = replace(current, log=replace(current.log, mode="blocking"))
    rows = [judge("current", current, wc.per_event, peak, headroom, epr, size, stall, budget)]
    if current.log.mode != "blocking":
        rows.append(judge("blocking", blocking, wc.per_event, peak, headroom, epr, size, stall, budget))
    rows.append(judge("recommended", rec, wc.per_event, peak, headroom, epr, size, stall, budget))
    return LogAssessment(wc.per_event, wc.source, stall, round(peak, 1), rows, rec.to_flags(include=LOG_FLAGS))
