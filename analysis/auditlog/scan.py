"""One pass over audit log files: arrivals, sizes, mix and skipped lines, per file, in parallel.

:func:`scan_file` streams one file in blocks (``reader.iter_blocks``), decodes each block whole
when its lines are clean (``block``) and line by line otherwise (``decode``), and accumulates
per-100 ms arrival counts (``series.Bins``), event sizes by level and stage (``sizes``), the
request mix (``mix``) and skipped lines (``skips``). With ``collect`` it also returns the exact
arrival times (unix seconds) that fall into the given ranges: the second, selective pass that keeps
the busiest stretches exactly.

:func:`scan_files` runs one file per worker process (a local pool of up to ``jobs`` processes,
default the cores available, ``fork`` where available), so several files use every core; each
worker returns its aggregates, not lines; its ``progress`` callback receives
``(bytes read, total bytes, lines read)`` about once a second from every worker's shared counter.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import numpy as np

from audit_tune.analysis.auditlog import decode as dec
from audit_tune.analysis.auditlog.block import CleanEvent, decode_block
from audit_tune.analysis.auditlog.mix import MixKey, MixStats
from audit_tune.analysis.auditlog.reader import OVERLONG, LogFile, TruncatedGzip, first_line, iter_blocks, split_lines
from audit_tune.analysis.auditlog.series import Bins
from audit_tune.analysis.auditlog.sizes import CODES, SizeStats
from audit_tune.analysis.auditlog.skips import OUT_OF_ORDER_TOLERANCE, Skips

_SHARED: Any = None  # (bytes array, lines array) shared with forked workers


@dataclass
class FileResult:
    file: LogFile
    fmt: str
    events: int = 0
    first: float | None = None
    last: float | None = None
    bins: Bins = field(default_factory=Bins)
    sizes: SizeStats = field(default_factory=SizeStats)
    mix: MixStats = field(default_factory=MixStats)
    skips: Skips | None = None
    collected: np.ndarray | None = None


_CLASS = attrgetter("verb", "objectRef", "user", "level", "stage")
_LEVEL_STAGE = attrgetter("level", "stage")
_STAMP = attrgetter("stageTimestamp")
_CHECK = attrgetter("apiVersion", "kind", "stage")
EventLike = dec.Event | CleanEvent


class _Acc:
    """Per-file accumulators, fed one clean batch at a time. Per-event work stays in C (``map``
    over ``attrgetter``, ``Counter``, numpy); Python touches only the batch's distinct classes."""

    def __init__(self, res: FileResult) -> None:
        self.res = res

    def add(self, evs: Sequence[EventLike], lens: Sequence[int] | np.ndarray, raw_of: Callable[[int], bytes] | None,
            ts: Sequence[float] | np.ndarray) -> None:
        """``lens``: bytes per event (all 0: not measured); ``raw_of(i)``: line ``i`` (for the
        groups of a user seen for the first time), None when lines are not JSON events."""
        res = self.res
        mix = res.mix
        none = dec.NO_REF
        batch = Counter(map(_CLASS, evs))
        keys: Counter[MixKey] = Counter()
        users: set[str] = set()
        for (verb, ref, user, lv, st), n in batch.items():
            users.add(user.username)
            if ref is not none:
                keys[(verb, ref, user.username, "", lv, st)] += n
        if none in {k[1] for k in batch}:  # non-resource requests: keyed by their path
            keys.update((e.verb, none, e.user.username, e.requestURI.split("?", 1)[0], e.level, e.stage)
                        for e in evs if e.objectRef is none)
        mix.update_counts(keys)
        groups = mix.groups
        new = {u for u in users if u and u not in groups}
        if new:
            for i, e in enumerate(evs):
                u = e.user.username
                if u in new:
                    groups[u] = dec.groups_of(raw_of(i)) if raw_of is not None else ()
                    new.discard(u)
                    if not new:
                        break
        if len(lens) and (isinstance(lens, np.ndarray) or any(lens)):
            codes = list(map(CODES.get, map(_LEVEL_STAGE, evs)))
            if None in codes:  # a level or stage outside the API's enums: measured one by one
                for e, c, n in zip(evs, codes, lens):
                    if c is None:
                        res.sizes.add(e.level, e.stage, int(n))
                lens = [int(n) for c, n in zip(codes, lens) if c is not None]
                codes = [c for c in codes if c is not None]
            res.sizes.add_many(codes, lens)  # type: ignore[arg-type]
        arr = np.asarray(ts, dtype=np.float64)
        res.bins.add(arr)
        res.events += len(arr)
        lo, hi = float(arr.min()), float(arr.max())
        res.first = lo if res.first is None else min(res.first, lo)
        res.last = hi if res.last is None else max(res.last, hi)


