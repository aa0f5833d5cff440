"""What one simulation may ask for, checked before anything runs.

Memory is bounded by chunking (:func:`audit_tune.sim.workload.chunk_seconds`) for any rate; what
is left to bound is time and the per-instance state:

* at most :data:`MAX_INSTANCES` apiservers (each keeps its own queues and series);
* ``--burst`` periods of at least 1 ms and at most a million of them per run (the on/off
  profile is drawn up front);
* about :data:`MAX_EVENTS` expected audit events per run unless ``--force`` (such a run takes
  hours; :func:`check_size`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from audit_tune.basics.errors import InputError

if TYPE_CHECKING:
    from audit_tune.sim.workload import Workload

MAX_INSTANCES = 1000
MAX_EVENTS = 1e9


def check_shape(w: Workload) -> None:
    """Instances, weights and bursts a run can hold (called by ``Workload.validate``)."""
    if w.instances > MAX_INSTANCES:
        raise InputError(f"--instances={w.instances}: at most {MAX_INSTANCES} apiservers can be simulated")
    if w.weights and (len(w.weights) != w.instances or not all(math.isfinite(x) and x > 0 for x in w.weights)):
        raise InputError(f"--weights: need {w.instances} positive weights, got {list(w.weights)}")
    o = w.arrivals.onoff
    if o is None:
        return
    if not all(math.isfinite(x) and x >= 0 for x in (o.on, o.off)):
        raise InputError("--burst: on and off rates must be finite and >= 0")
    if not all(math.isfinite(x) and x >= 1e-3 for x in (o.mean_on, o.mean_off)):
        raise InputError("--burst: mean-on and mean-off must be at least 1ms")
    if w.duration / (o.mean_on + o.mean_off) > 1e6:
        raise InputError("--burst: more than a million on/off periods in --duration; make mean-on/mean-off longer")


def expected_events(w: Workload) -> float:
    """Audit events the run is expected to produce (all instances), before it starts."""
    a = w.arrivals
    if a.process == "trace":
        requests = float(len(a.trace))
    elif a.onoff:
        requests = max(a.mean_rate(w.duration), a.onoff.on) * w.duration
    else:
        requests = a.mean_rate(w.duration) * w.duration
    return requests * w.events_per_request()


def check_size(w: Workload, force: bool = False) -> None:
    """Refuse (one line) a run expected to produce more than :data:`MAX_EVENTS` events unless
    ``force``."""
    n = expected_events(w)
    if not math.isfinite(n) or (n > MAX_EVENTS and not force):
        raise InputError(f"the workload makes about {n:.3g} audit events, above the limit of {MAX_EVENTS:.0e} "
                         "per run; lower --rate/--duration, or pass --force to run it anyway")
