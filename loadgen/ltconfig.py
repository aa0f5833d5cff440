"""The load test's options (:class:`LoadTestConfig`): everything that shapes a run, echoed in the record.

Durations in seconds, sizes in bytes. Timing policy of the measured window (see
:mod:`loadgen.engine`): a request later than ``max_late`` behind its scheduled time is shed (not
sent, counted); after ``duration`` the run waits at most ``drain_timeout`` for requests in
flight, then cancels them. ``workers`` processes share the schedule (:mod:`loadgen.workers`);
``max_inflight`` is the total over all of them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject
from audit_tune.loadgen.mix import DEFAULT_MIX


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LoadTestConfig:
    rate: str = "100"
    duration: float | None = 60.0
    arrivals: str = "constant"
    mix: str = DEFAULT_MIX
    resources: str = "configmaps,secrets"
    namespaces: int = 1
    namespace_prefix: str = "audit-tune-lt"
    object_size: int = 1024
    preseed: int = 20
    watch_duration: float = 10.0
    list_limit: int = 100
    max_inflight: int = 1024
    request_timeout: float = 30.0
    drain_timeout: float = 30.0
    max_lag: float = 0.1
    max_late: float = 1.0
    workers: int = 1
    seed: int = 1
    cleanup: bool = True
    scrape_metrics: bool = True
    sink_url: str | None = None
    sink_ca: str | None = None
    webhook_host: str | None = None
    settle: float = 0.0
    audit_flags: tuple[str, ...] = ()
    max_records: int = 5_000_000

    def __post_init__(self) -> None:
        if self.max_inflight < 1:
            raise InputError(f"--max-inflight {self.max_inflight}: must be >= 1")
        if self.object_size < 0 or self.preseed < 0 or self.list_limit < 0:
            raise InputError("--object-size, --preseed and --list-limit must be >= 0")
        if not self.namespace_prefix or len(self.namespace_prefix) > 30:
            raise InputError(f"--namespace-prefix {self.namespace_prefix!r}: 1..30 characters")
        if not 1 <= self.workers <= 256:
            raise InputError(f"--workers {self.workers}: use 1..256")
        if self.workers > self.max_inflight:
            raise InputError(f"--workers {self.workers} > --max-inflight {self.max_inflight}: each worker needs a slot")
        if not self.max_late > 0 or self.drain_timeout < 0:
            raise InputError("--max-late must be > 0 and --drain-timeout >= 0")

    def worker_inflight(self, k: int) -> int:
        """Worker ``k``'s share of ``max_inflight`` (the shares add up to it)."""
        q, r = divmod(self.max_inflight, self.workers)
        return q + (1 if k < r else 0)

    def to_dict(self) -> JsonObject:
        d: JsonObject = asdict(self)
        d["audit_flags"] = list(self.audit_flags)
        return d
