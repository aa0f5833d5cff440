"""The fast engine (compiled collector + vectorised retries); see ``sim.fast.engine``."""
from audit_tune.sim.fast.engine import run

__all__ = ["run"]
