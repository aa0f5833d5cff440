"""The flag sets the recommender tries: the tuned flags, readable rounding, the analytic grid
(max sizes, waits) and the kubernetes.io rule of thumb (``docs/recommend.md``, "Search").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.sim.config import AuditFlags, BatchOptions

MAX_SIZES = (50, 100, 200, 250, 400, 500, 800, 1000, 2000)
WAITS = (30.0, 20.0, 10.0, 5.0, 2.0, 1.0)
SIZE_MARGIN = 1.25  # events vary in size: keep max size x mean size x 1.25 under the body limit
MIN_BUFFER = 1000  # about 1 MiB of events: below that, memory is not worth a thinner safety margin
TUNED = ("audit-webhook-mode", "audit-webhook-initial-backoff", "audit-webhook-batch-buffer-size",
         "audit-webhook-batch-max-size",
         "audit-webhook-batch-max-wait", "audit-webhook-batch-throttle-enable",
         "audit-webhook-batch-throttle-qps", "audit-webhook-batch-throttle-burst")


def webhook_flags(base: AuditFlags, buffer: int, max_size: int, wait: float, qps: float, burst: int) -> AuditFlags:
    b = BatchOptions(int(buffer), int(max_size), float(wait), True, float(qps), int(burst), async_delegate=True)
    return replace(base, webhook=replace(base.webhook, mode="batch", batch=b)).validate()


def tuned_args(flags: AuditFlags) -> list[str]:
    return flags.to_flags(include=TUNED)


def nice_up(x: float) -> float:
    """Round up to 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k (qps, buffer sizes people can read)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        v = m * 10 ** e
        if v >= x * (1 - 1e-12):
            return float(round(v, 6))
    return float(10 ** (e + 1))


@dataclass(frozen=True)
class RuleOfThumb:
    """The kubernetes.io rule of thumb for the observed load, and how it was derived."""

    rate_events_per_second: float
    max_size: int
    qps: float
    buffer: int
    derivation: str
    flags: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"rate_events_per_second": self.rate_events_per_second, "max_size": self.max_size, "qps": self.qps,
                "buffer": self.buffer, "derivation": self.derivation, "flags": list(self.flags)}


def rule_of_thumb(models: list[InstanceModel], base: AuditFlags) -> tuple[AuditFlags, RuleOfThumb]:
    """kubernetes.io "Parameter tuning": batches of 100, qps = rate / 100, buffer = 5 s of events.
    The rate is each instance's busiest step (what a dashboard shows); flags are cluster-wide."""
    rate = max(m.peak_step_rate for m in models)
    qps = max(math.ceil(rate / 100 * 10) / 10, 0.1)
    buffer = max(int(math.ceil(5 * rate)), 100)
    cur = base.webhook.batch
    f = webhook_flags(base, buffer, 100, cur.max_batch_wait, qps, max(cur.throttle_burst, 1))
    return f, RuleOfThumb(round(rate, 1), 100, qps, buffer,
                          f"qps = {rate:.0f} ev/s / 100 per batch; buffer = 5 s x {rate:.0f} ev/s (kubernetes.io audit page)",
                          tuned_args(f))
