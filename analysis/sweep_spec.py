"""Sweep specs: which parameters vary, how points are sampled, and how a point becomes a Scenario.

A spec is a YAML or JSON mapping::

    base:                                 # fixed for every point (optional)
      duration: 10s
      webhook-latency: 50ms
      --audit-webhook-batch-max-wait: 1s
    axes:                                 # what varies
      --audit-webhook-batch-max-size: [100, 200, 400]
      --audit-webhook-batch-throttle-qps: [5, 10, 20]
      rate: [2000, 4000, 8000]
      webhook-failure-rate: {min: 0, max: 0.2}      # a range: random / lhs only (or grid with steps)
    sample: grid                          # grid (default) | random | lhs
    n: 50                                 # points for random / lhs
    sample_seed: 1                        # seed of the sampler
    seeds: 3                              # simulator seeds per point: seed, seed+1, ...
    seed: 1
    engine: fast

Parameter names are kube-apiserver audit flags (``--audit-...``, leading dashes optional) or the
workload / receiver options of ``tune simulate`` (``rate``, ``burst-on``, ``webhook-latency``, ...;
``_`` and ``-`` are interchangeable). A list is a set of values; a mapping ``{min, max}`` (with
``log: true``, ``steps: K`` for grids) is a numeric range.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from audit_tune.basics import yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.sim.api import ENGINES
from audit_tune.sim.build import ReceiverOptions, WorkloadOptions, build_scenario
from audit_tune.sim.config import FLAGS_BY_NAME, parse_bool, parse_dur, parse_flags, parse_float32, parse_int
from audit_tune.sim.units import parse_duration, parse_rate, parse_size

SAMPLERS = ("grid", "random", "lhs")
TOP_KEYS = ("base", "axes", "sample", "n", "sample_seed", "seeds", "seed", "engine")

# name -> (kind, target); target is (object, field) for WorkloadOptions ("w") / ReceiverOptions ("r"),
# or a special marker handled in build_point.
OPTIONS: dict[str, tuple[str, tuple[str, str]]] = {
    "rate": ("rate", ("w", "rate")),
    "request-rate": ("rate", ("w", "request_rate")),
    "duration": ("duration", ("w", "duration")),
    "arrivals": ("str", ("w", "arrivals")),
    "profile": ("str", ("w", "profile")),
    "ramp": ("bool", ("w", "ramp")),
    "burst": ("str", ("w", "burst")),
    "burst-on": ("rate", ("burst", "on")),
    "burst-off": ("rate", ("burst", "off")),
    "burst-mean-on": ("duration", ("burst", "mean-on")),
    "burst-mean-off": ("duration", ("burst", "mean-off")),
    "trace": ("path", ("w", "trace")),
    "rate-series": ("path", ("w", "rate_series")),
    "instances": ("int", ("w", "instances")),
    "weights": ("str", ("w", "weights")),
    "event-size": ("size", ("w", "event_size")),
    "level": ("str", ("w", "level")),
    "omit-stages": ("list", ("w", "omit_stages")),
    "long-running-fraction": ("float", ("w", "long_running_fraction")),
    "watch-duration": ("duration", ("w", "watch_duration")),
    "request-duration": ("duration", ("w", "request_duration")),
    "webhook-latency": ("str", ("r", "latency")),
    "webhook-latency-per-kib": ("duration", ("r", "per_kib")),
    "webhook-latency-per-inflight": ("duration", ("r", "per_inflight")),
    "webhook-failure-rate": ("float", ("r", "failure_rate")),
    "webhook-error-status": ("int", ("r", "error_status")),
    "webhook-outage": ("list", ("r", "outages")),
    "webhook-max-body": ("size", ("r", "max_body")),
    "log-write-latency": ("str", ("r", "log_write_latency")),
    "log-failure-rate": ("float", ("r", "log_failure_rate")),
    "backends": ("list", ("s", "backends")),
    "drain": ("bool", ("s", "drain")),
}
NUMERIC = ("rate", "duration", "int", "float", "size")
BURST_KEYS = ("on", "off", "mean-on", "mean-off")


def _flag_kind(name: str) -> str:
    p = FLAGS_BY_NAME[name].parse
    return {parse_int: "int", parse_float32: "float", parse_dur: "duration", parse_bool: "bool"}.get(p, "str")


def canonical(key: Any) -> str:
    """``--audit-x`` / ``audit_x`` / ``webhook_latency`` -> the canonical name, or InputError."""
    if not isinstance(key, str) or not key.strip("-"):
        raise InputError(f"{key!r}: a parameter name must be a string")
    name = key.strip().lstrip("-").replace("_", "-")
    if name.startswith("audit-"):
        if name not in FLAGS_BY_NAME:
            close = difflib.get_close_matches(name, FLAGS_BY_NAME, n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise InputError(f"--{name}: unknown audit flag{hint}")
        return name
    if name not in OPTIONS:
        close = difflib.get_close_matches(name, OPTIONS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(f"{key}: unknown parameter; {hint}use an --audit-* flag or one of {', '.join(OPTIONS)}")
    return name


def kind_of(name: str) -> str:
    return _flag_kind(name) if name.startswith("audit-") else OPTIONS[name][0]


def is_flag(name: str) -> bool:
    return name.startswith("audit-")


def numeric_value(name: str, value: Any) -> float | None:
    """The value as a number for ordering (durations in seconds, sizes in bytes), or None."""
    kind = kind_of(name)
    try:
        if kind == "rate":
            return parse_rate(value, name)
        if kind == "duration":
            return parse_duration(value, name)
        if kind == "size":
            return float(parse_size(value, name))
        if kind in ("int", "float"):
            if isinstance(value, bool):
                return None
            return float(value)
    except (InputError, TypeError, ValueError):
        return None
    return None


def check_value(name: str, value: Any) -> None:
    """Parse one value the way its option will be parsed (InputError names the value)."""
    kind = kind_of(name)
    if is_flag(name):
        FLAGS_BY_NAME[name].parse(name, _fmt(value))
        return
    if kind in ("rate", "duration", "size", "int", "float") and numeric_value(name, value) is None:
        raise InputError(f"{name}: {value!r} is not a valid {kind}")
    if kind == "int" and float(value) != int(float(value)):
        raise InputError(f"{name}: {value!r} is not an integer")
    if kind == "bool" and not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
        raise InputError(f"{name}: {value!r} is not a boolean; use true or false")
    if kind == "list" and not isinstance(value, (str, list)):
        raise InputError(f"{name}: {value!r}: expected a string or a list of strings")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


MAX_POINTS = 100_000  # points of one sweep; counted before anything is built


@dataclass
class Axis:
    name: str
    values: list[Any] | None = None  # discrete values
    lo: float | None = None  # range
    hi: float | None = None
    log: bool = False
    steps: int | None = None
    integer: bool = False
    key: str = ""  # as written in the spec (for error lines)

    @property
    def is_range(self) -> bool:
        return self.values is None

    def grid_values(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        assert self.lo is not None and self.hi is not None and self.steps
        xs = np.geomspace(self.lo, self.hi, self.steps) if self.log else np.linspace(self.lo, self.hi, self.steps)
        return [self._cast(x) for x in xs]

    def at(self, u: float) -> Any:
        """The value at quantile ``u`` in [0, 1) (discrete: the value's stratum)."""
        if self.values is not None:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        assert self.lo is not None and self.hi is not None
        if self.log:
            x = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            x = self.lo + u * (self.hi - self.lo)
        return self._cast(x)

    def _cast(self, x: float) -> Any:
        if self.integer:
            return int(round(float(x)))
        return float(f"{float(x):.6g}")  # six significant digits keep point ids and tables tidy

    def to_dict(self) -> Any:
        if self.values is not None:
            return list(self.values)
        d: dict[str, Any] = {"min": self.lo, "max": self.hi}
        if self.log:
            d["log"] = True
        if self.steps:
            d["steps"] = self.steps
        return d


@dataclass
class SweepSpec:
    base: dict[str, Any] = field(default_factory=dict)
    axes: list[Axis] = field(default_factory=list)
    sample: str = "grid"
    n: int | None = None
    sample_seed: int = 1
    seeds: int = 1
    seed: int = 1
    engine: str = "fast"
    source: str = "spec"
    root: Path = field(default_factory=Path.cwd)  # where relative trace / rate-series paths start

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    @property
    def input_names(self) -> list[str]:
        names = list(self.base)
        names += [a for a in self.axis_names if a not in self.base]
        return names

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return {"base": dict(self.base), "axes": {a.name: a.to_dict() for a in self.axes}, "sample": self.sample,
                "n": self.n, "sample_seed": self.sample_seed, "seeds": self.seeds, "seed": self.seed,
                "engine": self.engine}

    def validate(self, err: Callable[[tuple[str, ...], str], InputError] | None = None) -> SweepSpec:
        def fail(key: tuple[str, ...], msg: str) -> InputError:
            return err(key, msg) if err else InputError(f"{self.source}: {'.'.join(key)}: {msg}")

        if self.sample not in SAMPLERS:
            raise fail(("sample",), f"{self.sample!r}: use grid, random or lhs")
        if self.sample in ("random", "lhs") and (not self.n or self.n <= 0):
            raise fail(("n",) if self.n is not None else ("sample",), f"sample {self.sample} needs n > 0 points")
        if self.sample == "grid":
            for a in self.axes:
                if a.is_range and not a.steps:
                    raise fail(("axes", a.key or a.name), "a range on a grid needs steps: K (or use sample: random / lhs)")
        if self.seeds < 1:
            raise fail(("seeds",), f"{self.seeds}: must be >= 1")

        if self.engine not in ENGINES:
            raise fail(("engine",), f"{self.engine!r}: use one of {', '.join(ENGINES)}")
        configs, total = self.count_configs(), self.count()
        if total > MAX_POINTS:
            key = ("n",) if self.sample != "grid" else (("seeds",) if configs <= MAX_POINTS else ("axes",))
            raise fail(key, f"{total:,} points ({configs:,} configs x {self.seeds:,} seeds), above the limit of "
                            f"{MAX_POINTS:,}; use fewer values or steps, fewer seeds, or sample: random / lhs")
        return self

    def count_configs(self) -> int:
        """How many parameter combinations :meth:`configs` makes, without making them."""
        if not self.axes:
            return 1
        if self.sample != "grid":
            return int(self.n or 0)
        return math.prod(len(a.values) if a.values is not None else int(a.steps or 0) for a in self.axes)

    def count(self) -> int:
        """How many points (configs x seeds) :meth:`points` makes, without making them."""
        return self.count_configs() * self.seeds

    # ---- points -------------------------------------------------------------------------------
    def configs(self) -> list[dict[str, Any]]:
        """The sampled parameter combinations (axis name -> value), before seeds."""
        if not self.axes:
            return [{}]
        if self.sample == "grid":
            return [dict(zip(self.axis_names, combo)) for combo in itertools.product(*(a.grid_values() for a in self.axes))]
        rng = np.random.Generator(np.random.PCG64(self.sample_seed))
        n = int(self.n or 0)
        cols: list[list[Any]] = []
        for a in self.axes:
            if self.sample == "random":
                us = rng.random(n)
            else:  # Latin hypercube: one point per stratum, strata shuffled per axis
                us = (rng.permutation(n) + rng.random(n)) / n
            cols.append([a.at(float(u)) for u in us])
        return [dict(zip(self.axis_names, vals)) for vals in zip(*cols)]

    def points(self) -> list[tuple[dict[str, Any], int]]:
        """(inputs, seed) for every point: base merged with each config, times the seeds."""
        out = []
        for cfg in self.configs():
            inputs = {**self.base, **cfg}
            for s in self.seed_list():
                out.append((inputs, s))
        return out


# ---- building a scenario from one point ------------------------------------------------------------
def build_point(inputs: dict[str, Any], seed: int, root: Path | None = None):
    """Inputs (canonical names) + seed -> a validated Scenario. Raises InputError."""
    flag_args = [f"--{k}={_fmt(v)}" for k, v in inputs.items() if is_flag(k)]
    flags = parse_flags(flag_args, source="sweep point")
    wo, ro = WorkloadOptions(), ReceiverOptions()
    burst: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for k, v in inputs.items():
        if is_flag(k):
            continue
        kind, (obj, attr) = OPTIONS[k]
        if obj == "burst":
            burst[attr] = _fmt(v)
            continue
        if kind == "list":
            val: Any = [s.strip() for s in v.split(",")] if isinstance(v, str) else [str(x) for x in v]
            if k == "webhook-outage" and isinstance(v, str):
                val = [v]
        elif kind == "int":
            val = int(float(v))
        elif kind == "float":
            val = float(v)
        elif kind == "bool":
            val = v if isinstance(v, bool) else str(v).lower() == "true"
        elif kind == "path":
            p = Path(str(v))
            val = str(p if p.is_absolute() or root is None else root / p)
        elif k == "weights" and isinstance(v, list):
            val = ",".join(_fmt(x) for x in v)
        else:
            val = _fmt(v)
        if obj == "w":
            setattr(wo, attr, val)
        elif obj == "r":
            setattr(ro, attr, val)
        else:
            extra[attr] = val
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
    return build_scenario(flags, wo, ro, seed=seed, backends=extra.get("backends"), drain=extra.get("drain", True))


def point_id(scenario_dict: dict[str, Any], seed: int, engine: str) -> str:
    """Stable id of a point: hash of its scenario (which holds the seed), the seed and the engine."""
    blob = json.dumps({"scenario": scenario_dict, "seed": seed, "engine": engine}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def input_id(inputs: dict[str, Any], seed: int, engine: str) -> str:
    """Id of a point whose scenario could not be built: hash of its inputs instead."""
    blob = json.dumps({"inputs": inputs, "seed": seed, "engine": engine}, sort_keys=True, separators=(",", ":"), default=str)
    return "x" + hashlib.sha256(blob.encode()).hexdigest()[:15]


# ---- loading ---------------------------------------------------------------------------------------
def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """(path of keys) -> 1-based line, from the YAML node tree (JSON is YAML too)."""
    out: dict[tuple[str, ...], int] = {}
    try:
        nodes = yamlsafe.compose_all(text, "sweep spec")
    except InputError:  # the loader itself reports it; line numbers are a nicety
        return out
    node = nodes[0] if nodes else None

    def walk(n: Any, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = str(k.value)
                out[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                out[path + (str(i),)] = v.start_mark.line + 1

    if node is not None:
        walk(node, ())
    return out


class _Where:
    def __init__(self, source: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source, self.lines = source, lines

    def err(self, path: tuple[str, ...], msg: str) -> InputError:
        line = None
        for i in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:i]))
            if line:
                break
        loc = f"{self.source}:{line}" if line else self.source
        key = ".".join(path)
        for name in {p.lstrip("-") for p in path[-2:]}:  # "axes.rate.1: rate: ..." -> "axes.rate.1: ..."
            for pre in (f"--{name}: ", f"{name}: ", f"--{name.replace('_', '-')}: ", f"{name.replace('_', '-')}: "):
                if msg.startswith(pre):
                    msg = msg[len(pre):]
        return InputError(f"{loc}: {key}: {msg}" if key else f"{loc}: {msg}")


def _int(v: Any, path: tuple[str, ...], w: _Where, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise w.err(path, f"{v!r} is not an integer")
    try:
        f = float(v)
    except ValueError:
        raise w.err(path, f"{v!r} is not an integer") from None
    if f != int(f) or f < lo:
        raise w.err(path, f"{v!r}: expected an integer >= {lo}")
    return int(f)


def _axis(name: str, raw: Any, path: tuple[str, ...], w: _Where) -> Axis:
    kind = kind_of(name)
    if isinstance(raw, list):
        if not raw:
            raise w.err(path, "empty list of values")
        for i, v in enumerate(raw):
            try:
                check_value(name, v)
            except InputError as e:
                raise w.err(path + (str(i),), str(e)) from None
        if len({json.dumps(v, sort_keys=True, default=str) for v in raw}) != len(raw):
            raise w.err(path, "repeated values")
        return Axis(name, values=list(raw))
    if isinstance(raw, dict):
        if kind not in NUMERIC:
            raise w.err(path, f"a range needs a numeric parameter; {name} is a {kind}: give a list of values")
        unknown = set(raw) - {"min", "max", "log", "steps"}
        if unknown:
            raise w.err(path + (sorted(unknown)[0],), "unknown key; a range has min, max, log, steps")
        if "min" not in raw or "max" not in raw:
            raise w.err(path, "a range needs min and max")
        lo, hi = numeric_value(name, raw["min"]), numeric_value(name, raw["max"])
        if lo is None:
            raise w.err(path + ("min",), f"{raw['min']!r} is not a valid {kind}")
        if hi is None:
            raise w.err(path + ("max",), f"{raw['max']!r} is not a valid {kind}")
        if not hi >= lo:
            raise w.err(path, f"max {raw['max']!r} is below min {raw['min']!r}")
        log = bool(raw.get("log", False))
        if log and lo <= 0:
            raise w.err(path + ("log",), "a log range needs min > 0")
        steps = _int(raw["steps"], path + ("steps",), w, 1) if "steps" in raw else None
        return Axis(name, lo=lo, hi=hi, log=log, steps=steps, integer=kind in ("int", "size"))
    # a single scalar: an axis with one value
    try:
        check_value(name, raw)
    except InputError as e:
        raise w.err(path, str(e)) from None
    return Axis(name, values=[raw])


def spec_from_dict(d: Any, source: str = "spec", lines: dict[tuple[str, ...], int] | None = None,
                   root: Path | None = None) -> SweepSpec:
    w = _Where(source, lines or {})
    if not isinstance(d, dict):
        raise w.err((), "expected a mapping with base, axes, sample, seeds, ...")
    for k in d:
        if k not in TOP_KEYS:
            close = difflib.get_close_matches(str(k), TOP_KEYS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise w.err((str(k),), f"unknown key; {hint}valid keys: {', '.join(TOP_KEYS)}")
    base: dict[str, Any] = {}
    raw_base = d.get("base") or {}
    if not isinstance(raw_base, dict):
        raise w.err(("base",), "expected a mapping of parameter: value")
    for k, v in raw_base.items():
        try:
            name = canonical(k)
            check_value(name, v)
        except InputError as e:
            raise w.err(("base", str(k)), str(e)) from None
        if name in base:
            raise w.err(("base", str(k)), f"{name} given twice")
        base[name] = v
    axes: list[Axis] = []
    raw_axes = d.get("axes") or {}
    if not isinstance(raw_axes, dict):
        raise w.err(("axes",), "expected a mapping of parameter: [values] or {min, max}")
    for k, v in raw_axes.items():
        try:
            name = canonical(k)
        except InputError as e:
            raise w.err(("axes", str(k)), str(e)) from None
        if name in [a.name for a in axes]:
            raise w.err(("axes", str(k)), f"{name} given twice")
        ax = _axis(name, v, ("axes", str(k)), w)
        ax.key = str(k)
        axes.append(ax)
    sample = d.get("sample", "grid")
    if not isinstance(sample, str) or sample not in SAMPLERS:
        raise w.err(("sample",), f"{sample!r}: use grid, random or lhs")
    spec = SweepSpec(
        base=base, axes=axes, sample=sample,
        n=_int(d["n"], ("n",), w, 1) if d.get("n") is not None else None,
        sample_seed=_int(d.get("sample_seed", 1), ("sample_seed",), w),
        seeds=_int(d.get("seeds", 1), ("seeds",), w, 1),
        seed=_int(d.get("seed", 1), ("seed",), w),
        engine=str(d.get("engine", "fast")),
        source=source, root=root or Path.cwd())
    return spec.validate(w.err)


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    text = yamlsafe.decode(yamlsafe.read_bytes(p, "sweep spec"), str(path))
    if p.suffix == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise InputError(f"{path}: nested too deeply; refused") from None
    else:
        d = yamlsafe.load(text, str(path))
    return spec_from_dict(d, source=str(path), lines=_line_map(text), root=p.resolve().parent)


def parse_cli_axis(text: str) -> tuple[str, Any]:
    """``name=v1,v2,v3`` or ``name=LO..HI[:log][:steps=K]`` -> (name, raw axis for spec_from_dict)."""
    name, eq, rhs = text.partition("=")
    if not eq or not rhs:
        raise InputError(f"--axis {text}: expected NAME=V1,V2,... or NAME=MIN..MAX[:log]")
    if ".." in rhs:
        rng, *opts = rhs.split(":")
        lo, _, hi = rng.partition("..")
        raw: dict[str, Any] = {"min": _scalar(lo), "max": _scalar(hi)}
        for o in opts:
            if o == "log":
                raw["log"] = True
            elif o.startswith("steps="):
                raw["steps"] = o[6:]
            else:
                raise InputError(f"--axis {text}: unknown range option {o!r}; use :log or :steps=K")
        return name, raw
    return name, [_scalar(x) for x in rhs.split(",")]


def parse_cli_set(text: str) -> tuple[str, Any]:
    name, eq, rhs = text.partition("=")
    if not eq:
        raise InputError(f"--set {text}: expected NAME=VALUE")
    return name, _scalar(rhs)


def _scalar(s: str) -> Any:
    s = s.strip()
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    return s
