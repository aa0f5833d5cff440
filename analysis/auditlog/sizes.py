"""Event sizes by level and stage: bytes per event as the webhook sends them.

The log backend writes each event as the compact JSON the legacy codec produces plus a newline
(``apiserver/plugin/pkg/audit/log/backend.go``); the webhook backend puts the same encoding of each
event into the ``items`` of an ``EventList`` (``apiserver/plugin/pkg/audit/webhook/webhook.go``),
so a line's length without its newline is the event's share of a POST body (the comma between
items aside). ``tune sink``'s store keeps the event it received: its raw bytes are measured.
Legacy-format lines carry no JSON and are not measured.

Per (level, stage): count, sum and a power-of-two histogram (bucket ``k`` holds sizes in
``[2^(k-1), 2^k)``, i.e. sizes of bit length ``k``), enough for a mean, a p50/p99 and a ``--event-size`` per level and stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit_tune.basics.jsondata import JsonObject, JsonValue

BUCKETS = 32
LEVELS = ("", "None", "Metadata", "Request", "RequestResponse")  # "" = unknown (legacy lines)
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
KEYS = tuple((lv, st) for lv in LEVELS for st in STAGES)
CODES = {k: i for i, k in enumerate(KEYS)}


@dataclass
class SizeStats:
    """Accumulates bytes per event keyed by ``(level, stage)``."""

    by_key: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # [count, sum, hist list]

    def add(self, level: str, stage: str, n: int) -> None:
        s = self.by_key.get((level, stage))
        if s is None:
            s = self.by_key[(level, stage)] = [0, 0, [0] * BUCKETS]
        s[0] += 1
        s[1] += n
        s[2][min(n.bit_length(), BUCKETS - 1)] += 1

    def add_many(self, codes: list[int], sizes: list[int]) -> None:
        """Add a batch of events given as :data:`CODES` indices (``LEVELS x STAGES``) and byte
        counts, grouped with numpy."""
        c = np.asarray(codes, dtype=np.int64)
        n = np.asarray(sizes, dtype=np.int64)
        bits = np.zeros(len(n), dtype=np.int64)
        pos = n > 0
        bits[pos] = np.floor(np.log2(n[pos])).astype(np.int64) + 1
        bits = np.minimum(bits, BUCKETS - 1)
        k = len(KEYS)
        cnt = np.bincount(c, minlength=k)
        tot = np.bincount(c, weights=n, minlength=k)
        hist = np.bincount(c * BUCKETS + bits, minlength=k * BUCKETS).reshape(k, BUCKETS)
        for i in np.flatnonzero(cnt).tolist():
            key = KEYS[i]
            s = self.by_key.get(key)
            if s is None:
                s = self.by_key[key] = [0, 0, [0] * BUCKETS]
            s[0] += int(cnt[i])
            s[1] += int(tot[i])
            s[2] = [a + int(b) for a, b in zip(s[2], hist[i])]

    def merge(self, other: SizeStats) -> None:
        for k, (c, t, h) in other.by_key.items():
            s = self.by_key.get(k)
            if s is None:
                self.by_key[k] = [c, t, list(h)]
            else:
                s[0] += c
                s[1] += t
                s[2] = [a + b for a, b in zip(s[2], h)]

    @property
    def count(self) -> int:
        return sum(v[0] for v in self.by_key.values())

    @property
    def mean(self) -> float | None:
        c = self.count
        return sum(v[1] for v in self.by_key.values()) / c if c else None

    @staticmethod
    def _quantile(hist: list[int], q: float) -> int:
        total = sum(hist)
        acc = 0
        for k, c in enumerate(hist):
            acc += c
            if total and acc >= q * total:
                return 1 << k  # bucket k holds sizes with bit_length k: below 2^k
        return 0

    def to_dict(self) -> JsonObject:
        rows: list[JsonValue] = []
        for (lv, st), (c, t, h) in sorted(self.by_key.items()):
            rows.append({"level": lv or "unknown", "stage": st, "events": c, "mean_bytes": round(t / c, 1) if c else None,
                         "p50_bytes_below": self._quantile(h, 0.5), "p99_bytes_below": self._quantile(h, 0.99)})
        return {"by_level_stage": rows, "events": self.count,
                "mean_bytes": round(self.mean, 1) if self.mean is not None else None}
