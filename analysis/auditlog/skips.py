"""Lines that could not be used, counted per file and reason, reported once per file.

Reasons (:data:`analysis.auditlog.decode.REASONS`): a line that is JSON but not an audit event,
a line that is not JSON, a truncated last line (a log still being written, or a cut copy), bytes
that are not UTF-8, a timestamp earlier than the file's running maximum by more than
``OUT_OF_ORDER_TOLERANCE`` (concurrent requests reorder events by milliseconds, which is normal and
kept; going back further means concatenated or corrupted files), an ``apiVersion`` other than
``audit.k8s.io/v1`` (or ``v1beta1``), an unreadable ``stageTimestamp``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from audit_tune.basics.jsondata import JsonObject, JsonValue

OUT_OF_ORDER_TOLERANCE = 2.0  # seconds
EXAMPLE_LINES = 3


@dataclass
class Skips:
    """Skipped lines of one file: how many, why, and the first few line numbers per reason."""

    path: str
    lines: int = 0  # non-blank lines read
    used: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def skip(self, reason: str, lineno: int) -> None:
        self.reasons[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLE_LINES:
            ex.append(lineno)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def message(self) -> str | None:
        """One line for stderr, or None when nothing was skipped."""
        if not self.reasons:
            return None
        parts = [f"{n:,} {why} (line {', '.join(map(str, self.examples.get(why, [])))}"
                 + (", ..." if n > len(self.examples.get(why, [])) else "") + ")"
                 for why, n in self.reasons.most_common()]
        return f"{self.path}: skipped {self.skipped:,} of {self.lines:,} lines: " + "; ".join(parts)

    def to_dict(self) -> JsonObject:
        return {"path": self.path, "lines": self.lines, "used": self.used, "skipped": dict(self.reasons),
                "example_lines": {k: list[JsonValue](v) for k, v in self.examples.items()}}
