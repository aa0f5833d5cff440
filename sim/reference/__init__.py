"""The reference engine: the audit pipeline as SimPy processes, written for clarity.

Modules: ``clock`` (absolute-time events), ``buffered`` (buffer, collector, throttle, shutdown),
``delegates`` (async webhook with retries, sync log writer, blocking calls), ``frontend``
(requests and their stages, truncation, the union of backends), ``engine`` (wiring and results).
"""
from audit_tune.sim.reference.engine import run

__all__ = ["run"]
