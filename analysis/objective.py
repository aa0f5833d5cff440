"""What "good flags" means for ``tune recommend``: the :class:`Objective` (see ``docs/recommend.md``).

Each field is a ``tune recommend`` / ``tune report`` option (its metadata carries the flag and the
help text the CLI generates its options from); :meth:`Objective.validated` checks them once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from audit_tune.analysis import logbackend, outage
from audit_tune.analysis.memfactor import MEASURED, MemoryFactor, parse_factor
from audit_tune.analysis.taskpool import available_cores
from audit_tune.basics.errors import InputError
from audit_tune.sim.units import parse_duration, parse_size


def _opt(flag: str, typ: type, help: str) -> dict[str, object]:
    return {"flag": flag, "type": typ, "help": help}


@dataclass(frozen=True)
class Objective:
    """What "good flags" means. Each field is a ``tune recommend`` option (metadata: flag, help)."""

    headroom: float = field(default=2.0, metadata=_opt(
        "--headroom", float, "No buffered drop at the observed peak times this factor."))
    max_drop_probability: float = field(default=0.01, metadata=_opt(
        "--max-drop-probability", float, "Highest acceptable probability of losing any event over the horizon."))
    horizon: str = field(default="", metadata=_opt(
        "--horizon", str, "Time the drop probability is about, e.g. 30d (default: the snapshot's window)."))
    memory_budget: str = field(default="512MiB", metadata=_opt(
        "--memory-budget", str, "Most memory the audit events one apiserver holds (buffer + in flight) may take: "
        "held event bytes x --memory-overhead."))
    memory_overhead: str = field(default="", metadata=_opt(
        "--memory-overhead", str, f"Apiserver memory per held event byte (Go heap overhead; default {MEASURED:g}, "
        "measured on a real kube-apiserver; 1 = event bytes only)."))
    max_delivery_latency: str = field(default="60s", metadata=_opt(
        "--max-delivery-latency", str, "Highest acceptable p99 time from event to receiver."))
    max_batch_bytes: str = field(default="12MiB", metadata=_opt(
        "--max-batch-bytes", str, "Receiver body limit (Falco k8saudit: 12MiB); 0 = none."))
    receiver_max_qps: float = field(default=100.0, metadata=_opt(
        "--receiver-max-qps", float, "Most POSTs/s the receiver takes from all apiservers (throttle qps x instances); 0 = none."))
    seeds: int = field(default=8, metadata=_opt(
        "--seeds", int, "Monte Carlo runs (seeds of the fitted bursts) per instance and load."))
    peak_window: str = field(default="5m", metadata=_opt(
        "--peak-window", str, "Length of the busiest stretch simulated per instance."))
    jobs: int = field(default=available_cores(), metadata=_opt(
        "--jobs", int, "Simulations at once (threads), processes reading --audit-log files, and with "
        "--all-clusters --executor local clusters at once (1 = one at a time; default: the CPUs this process may use)."))
    tolerate_outage: tuple[str, ...] = field(default=(), metadata=_opt(
        "--tolerate-outage", list[str], "Receiver outage the flags must survive: DURATION[:refuse|hang|503|429] "
        "(repeatable; default one 2m outage of the kind the data shows; none = no outage)."))
    webhook_retry_after: str = field(default="", metadata=_opt(
        "--webhook-retry-after", str, "Retry-After on the 429/503 outages' answers, whole seconds (e.g. 5s) or none "
        "(default: from rest_client_request_retries_total in the data, none when it shows no retries)."))
    tolerate_slowdown: float = field(default=1.0, metadata=_opt(
        "--tolerate-slowdown", float, "Receiver latency x this over the busiest window must lose nothing (1 = off)."))
    tolerate_log_stall: str = field(default="", metadata=_opt(
        "--tolerate-log-stall", str, "With --audit-log-path: a disk that stops for this long (e.g. 30s) must lose nothing."))
    log_write_latency: str = field(default="", metadata=_opt(
        "--log-write-latency", str, "With --audit-log-path: the cost of one audit log write (default: a short probe on this host)."))

    # parsed values, validated once
    def validated(self) -> Objective:
        if not self.headroom >= 1.0 or not math.isfinite(self.headroom):
            raise InputError(f"--headroom {self.headroom}: must be a number >= 1 (2 = twice the observed peak)")
        if not 0 < self.max_drop_probability < 1:
            raise InputError(f"--max-drop-probability {self.max_drop_probability}: must be within (0, 1), e.g. 0.01")
        if self.horizon:
            if not parse_duration(self.horizon, "--horizon") > 0:
                raise InputError(f"--horizon {self.horizon}: must be > 0, e.g. 30d")
        if not self.memory_bytes > 0:
            raise InputError(f"--memory-budget {self.memory_budget}: must be > 0, e.g. 512MiB")
        if not self.latency_seconds > 0:
            raise InputError(f"--max-delivery-latency {self.max_delivery_latency}: must be > 0, e.g. 60s")
        self.batch_bytes  # noqa: B018 - parse for the error
        self.memory_factor  # noqa: B018 - parse for the error
        if self.receiver_max_qps < 0 or not math.isfinite(self.receiver_max_qps):
            raise InputError(f"--receiver-max-qps {self.receiver_max_qps}: must be >= 0 (0 = no limit)")
        if not 1 <= self.seeds <= 1000:
            raise InputError(f"--seeds {self.seeds}: must be within 1..1000")
        if not parse_duration(self.peak_window, "--peak-window") > 0:
            raise InputError(f"--peak-window {self.peak_window}: must be > 0, e.g. 5m")
        if not 1 <= self.jobs <= 64:
            raise InputError(f"--jobs {self.jobs}: must be within 1..64")
        outage.parse_scenarios(self.tolerate_outage, self.tolerate_slowdown, {}, self.webhook_retry_after)
        logbackend.parse_stall(self.tolerate_log_stall)
        if self.log_write_latency:
            logbackend.write_cost(self.log_write_latency, 1000, 100)
        return self

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory_budget, "--memory-budget")

    @property
    def memory_factor(self) -> MemoryFactor:
        return parse_factor(self.memory_overhead)

    def over_budget(self, held: float) -> bool:
        """Whether ``held`` event bytes take more apiserver memory than ``--memory-budget``."""
        return self.memory_factor.apiserver_bytes(held) > self.memory_bytes

    @property
    def latency_seconds(self) -> float:
        return parse_duration(self.max_delivery_latency, "--max-delivery-latency")

    @property
    def batch_bytes(self) -> int:
        return parse_size(self.max_batch_bytes, "--max-batch-bytes")

    def horizon_seconds(self, window: float) -> float:
        return parse_duration(self.horizon, "--horizon") if self.horizon else window

    def to_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}
