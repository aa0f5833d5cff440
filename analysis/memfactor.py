"""The Go heap's overhead on held audit events: apiserver memory = held event bytes x a factor.

The simulator counts the bytes of the events an apiserver holds (buffer, the batch being collected,
every batch a retrying goroutine keeps: ``plugin/pkg/audit/buffered/buffered.go`` and
``plugin/pkg/audit/webhook/webhook.go``), measured as their JSON. In kube-apiserver each event is an
``auditinternal.Event`` on the Go heap (maps, object references, user info, pointers), and the
garbage collector lets the heap grow to about twice the live data (``GOGC=100``) before it collects,
so the process's resident memory grows by more than those bytes. ``MEASURED`` is that ratio, measured
on the real local stack (``tests/test_outage_stack.py``, figures in docs/verification.md §5): the
growth of kube-apiserver's ``VmRSS`` from just before a 60 s sink outage to its peak during it,
divided by the simulator's predicted peak held event bytes for the same run; the highest of the runs.
It is an upper bound: the apiserver's memory also grows with the load itself during those seconds,
which the ratio counts as if the held events caused it.

``tune recommend --memory-budget`` compares held event bytes x the factor with the budget;
``--memory-overhead FACTOR`` sets it (1 = event bytes only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from audit_tune.basics.errors import InputError
from audit_tune.sim.units import format_size

MEASURED = 11.0
MEASURED_SOURCE = ("measured: kube-apiserver RSS growth over a 60 s 503 outage / predicted held event bytes, "
                   "the highest of the runs in docs/verification.md section 5")


@dataclass(frozen=True)
class MemoryFactor:
    """Apiserver memory per held event byte, and where the figure comes from."""

    factor: float = MEASURED
    source: str = MEASURED_SOURCE

    def apiserver_bytes(self, held: float) -> int:
        """The apiserver memory ``held`` event bytes take."""
        return int(round(held * self.factor))

    def explain(self, held: float) -> str:
        """``6.2 MiB of events x 3 = 18.6 MiB``: the figure the budget is compared with."""
        return f"{format_size(held)} of events x {self.factor:g} = {format_size(self.apiserver_bytes(held))}"

    def line(self) -> str:
        return (f"memory: held event bytes x {self.factor:g} (Go heap overhead, {self.source}) "
                "against --memory-budget")

    def to_dict(self) -> dict[str, float | str]:
        return {"factor": self.factor, "source": self.source}


def parse_factor(text: str) -> MemoryFactor:
    """``--memory-overhead``: a number >= 1, or empty for the measured factor."""
    if not text:
        return MemoryFactor()
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if not (f >= 1 and math.isfinite(f)):
        raise InputError(f"--memory-overhead {text}: must be a number >= 1 (1 = event bytes only, "
                         f"default {MEASURED:g}, measured)")
    return MemoryFactor(f, "--memory-overhead")


@dataclass(frozen=True)
class MemoryBudget:
    """``--memory-budget`` (apiserver bytes) and the factor held event bytes are multiplied by."""

    limit: int
    factor: MemoryFactor = field(default_factory=MemoryFactor)

    def fits(self, held: float) -> bool:
        return self.factor.apiserver_bytes(held) <= self.limit