class _FileScan:
    """The state of one file's pass: accumulators, the running maximum time (for out-of-order
    lines), the line count, and the arrival times kept for the trace."""

    def __init__(self, res: FileResult, collect: list[tuple[float, float]] | None, keep_upto: float) -> None:
        self.res, self.collect, self.keep_upto = res, collect, keep_upto
        self.acc = _Acc(res)
        self.runmax = -np.inf
        self.lineno = 0
        self.got: list[np.ndarray] = []
        known, self.kind_ok = dec.KNOWN_VERSIONS, res.fmt != "store"
        self.ok_pairs = ({(v, "Event", False) for v in known} if self.kind_ok
                         else {(v, k, False) for v in (*known, "") for k in ("Event", "")})

    def _in_order(self, arr: np.ndarray) -> bool:
        m = np.maximum.accumulate(np.concatenate([[self.runmax], arr]))[:-1]
        return not bool((arr < m - OUT_OF_ORDER_TOLERANCE).any())

    def fast(self, buf: memoryview) -> bool:
        """A block of clean JSON lines in time order (``block.decode_block``); False (nothing
        counted) when the block needs the line-by-line path."""
        b = decode_block(buf)
        if b is None or not self._in_order(b.times):
            return False
        self.runmax = max(self.runmax, float(b.times.max()))
        starts, sizes = b.starts, b.sizes

        def raw_of(i: int) -> bytes:
            return bytes(buf[int(starts[i]): int(starts[i] + sizes[i])])

        self._keep(b.events, sizes, raw_of, b.times, len(b.events))
        return True

    def slow(self, lines: list[bytes], last: bool) -> None:
        """Lines one by one: every unusable line is classified and counted."""
        fmt, sk = self.res.fmt, self.res.skips
        assert sk is not None
        if fmt == "legacy":
            evs, lens, why = dec.decode_legacy(lines)
        else:
            evs, lens, why = dec.decode_events(lines, fmt)
        nl = len(lines)
        ts: list[float | None] = [None] * nl
        clean = why.count(None) == nl
        if clean:
            try:
                ts = list(map(datetime.timestamp, map(_STAMP, evs)))
                clean = all((v, k, not st) in self.ok_pairs for v, k, st in set(map(_CHECK, evs)))
            except TypeError:  # an event without stageTimestamp
                clean = False
            if clean:
                arr = np.asarray(ts, dtype=np.float64)
                clean = self._in_order(arr)
                if clean:
                    self.runmax = max(self.runmax, float(arr.max()))
        if clean:
            keep = list(range(nl))
        else:
            keep = self._check(lines, last, evs, why, ts)
        if keep:
            if len(keep) < nl:
                evs, lens, lines, ts = ([x[i] for i in keep] for x in (evs, lens, lines, ts))  # type: ignore[assignment]
            kept: list[EventLike] = [e for e in evs if e is not None]
            self._keep(kept, lens, lines.__getitem__ if fmt == "json" else None,
                       np.asarray(ts, dtype=np.float64), nl)
        else:
            self.lineno += nl

    def _check(self, lines: list[bytes], last: bool, evs: list[dec.Event | None], why: list[str | None],
               ts: list[float | None]) -> list[int]:
        """Indices of the usable lines of a batch; every other line is counted with its reason."""
        sk, fmt, known, kind_ok = self.res.skips, self.res.fmt, dec.KNOWN_VERSIONS, self.kind_ok
        assert sk is not None
        keep = []
        nl, lineno = len(lines), self.lineno
        for i in range(nl):
            ev = evs[i]
            if ev is None:
                w = why[i]
                sk.skip(dec.classify(lines[i], last and i == nl - 1, fmt) if w == "?" else (w or dec.NOT_EVENT),
                        lineno + i + 1)
                continue
            if (kind_ok and ev.kind != "Event") or not ev.stage:
                sk.skip(dec.NOT_EVENT, lineno + i + 1)
                continue
            if ev.apiVersion not in known and (ev.apiVersion or kind_ok):
                sk.skip(dec.UNKNOWN_VERSION if ev.apiVersion else dec.NOT_EVENT, lineno + i + 1)
                continue
            if ev.stageTimestamp is None:
                sk.skip(dec.NOT_EVENT, lineno + i + 1)
                continue
            t = ev.stageTimestamp.timestamp()
            if t < self.runmax - OUT_OF_ORDER_TOLERANCE:
                sk.skip(dec.OUT_OF_ORDER, lineno + i + 1)
                continue
            if t > self.runmax:
                self.runmax = t
            ts[i] = t
            keep.append(i)
        return keep

    def _keep(self, evs: Sequence[EventLike], lens: Sequence[int] | np.ndarray, raw_of: Callable[[int], bytes] | None,
              ts: np.ndarray, lines: int) -> None:
        self.lineno += lines
        self.acc.add(evs, lens, raw_of, ts)
        res = self.res
        if self.keep_upto and self.collect is None:
            if res.events <= self.keep_upto:
                self.got.append(ts)
            elif self.got:
                self.got = []
        if self.collect:
            for a, b in self.collect:
                sel = ts[(ts >= a) & (ts < b)]
                if len(sel):
                    self.got.append(sel)


