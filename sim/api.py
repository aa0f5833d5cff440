"""``run(scenario, engine=...)``: the one entry point every command and test uses."""
from __future__ import annotations

from collections.abc import Callable

from audit_tune.basics.errors import InputError
from audit_tune.sim.fast import run as fast
from audit_tune.sim.oracle_engine import run as orc
from audit_tune.sim.reference import run as ref
from audit_tune.sim.result import Result
from audit_tune.sim.scenario import Scenario

ENGINES = ("fast", "reference", "oracle")


def run(sc: Scenario, engine: str = "reference", progress: Callable[[float], None] | None = None) -> Result:
    if engine == "reference":
        return ref(sc, progress)
    if engine == "fast":
        return fast(sc, progress)
    if engine == "oracle":
        return orc(sc, progress)
    raise InputError(f"--engine {engine}: unknown engine; use one of {', '.join(ENGINES)}")
