"""One sweep point: its inputs (canonical parameter names, ``analysis.sweep_params``) and seed made
into a validated simulator :class:`~sim.scenario.Scenario`, and the stable ids the sweep journal
keys points by.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from audit_tune.analysis.sweep_params import BURST_KEYS, OPTIONS, ParamValue, fmt_value, is_flag
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonMapping, as_list
from audit_tune.sim.build import ReceiverOptions, WorkloadOptions, build_scenario
from audit_tune.sim.config import parse_flags
from audit_tune.sim.scenario import Scenario


def _scalar_of(v: ParamValue, name: str) -> str | int | float:
    """A number or a string given for a numeric option (``int()`` / ``float()`` parse it)."""
    if isinstance(v, (str, int, float)):
        return v
    raise InputError(f"{name}: {v!r} is not a number")


def build_point(inputs: Mapping[str, ParamValue], seed: int, root: Path | None = None) -> Scenario:
    """Inputs (canonical names) + seed -> a validated Scenario. Raises InputError."""
    flag_args = [f"--{k}={fmt_value(v)}" for k, v in inputs.items() if is_flag(k)]
    flags = parse_flags(flag_args, source="sweep point")
    wo, ro = WorkloadOptions(), ReceiverOptions()
    burst: dict[str, str] = {}
    backends: list[str] | None = None
    drain = True
    for k, v in inputs.items():
        if is_flag(k):
            continue
        kind, (obj, attr) = OPTIONS[k]
        if obj == "burst":
            burst[attr] = fmt_value(v)
            continue
        if kind == "list":
            val: str | int | float | bool | list[str] = ([s.strip() for s in v.split(",")] if isinstance(v, str)
                                                       else [str(x) for x in as_list(v, k)])
            if k == "webhook-outage" and isinstance(v, str):
                val = [v]
        elif kind == "int":
            val = int(float(_scalar_of(v, k)))
        elif kind == "float":
            val = float(_scalar_of(v, k))
        elif kind == "bool":
            val = v if isinstance(v, bool) else str(v).lower() == "true"
        elif kind == "path":
            p = Path(str(v))
            val = str(p if p.is_absolute() or root is None else root / p)
        elif k == "weights" and isinstance(v, list):
            val = ",".join(fmt_value(x) for x in v)
        else:
            val = fmt_value(v)
        if obj == "w":
            setattr(wo, attr, val)
        elif obj == "r":
            setattr(ro, attr, val)
        elif attr == "backends":
            backends = val if isinstance(val, list) else None
        else:
            drain = bool(val)
    if burst:
        parts = {}
        if wo.burst:
            for part in wo.burst.split(","):
                kk, _, vv = part.partition("=")
                parts[kk.strip()] = vv.strip()
        parts.update(burst)
        missing = [b for b in BURST_KEYS if b not in parts]
        if missing:
            raise InputError(f"burst-{missing[0]}: needed with the other burst-* parameters "
                             f"(give all of burst-on, burst-off, burst-mean-on, burst-mean-off, or burst)")
        wo.burst = ",".join(f"{b}={parts[b]}" for b in BURST_KEYS)
    return build_scenario(flags, wo, ro, seed=seed, backends=backends, drain=drain)


def point_id(scenario_dict: JsonMapping, seed: int, engine: str) -> str:
    """Stable id of a point: hash of its scenario (which holds the seed), the seed and the engine."""
    blob = json.dumps({"scenario": scenario_dict, "seed": seed, "engine": engine}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def input_id(inputs: Mapping[str, ParamValue], seed: int, engine: str) -> str:
    """Id of a point whose scenario could not be built: hash of its inputs instead."""
    blob = json.dumps({"inputs": inputs, "seed": seed, "engine": engine}, sort_keys=True, separators=(",", ":"), default=str)
    return "x" + hashlib.sha256(blob.encode()).hexdigest()[:15]
