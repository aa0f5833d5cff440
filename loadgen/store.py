"""The sink's event store: an append-only JSONL file whose records are chained by SHA-256.

Each stored audit event is one line (compact JSON, keys in this order)::

    {"seq":0,"prev":"000…0","received":1764320000.123,"batch":0,"event":{...}}

* ``seq`` counts records from 0, one per event, with no gaps;
* ``prev`` is the hex SHA-256 of the previous record's line (its bytes without the newline);
  the first record's ``prev`` is 64 zeros;
* ``received`` is the unix time the batch was received; ``batch`` the sink's batch counter.

Because every line commits to the one before it, deleting, altering or reordering any record
breaks the chain at the next line; :func:`verify` names the first line that does not fit.
The last line has no successor, so the store also keeps ``STORE.head`` (``{"seq","hash"}`` of
the last record, replaced atomically after each batch); verify checks it when it exists, which
catches an altered or truncated tail.

Durability (``fsync``): ``always`` fsyncs the file after every batch, before the sink answers
2xx; ``interval`` fsyncs at most every ``fsync_interval`` s (a crash may lose the last
interval's batches although they were acknowledged); ``never`` leaves it to the OS.
A batch is acknowledged only after :meth:`EventStore.append_batch` returns, i.e. after the
write (and the fsync the policy asks for) completed.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from audit_tune.basics.errors import InputError, TuneError

GENESIS = "0" * 64
FSYNC_POLICIES = ("always", "interval", "never")


class ChainError(TuneError):
    """The store's hash chain is broken: a record was deleted, altered or reordered (exit 1)."""


def _line(seq: int, prev: str, received: float, batch: int, event: Any) -> bytes:
    rec = {"seq": seq, "prev": prev, "received": round(received, 6), "batch": batch, "event": event}
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


class EventStore:
    """Appends batches of events to ``path``, continuing the chain if the file already exists.

    Thread-safe: the sink calls :meth:`append_batch` from a worker thread so disk I/O does not
    stall its event loop; a lock keeps batches whole and in order.
    """

    def __init__(self, path: str | os.PathLike, fsync: str = "always", fsync_interval: float = 1.0) -> None:
        if fsync not in FSYNC_POLICIES:
            raise InputError(f"--fsync {fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        self.path = Path(path)
        if not self.path.parent.exists():
            raise InputError(f"--store {self.path}: folder {self.path.parent} does not exist")
        self.fsync, self.fsync_interval = fsync, fsync_interval
        self._lock = threading.Lock()
        self.seq, self.prev, self.batches = 0, GENESIS, 0
        if self.path.exists() and self.path.stat().st_size > 0:
            summary = verify(self.path)
            self.seq, self.prev = summary.events, summary.last_hash
            self.batches = (summary.last_batch + 1) if summary.events else 0
        self._f = open(self.path, "ab")
        self._last_sync = time.monotonic()
        self.events_stored = 0
        self.bytes_written = 0

    def next_batch_id(self) -> int:
        with self._lock:
            b = self.batches
            self.batches += 1
            return b

    def append_batch(self, events: Iterable[Any], batch: int, received: float | None = None) -> int:
        """Write every event of one batch, sync per policy, update the head; returns events written."""
        received = time.time() if received is None else received
        with self._lock:
            chunks: list[bytes] = []
            seq, prev = self.seq, self.prev
            for ev in events:
                line = _line(seq, prev, received, batch, ev)
                chunks.append(line + b"\n")
                prev = hashlib.sha256(line).hexdigest()
                seq += 1
            if not chunks:
                return 0
            data = b"".join(chunks)
            self._f.write(data)
            self._f.flush()
            now = time.monotonic()
            do_sync = self.fsync == "always" or (self.fsync == "interval" and now - self._last_sync >= self.fsync_interval)
            if do_sync:
                os.fsync(self._f.fileno())
                self._last_sync = now
            n = seq - self.seq
            self.seq, self.prev = seq, prev
            self.events_stored += n
            self.bytes_written += len(data)
            self._write_head(do_sync)
            return n

    def _write_head(self, sync: bool) -> None:
        hp = head_path(self.path)
        tmp = hp.with_name(hp.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"seq": self.seq - 1, "hash": self.prev}, f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, hp)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                if self.fsync != "never":
                    os.fsync(self._f.fileno())
                self._f.close()


@dataclass
class Summary:
    """What :func:`verify` found in an intact store."""

    path: str
    events: int = 0
    batches: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)
    by_level: dict[str, int] = field(default_factory=dict)
    by_verb: dict[str, int] = field(default_factory=dict)
    first_received: float | None = None
    last_received: float | None = None
    last_hash: str = GENESIS
    last_batch: int = -1
    head_checked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.path, "ok": True, "events": self.events, "batches": self.batches,
            "by_stage": self.by_stage, "by_level": self.by_level, "by_verb": self.by_verb,
            "first_received": self.first_received, "last_received": self.last_received,
            "head_checked": self.head_checked, "last_hash": self.last_hash,
        }


def verify(path: str | os.PathLike) -> Summary:
    """Check the chain of ``path`` and count its events; raise :class:`ChainError` at the first bad line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"STORE {p}: no such file")
    s = Summary(str(p))
    stages: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    verbs: Counter[str] = Counter()
    batches: set[int] = set()
    prev = GENESIS
    with open(p, "rb") as f:
        for no, raw in enumerate(f, start=1):
            where = f"{p} line {no}"
            if not raw.endswith(b"\n"):
                raise ChainError(f"{where}: truncated record (no newline at end of file)")
            line = raw[:-1]
            try:
                rec = json.loads(line)
            except ValueError:
                raise ChainError(f"{where}: not valid JSON (record altered or corrupted)") from None
            if not isinstance(rec, dict) or not {"seq", "prev", "event", "batch"} <= rec.keys():
                raise ChainError(f"{where}: not a sink record (needs seq, prev, received, batch, event)")
            if rec["prev"] != prev:
                raise ChainError(f"{where}: prev hash does not match line {no - 1} (line {no - 1} was altered, "
                                 f"or a record between lines {no - 1} and {no} was deleted or reordered)"
                                 if no > 1 else f"{where}: first record's prev is not the genesis hash "
                                                "(records before it were deleted)")
            if rec["seq"] != no - 1:
                raise ChainError(f"{where}: seq {rec['seq']} where {no - 1} was expected "
                                 "(record deleted, altered or reordered)")
            prev = hashlib.sha256(line).hexdigest()
            ev = rec["event"] if isinstance(rec["event"], dict) else {}
            stages[str(ev.get("stage", ""))] += 1
            levels[str(ev.get("level", ""))] += 1
            verbs[str(ev.get("verb", ""))] += 1
            batches.add(int(rec["batch"]))
            s.last_batch = int(rec["batch"])
            r = rec.get("received")
            if isinstance(r, (int, float)):
                s.first_received = r if s.first_received is None else s.first_received
                s.last_received = r
            s.events = no
    s.last_hash = prev
    s.batches = len(batches)
    s.by_stage, s.by_level, s.by_verb = dict(stages), dict(levels), dict(verbs)
    hp = head_path(p)
    if hp.exists():
        try:
            head = json.loads(hp.read_text())
        except ValueError:
            raise ChainError(f"{hp}: not valid JSON") from None
        if head.get("seq") != s.events - 1 or head.get("hash") != prev:
            raise ChainError(f"{p} line {s.events}: last record does not match {hp.name} "
                             f"(head says seq {head.get('seq')}; the tail was altered, deleted or appended to)")
        s.head_checked = True
    return s