def scan_file(f: LogFile, slot: int = -1, collect: list[tuple[float, float]] | None = None,
              keep_upto: float = 0, fast: bool = True) -> FileResult:
    """One file. ``collect``: return the arrival times inside these ranges. ``keep_upto``: without
    ``collect``, return every arrival time while the file has at most that many events (else None),
    so a small log needs no second pass. ``fast``: try each block of a JSON log whole
    (``block.decode_block``) before reading it line by line; the result is the same either way."""
    fmt = dec.sniff(first_line(f))
    res = FileResult(f, fmt, skips=Skips(f.path))
    sk = res.skips
    assert sk is not None
    st = _FileScan(res, collect, keep_upto)
    prog = [0]
    fast = fast and fmt == "json"
    try:
        for buf, last in iter_blocks(f, prog):
            if buf is OVERLONG:
                st.lineno += 1
                sk.skip(dec.TOO_LONG, st.lineno)
                continue
            if not (fast and not last and st.fast(buf)):
                st.slow(split_lines(buf, last), last)
            if slot >= 0 and _SHARED is not None:
                _SHARED[0][slot] = prog[0]
                _SHARED[1][slot] = st.lineno
    except TruncatedGzip:
        sk.skip(dec.TRUNCATED, st.lineno + 1)
    sk.lines = st.lineno
    sk.used = res.events
    if collect is not None or (keep_upto and res.events <= keep_upto):
        res.collected = np.sort(np.concatenate(st.got)) if st.got else np.zeros(0)
    if slot >= 0 and _SHARED is not None:
        _SHARED[0][slot] = f.size
    return res


def _task(args: tuple) -> FileResult:
    f, slot, collect, keep = args
    return scan_file(f, slot, collect, keep)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # no sched_getaffinity on this platform
        return os.cpu_count() or 1


def scan_files(files: list[LogFile], jobs: int | None = None, collect: dict[str, list[tuple[float, float]]] | None = None,
               progress: Callable[[int, int, int], None] | None = None, keep_upto: float = 0) -> list[FileResult]:
    """Scan every file (one worker process per file, up to ``jobs``, default :func:`available_cores`);
    results in ``files`` order. ``collect`` maps an instance to the ranges whose exact arrival times
    to return."""
    global _SHARED
    total = sum(f.size for f in files)
    tasks = [(f, i, (collect or {}).get(f.instance) if collect is not None else None, keep_upto)
             for i, f in enumerate(files)]
    _SHARED = (mp.RawArray("q", len(files)), mp.RawArray("q", len(files)))
    try:
        workers = min(jobs or available_cores(), len(files))
        if workers <= 1:
            out = []
            for t in tasks:
                out.append(_task(t))
                if progress:
                    progress(sum(_SHARED[0]), total, sum(_SHARED[1]))
            return out
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs: dict[Future, int] = {pool.submit(_task, t): i for i, t in enumerate(tasks)}
            pending = set(futs)
            res: dict[int, FileResult] = {}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for d in done:
                    res[futs[d]] = d.result()
                if progress:
                    progress(sum(_SHARED[0]), total, sum(_SHARED[1]))
            return [res[i] for i in range(len(files))]
    finally:
        _SHARED = None


class RateLine:
    """A progress line on stderr for long reads: bytes, lines/s and ETA, at most every ``every`` s,
    only once the read has taken ``after`` seconds (short reads stay quiet)."""

    def __init__(self, emit: Callable[[str], None], label: str = "reading audit logs", every: float = 2.0,
                 after: float = 2.0) -> None:
        self.emit, self.label, self.every, self.after = emit, label, every, after
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, lines: int) -> None:
        now = time.monotonic()
        el = now - self.t0
        if el < self.after or now - self.last < self.every:
            return
        self.last = now
        self.shown = True
        frac = done / total if total else 1.0
        eta = el * (1 - frac) / frac if frac > 0 else float("nan")
        self.emit(f"{self.label}: {done / 2**20:,.0f} of {total / 2**20:,.0f} MiB ({100 * frac:.0f}%), "
                  f"{lines / el:,.0f} lines/s, ETA {eta:.0f}s")
