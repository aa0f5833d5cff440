"""Reading a sink store: walk the chain once, then judge the result against ``STORE.head``.

One reader serves both ``tune sink verify`` and the sink's start-up recovery, so both agree
on what a crash can leave behind and what only tampering can produce.

The writer (:mod:`loadgen.store`) appends a batch, fsyncs the file, then replaces the head
(fsynced, renamed, folder fsynced) and only then acknowledges. So a crash leaves, after the
last anchored record, at most: whole batches that chain from the head (written, not yet
anchored), then the first records of one more batch, then a torn line without a newline.
None of those was acknowledged. Anything else (a bad line with a newline after it, a head
that points past the end or at a record with another digest, no head beside a non-empty
store) is not a crash state and is reported as tampering.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject
from audit_tune.loadgen.chain import GENESIS, KEYED, PLAIN, Chain, ChainError


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@dataclass(frozen=True)
class Head:
    """``STORE.head``: the last acknowledged record (``seq`` -1 for an empty store)."""

    seq: int
    hash: str
    batch: int = -1
    offset: int | None = None
    alg: str = PLAIN

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "hash": self.hash, "batch": self.batch, "offset": self.offset,
                           "alg": self.alg}).encode()


def read_head(path: Path) -> Head | None:
    hp = head_path(path)
    try:
        raw = hp.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"{hp}: {e.strerror}") from None
    try:
        d = json.loads(raw)
        return Head(int(d["seq"]), str(d["hash"]), int(d.get("batch", -1)),
                    None if d.get("offset") is None else int(d["offset"]), str(d.get("alg", PLAIN)))
    except (ValueError, KeyError, TypeError):
        raise ChainError(f"{hp}: not a sink head (needs seq and hash)") from None


@dataclass
class Scan:
    """What one pass over the store found. ``events``/``end`` stop at the last whole batch."""

    events: int = 0
    end: int = 0
    last_hash: str = GENESIS
    last_batch: int = -1
    batches: int = 0
    head_hash: str | None = None  # digest of record ``head.seq`` once reached
    head_end: int | None = None   # byte offset just after that record
    partial_records: int = 0      # whole lines of a batch whose other lines are missing
    torn_bytes: int = 0           # bytes after the last newline
    tail_batches: int = 0         # whole batches past the head
    size: int = 0
    by_stage: Counter = field(default_factory=Counter)
    by_level: Counter = field(default_factory=Counter)
    by_verb: Counter = field(default_factory=Counter)
    first_received: float | None = None
    last_received: float | None = None


def scan(path: Path, chain: Chain, head_seq: int | None = None) -> Scan:
    """Walk every line; raise :class:`ChainError` at the first line a crash could not have left."""
    s = Scan()
    prev, seq, off = GENESIS, 0, 0
    cur_batch, cur_n, cur_count = None, None, 0
    pending: list[tuple[JsonObject, int, str]] = []  # records of the batch being read
    with open(path, "rb") as f:
        for raw in f:
            no = seq + 1
            where = f"{path} line {no}"
            if not raw.endswith(b"\n"):
                s.torn_bytes = len(raw)
                break
            line = raw[:-1]
            try:
                rec = json.loads(line)
            except RecursionError:  # an event nested near the parser's limit: read the record's fields only
                rec = _fields(line, where)
            except ValueError:
                raise ChainError(f"{where}: not valid JSON (record altered or corrupted)") from None
            if not isinstance(rec, dict) or not {"seq", "prev", "event", "batch"} <= rec.keys():
                raise ChainError(f"{where}: not a sink record (needs seq, prev, received, batch, event)")
            if not isinstance(rec["batch"], int) or not isinstance(rec.get("n", 1), int):
                raise ChainError(f"{where}: batch and n must be integers (record altered)")
            if rec["prev"] != prev:
                hint = " (or the store is keyed: pass --chain-key-file)" if chain.alg == PLAIN and no == 2 else ""
                raise ChainError(f"{where}: prev hash does not match line {no - 1} (line {no - 1} was altered, "
                                 f"or a record between lines {no - 1} and {no} was deleted or reordered){hint}"
                                 if no > 1 else f"{where}: first record's prev is not the genesis hash "
                                                "(records before it were deleted)")
            if rec["seq"] != seq:
                raise ChainError(f"{where}: seq {rec['seq']} where {seq} was expected "
                                 "(record deleted, altered or reordered)")
            prev = chain.digest(line)
            off += len(raw)
            b, n = rec["batch"], rec.get("n")
            if b != cur_batch:
                if cur_batch is not None and cur_n is not None and cur_count != cur_n:
                    raise ChainError(f"{where}: batch {cur_batch} ends after {cur_count} of its {cur_n} records "
                                     "(records were deleted)")
                if n is not None and isinstance(cur_batch, int) and isinstance(b, int) and b <= cur_batch:
                    raise ChainError(f"{where}: batch id {b} after batch {cur_batch} (batches reordered or reused)")
                cur_batch, cur_n, cur_count = b, n, 0
            cur_count += 1
            pending.append((rec, off, prev))
            if head_seq is not None and seq == head_seq:
                s.head_hash, s.head_end = prev, off
            seq += 1
            if cur_n is None or cur_count >= cur_n:
                if cur_n is not None and cur_count > cur_n:
                    raise ChainError(f"{where}: batch {cur_batch} has more than its {cur_n} records")
                _count(s, pending, head_seq)
                pending = []
    s.partial_records = len(pending)
    s.size = off + s.torn_bytes
    return s


_FIELDS = re.compile(rb'\{"seq":(\d+),"prev":"([0-9a-f]{64})","received":([-0-9.e+]+),"batch":(\d+),'
                     rb'(?:"n":(\d+),)?"event":\{')


def _fields(line: bytes, where: str) -> JsonObject:
    m = _FIELDS.match(line)
    if m is None or not line.endswith(b"}"):
        raise ChainError(f"{where}: not valid JSON (record altered or corrupted)")
    rec: JsonObject = {"seq": int(m[1]), "prev": m[2].decode(), "received": float(m[3]), "batch": int(m[4]),
                           "event": {}}
    if m[5] is not None:
        rec["n"] = int(m[5])
    return rec


def _count(s: Scan, recs: list[tuple[JsonObject, int, str]], head_seq: int | None) -> None:
    """Add one complete batch (its records were checked: seq and batch are integers) to ``s``."""
    first_seq, last_batch = recs[0][0]["seq"], recs[-1][0]["batch"]
    assert isinstance(first_seq, int) and isinstance(last_batch, int)
    past = head_seq is not None and first_seq > head_seq
    s.tail_batches += past
    for rec, off, digest in recs:
        s.events += 1
        s.end, s.last_hash = off, digest
        if past:
            continue  # not part of the verified summary
        ev = rec["event"] if isinstance(rec["event"], dict) else {}
        s.by_stage[str(ev.get("stage", ""))] += 1
        s.by_level[str(ev.get("level", ""))] += 1
        s.by_verb[str(ev.get("verb", ""))] += 1
        r = rec.get("received")
        if isinstance(r, (int, float)):
            s.first_received = r if s.first_received is None else s.first_received
            s.last_received = r
    if recs[0][0]["batch"] != s.last_batch:
        s.batches += 1
    s.last_batch = last_batch


@dataclass
class Judgement:
    """A scan read against the head: where the anchored store ends and what lies past it."""

    scan: Scan
    head: Head | None
    anchored_events: int
    tail_events: int      # whole batches past the head: written before a crash, never acknowledged
    tail_batches: int
    cut_records: int      # first records of a batch cut short by a crash
    cut_bytes: int        # bytes past the last whole batch (those records plus a torn line)


def judge(path: Path, chain: Chain, allow_unanchored: bool = False) -> Judgement:
    """Scan ``path`` against its head; raise :class:`ChainError` for any state a crash cannot leave."""
    hp = head_path(path)
    head = read_head(path)  # before the scan: a running writer only ever appends past it
    if head is not None and head.alg != chain.alg:
        want = "pass --chain-key-file" if head.alg == KEYED else "it is not keyed: drop --chain-key-file"
        raise ChainError(f"{path}: the store's chain is {head.alg} but {chain.alg} was asked for ({want})")
    if not path.is_file():
        if head is not None and head.seq >= 0:
            raise ChainError(f"{path}: missing, but {hp.name} records {head.seq + 1} events (the store was removed)")
        raise InputError(f"STORE {path}: " + ("not a regular file" if path.exists() else "no such file"))
    s = scan(path, chain, head.seq if head is not None else None)
    cut_bytes = s.size - s.end
    if head is None:
        if s.size and not allow_unanchored:
            raise ChainError(f"{path}: no {hp.name} beside a non-empty store (deleted?): the end of the store "
                             "cannot be checked; --allow-unanchored verifies the chain without it")
        return Judgement(s, None, s.events, 0, 0, s.partial_records, cut_bytes)
    if head.seq + 1 > s.events:
        raise ChainError(f"{path}: {hp.name} records {head.seq + 1} events but the store holds {s.events} whole "
                         "ones (records were removed from the end)")
    if head.seq >= 0 and head.hash != s.head_hash or head.seq < 0 and head.hash != GENESIS:
        raise ChainError(f"{path} line {head.seq + 1}: last anchored record does not match {hp.name} "
                         "(the tail was altered or rewritten)")
    if head.offset is not None and head.seq >= 0 and head.offset != s.head_end:
        raise ChainError(f"{path} line {head.seq + 1}: ends at byte {s.head_end}, {hp.name} says {head.offset}")
    return Judgement(s, head, head.seq + 1, s.events - (head.seq + 1), s.tail_batches, s.partial_records, cut_bytes)


@dataclass
class Summary:
    """What :func:`verify` found in an intact store (counts cover the anchored records)."""

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
    chain: str = PLAIN
    unanchored_events: int = 0
    torn_bytes: int = 0

    def to_dict(self) -> JsonObject:
        return {
            "store": self.path, "ok": True, "events": self.events, "batches": self.batches,
            "by_stage": dict(self.by_stage), "by_level": dict(self.by_level), "by_verb": dict(self.by_verb),
            "first_received": self.first_received, "last_received": self.last_received,
            "head_checked": self.head_checked, "last_hash": self.last_hash, "chain": self.chain,
            "unanchored_events": self.unanchored_events, "torn_bytes": self.torn_bytes,
        }


def verify(path: str | os.PathLike, key: bytes | None = None, allow_unanchored: bool = False) -> Summary:
    """Check the chain of ``path`` against its head; raise :class:`ChainError` naming the first bad line.

    Whole batches past the head and a cut-short last batch are crash leftovers (or a write in
    progress), not errors: they are reported in ``unanchored_events``/``torn_bytes``.
    """
    p = Path(path)
    p = Path(os.path.realpath(p)) if p.is_symlink() else p  # the head sits beside the real file
    chain = Chain(key)
    try:
        j = judge(p, chain, allow_unanchored)
    except OSError as e:
        raise InputError(f"STORE {p}: cannot read: {e.strerror or e}") from None
    s = j.scan
    out = Summary(str(p), events=j.anchored_events, batches=s.batches - j.tail_batches,
                  by_stage=dict(s.by_stage), by_level=dict(s.by_level), by_verb=dict(s.by_verb),
                  first_received=s.first_received, last_received=s.last_received,
                  head_checked=j.head is not None, chain=chain.alg,
                  unanchored_events=j.tail_events + j.cut_records, torn_bytes=s.torn_bytes)
    out.last_hash = j.head.hash if j.head is not None else s.last_hash
    out.last_batch = j.head.batch if j.head is not None else s.last_batch
    return out
