"""The sink's event store: an append-only JSONL file of chained records, one per audit event.

Record format and chain: :mod:`loadgen.chain`; reading, recovery rules and ``verify``:
:mod:`loadgen.store_scan`. ``STORE.head`` holds ``{"seq","hash","batch","offset","alg"}`` of
the last acknowledged record; it exists from the moment the store is created.

Write order for one batch (``fsync=always``), each step finished before the next:

1. append the batch's lines to ``STORE`` and fsync it;
2. write the new head to ``STORE.head.tmp`` and fsync it;
3. rename it over ``STORE.head``, fsync the folder;
4. only then return, so the sink answers 200.

A crash between any two steps leaves whole batches past the head, or a batch cut short, both
recognised at start-up: whole batches are re-anchored (a new head), a cut-short batch and a
torn line are truncated away, and each is logged. Neither was acknowledged.

Any write error (ENOSPC, EIO, ...) rolls the file back to the last anchored offset and raises
:class:`StoreUnavailable` (the sink answers 503 with ``Retry-After``); every later batch tries
again, so the sink answers 200 as soon as the store can take writes. ``fsync=interval|never``
skip the fsyncs (the head is still written last); after an OS crash or power loss they may lose
acknowledged batches, and the store may then be refused as truncated.

One writer per store: ``STORE.lock`` is held with ``flock`` for the writer's lifetime (a
symlinked ``STORE`` is its target, so every name of one store shares its lock and head).
Batch ids count up from the last one in the store, assigned by the one thread writing, so they
never repeat. Batches that arrive while a write is under way are written together by the next
round (group commit), which shares the fsyncs among them.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.basics.output import log
from audit_tune.loadgen.chain import GENESIS, Chain, ChainError, encode_event, record_line
from audit_tune.loadgen.store_scan import Head, Summary, head_path, judge, read_head, verify

__all__ = ["EventStore", "ChainError", "StoreUnavailable", "Summary", "verify", "head_path", "FSYNC_POLICIES",
           "GENESIS", "lock_path"]

FSYNC_POLICIES = ("always", "interval", "never")


class StoreUnavailable(ServiceError):
    """The store could not take this batch; it was rolled back (the sink answers 503)."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _real(path: Path) -> Path:
    """A symlinked store is its target: lock and head sit beside the real file, so two names for
    one store share one lock."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Job:
    """One batch waiting for (or done with) a group commit."""

    __slots__ = ("events", "received", "done", "error")

    def __init__(self, events: list[bytes], received: float) -> None:
        self.events, self.received = events, received
        self.done = False
        self.error: StoreUnavailable | None = None

    def result(self) -> int:
        if self.error is not None:
            raise self.error
        return len(self.events)


class EventStore:
    """Appends batches to ``path`` under an exclusive lock, recovering from a crash on open.

    Thread-safe: the sink calls :meth:`append_batch` from worker threads; one thread writes at a
    time, each batch stays whole, and batches are stored in the order they were queued.
    """

    def __init__(self, path: str | os.PathLike, fsync: str = "always", fsync_interval: float = 1.0,
                 key: bytes | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise InputError(f"--fsync {fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        self.path = _real(Path(path))
        if not self.path.parent.is_dir():
            raise InputError(f"--store {self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise InputError(f"--store {self.path}: is a folder; give a file name")
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"--store {self.path}: not a regular file (a device, FIFO or socket cannot hold a store)")
        self.fsync, self.fsync_interval = fsync, fsync_interval
        self.chain = Chain(key)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[_Job] = []
        self._leading = False
        self._lockfd = self._take_lock()
        self.recovered: list[str] = []
        self.events_stored = 0
        self.bytes_written = 0
        self._last_sync = time.monotonic()
        self._rollback_pending = False
        try:
            self._open()
        except OSError as e:
            os.close(self._lockfd)
            raise InputError(f"--store {self.path}: {e.strerror or e} ({getattr(e, 'filename', '') or self.path})") from None
        except BaseException:
            os.close(self._lockfd)
            raise

    def _take_lock(self) -> int:
        lp = lock_path(self.path)
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise InputError(f"--store {self.path}: cannot open lock file {lp.name}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"--store {self.path}: another sink is writing to it (lock {lp.name} is held); "
                             "one writer per store") from None
        return fd

    def _open(self) -> None:
        empty = not self.path.exists() or self.path.stat().st_size == 0
        if empty and read_head(self.path) is None:
            self._commit_head(Head(-1, GENESIS, -1, 0, self.chain.alg), sync=True)
        fresh = not self.path.exists() and (read_head(self.path) or Head(0, "")).seq < 0
        try:
            j = None if fresh else judge(self.path, self.chain)
        except ChainError as e:
            raise ChainError(f"--store {self.path}: refusing to serve: {e}") from None
        head = read_head(self.path)
        assert head is not None
        self.seq, self.prev, self.end, self.last_batch = head.seq + 1, head.hash, head.offset or 0, head.batch
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if j is None:
            return
        s = j.scan
        if j.cut_bytes:
            os.ftruncate(self._fd, s.end)
            os.fsync(self._fd)
            self._note(f"cut {j.cut_bytes} bytes after offset {s.end} ({j.cut_records} records of a batch cut "
                       f"short{' and a torn line' if s.torn_bytes else ''}): written before a crash, never "
                       "acknowledged")
        if j.tail_events:
            self.seq, self.prev, self.end, self.last_batch = s.events, s.last_hash, s.end, s.last_batch
            self._commit_head(self._head(), sync=True)
            self._note(f"re-anchored the head past {j.tail_events} events in {j.tail_batches} whole batches "
                       "written before a crash (never acknowledged; the sender retries them)")
        self.end = s.end
        self.last_batch = max(self.last_batch, s.last_batch)  # a head from before batch ids were anchored

    def _note(self, msg: str) -> None:
        self.recovered.append(msg)
        log(f"sink: store {self.path}: {msg}")

    def _head(self) -> Head:
        return Head(self.seq - 1, self.prev, self.last_batch, self.end, self.chain.alg)

    def _commit_head(self, head: Head, sync: bool) -> None:
        hp = head_path(self.path)
        tmp = hp.with_name(hp.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                _write_all(fd, head.to_json())
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, hp)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if sync:
            _fsync_dir(self.path.parent)

    @property
    def batches(self) -> int:
        """The next batch id."""
        return self.last_batch + 1

    def next_batch_id(self) -> int:
        """The id the next batch will get (ids are assigned inside :meth:`append_batch`)."""
        return self.last_batch + 1

    def append_batch(self, events: Iterable[object] | Sequence[bytes], batch: int | None = None,
                     received: float | None = None) -> int:
        """Store one batch and anchor it; returns the events written. Raises :class:`StoreUnavailable`.

        ``events`` are dicts, or event JSON already encoded with :func:`loadgen.chain.encode_event`.
        ``batch`` is ignored: ids are assigned here, in the order batches are written.

        Group commit: batches that arrive while another thread is writing wait, and the next
        writer takes all of them at once (one write, one round of fsyncs, one head); each
        returns only once that round is durable, or raises if it failed.
        """
        encoded = [e if isinstance(e, bytes) else encode_event(e) for e in events]
        if not encoded:
            return 0
        job = _Job(encoded, time.time() if received is None else received)
        with self._cv:
            self._queue.append(job)
            while not job.done and self._leading:
                self._cv.wait()
            if job.done:
                return job.result()
            self._leading = True
            group, self._queue = self._queue, []
        try:
            self._write_group(group)
        finally:
            with self._cv:
                for j in group:
                    j.done = True
                self._leading = False
                self._cv.notify_all()
        return job.result()

    def _write_group(self, group: list[_Job]) -> None:
        try:
            self._settle()
        except StoreUnavailable as e:
            for j in group:
                j.error = e
            return
        seq, prev, bid = self.seq, self.prev, self.last_batch
        chunks: list[bytes] = []
        for j in group:
            bid += 1
            for ev in j.events:
                line = record_line(seq, prev, j.received, bid, len(j.events), ev)
                chunks += (line, b"\n")
                prev = self.chain.digest(line)
                seq += 1
        data = b"".join(chunks)
        now = time.monotonic()
        sync = self.fsync == "always" or (self.fsync == "interval" and now - self._last_sync >= self.fsync_interval)
        head = Head(seq - 1, prev, bid, self.end + len(data), self.chain.alg)
        try:
            _write_all(self._fd, data)
            if sync:
                os.fsync(self._fd)
                self._last_sync = now
            self._commit_head(head, sync)
        except OSError as e:
            if self._head_is(head):
                self._advance(seq, prev, bid, len(data), seq - self.seq)  # anchored; only the folder fsync failed
            else:
                self._rollback()
            err = StoreUnavailable(f"store {self.path} cannot take writes: {e.strerror or e}")
            for j in group:
                j.error = err
            return
        self._advance(seq, prev, bid, len(data), seq - self.seq)

    def _head_is(self, head: Head) -> bool:
        try:
            return read_head(self.path) == head
        except (InputError, ChainError):
            return False

    def _advance(self, seq: int, prev: str, bid: int, nbytes: int, n: int) -> None:
        self.seq, self.prev, self.last_batch = seq, prev, bid
        self.end += nbytes
        self.events_stored += n
        self.bytes_written += nbytes

    def _rollback(self) -> None:
        try:
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)
            self._rollback_pending = False
        except OSError:
            self._rollback_pending = True

    def _settle(self) -> None:
        """Finish a rollback that failed earlier; refuse the batch while that is impossible."""
        if self._rollback_pending:
            self._rollback()
            if self._rollback_pending:
                raise StoreUnavailable(f"store {self.path} cannot be rolled back to its last good offset")

    @property
    def writable(self) -> bool:
        return not self._rollback_pending

    def close(self) -> None:
        with self._cv:
            while self._leading:
                self._cv.wait()
            if self._fd >= 0:
                try:
                    if self.fsync != "never":
                        os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = -1
                    os.close(self._lockfd)
