"""The hash chain that links the sink's stored records, plain (SHA-256) or keyed (HMAC-SHA256).

Each record line commits to the one before it through ``prev``, the digest of the previous
line's bytes (without the newline); the first record's ``prev`` is :data:`GENESIS`.

* ``sha256``: anyone can recompute the chain. It detects accidental damage and any edit that
  does not also rewrite every later record and ``STORE.head``; a deliberate, consistent rewrite
  of the tail verifies.
* ``hmac-sha256``: the digest is HMAC-SHA256 under a key that lives outside the store
  (``--chain-key-file``). Without the key nobody can produce a chain that verifies, so a
  rewrite is detected as long as the key stays secret; ``verify`` needs the key.

A record line is compact JSON with its keys in this order::

    {"seq":0,"prev":"000…0","received":1764320000.123,"batch":0,"n":3,"event":{...}}

``n`` is the number of events in the record's batch, so a reader can tell a whole batch from
the first records of one whose write was cut short by a crash.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

from audit_tune.basics import files
from audit_tune.basics.errors import InputError, TuneError

GENESIS = "0" * 64
PLAIN, KEYED = "sha256", "hmac-sha256"
MIN_KEY_BYTES = 16


class ChainError(TuneError):
    """The store's chain is broken: a record was deleted, altered or reordered (exit 1)."""


class Chain:
    """Digest function of one store: plain SHA-256, or HMAC-SHA256 with ``key``."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self.alg = KEYED if key else PLAIN

    def __repr__(self) -> str:  # never shows the key
        return f"Chain({self.alg})"

    def digest(self, line: bytes) -> str:
        if self._key:
            return hmac.new(self._key, line, hashlib.sha256).hexdigest()
        return hashlib.sha256(line).hexdigest()


def encode_event(event: object) -> bytes:
    """Compact UTF-8 JSON of one event; ``ValueError`` for what strict JSON cannot carry.

    Raises on NaN/Infinity and on lone surrogates (``UnicodeEncodeError``); ``RecursionError``
    for nesting deeper than the encoder's limit. The sink turns each into a 400.
    """
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_line(seq: int, prev: str, received: float, batch: int, n: int, event_json: bytes) -> bytes:
    """One record line (no newline) around an already encoded event."""
    return (b'{"seq":%d,"prev":"%s","received":%s,"batch":%d,"n":%d,"event":'
            % (seq, prev.encode(), repr(round(received, 6)).encode(), batch, n) + event_json + b"}")


def load_key(path: str | os.PathLike, store: str | os.PathLike | None = None) -> bytes:
    """Read a chain key: a private file (no group/other access) of at least 16 bytes, outside the store's folder."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise InputError(f"--chain-key-file {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--chain-key-file {p}: not a regular file")
    data = files.read_bytes(p, "--chain-key-file", files.SECRET_BYTES).strip()
    if st.st_mode & 0o077:
        raise InputError(f"--chain-key-file {p}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; chmod 600 it")
    if len(data) < MIN_KEY_BYTES:
        raise InputError(f"--chain-key-file {p}: key has {len(data)} bytes, needs at least {MIN_KEY_BYTES} "
                         "(e.g. head -c 32 /dev/urandom | base64)")
    if store is not None and p.resolve().parent == Path(store).resolve().parent:
        raise InputError(f"--chain-key-file {p}: keep the key outside the store's folder "
                         "(anyone who can rewrite the store could then read it)")
    return data
