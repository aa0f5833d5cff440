"""``run(scenario, engine=...)``: the one entry point every command and test uses; ``run_many`` for
several flag sets of one workload (the fast engine generates their events once, ``sim.fast.shared``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from audit_tune.basics.errors import InputError
from audit_tune.sim.fast import run as fast
from audit_tune.sim.fast.shared import run_many as fast_many
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


def run_many(scs: Sequence[Scenario], engine: str = "reference") -> list[Result]:
    """``[run(sc, engine) for sc in scs]``; the fast engine shares one pass of generated events among
    the scenarios that see the same events (``sim.fast.shared.run_many``)."""
    if engine == "fast":
        return fast_many(scs)
    return [run(sc, engine) for sc in scs]
