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
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from audit_tune.analysis.sweep_params import NUMERIC, ParamValue, canonical, check_value, kind_of, numeric_value
from audit_tune.basics import files, jsondata, yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.sim.api import ENGINES

SAMPLERS = ("grid", "random", "lhs")
TOP_KEYS = ("base", "axes", "sample", "n", "sample_seed", "seeds", "seed", "engine")

MAX_POINTS = 100_000  # points of one sweep; counted before anything is built


@dataclass
class Axis:
    name: str
    values: list[ParamValue] | None = None  # discrete values
    lo: float | None = None  # range
    hi: float | None = None
    log: bool = False
    steps: int | None = None
    integer: bool = False
    key: str = ""  # as written in the spec (for error lines)

    @property
    def is_range(self) -> bool:
        return self.values is None

    def grid_values(self) -> list[ParamValue]:
        if self.values is not None:
            return list(self.values)
        assert self.lo is not None and self.hi is not None and self.steps
        xs = np.geomspace(self.lo, self.hi, self.steps) if self.log else np.linspace(self.lo, self.hi, self.steps)
        return [self._cast(x) for x in xs]

    def at(self, u: float) -> ParamValue:
        """The value at quantile ``u`` in [0, 1) (discrete: the value's stratum)."""
        if self.values is not None:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        assert self.lo is not None and self.hi is not None
        if self.log:
            x = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            x = self.lo + u * (self.hi - self.lo)
        return self._cast(x)

    def _cast(self, x: float) -> int | float:
        if self.integer:
            return int(round(float(x)))
        return float(f"{float(x):.6g}")  # six significant digits keep point ids and tables tidy

    def to_dict(self) -> JsonValue:
        if self.values is not None:
            return list(self.values)
        d: JsonObject = {"min": self.lo, "max": self.hi}
        if self.log:
            d["log"] = True
        if self.steps:
            d["steps"] = self.steps
        return d


@dataclass
class SweepSpec:
    base: dict[str, ParamValue] = field(default_factory=dict)
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

    def to_dict(self) -> JsonObject:
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
    def configs(self) -> list[dict[str, ParamValue]]:
        """The sampled parameter combinations (axis name -> value), before seeds."""
        if not self.axes:
            return [{}]
        if self.sample == "grid":
            return [dict(zip(self.axis_names, combo)) for combo in itertools.product(*(a.grid_values() for a in self.axes))]
        rng = np.random.Generator(np.random.PCG64(self.sample_seed))
        n = int(self.n or 0)
        cols: list[list[ParamValue]] = []
        for a in self.axes:
            if self.sample == "random":
                us = rng.random(n)
            else:  # Latin hypercube: one point per stratum, strata shuffled per axis
                us = (rng.permutation(n) + rng.random(n)) / n
            cols.append([a.at(float(u)) for u in us])
        return [dict(zip(self.axis_names, vals)) for vals in zip(*cols)]

    def points(self) -> list[tuple[dict[str, ParamValue], int]]:
        """(inputs, seed) for every point: base merged with each config, times the seeds."""
        out = []
        for cfg in self.configs():
            inputs = {**self.base, **cfg}
            for s in self.seed_list():
                out.append((inputs, s))
        return out


# ---- loading ---------------------------------------------------------------------------------------
def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """(path of keys) -> 1-based line, from the YAML node tree (JSON is YAML too)."""
    out: dict[tuple[str, ...], int] = {}
    try:
        nodes = yamlsafe.compose_all(text, "sweep spec")
    except InputError:  # the loader itself reports it; line numbers are a nicety
        return out
    node = nodes[0] if nodes else None

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
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


def _int(v: JsonValue, path: tuple[str, ...], w: _Where, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise w.err(path, f"{v!r} is not an integer")
    try:
        f = float(v)
    except ValueError:
        raise w.err(path, f"{v!r} is not an integer") from None
    if f != int(f) or f < lo:
        raise w.err(path, f"{v!r}: expected an integer >= {lo}")
    return int(f)


def _axis(name: str, raw: JsonValue, path: tuple[str, ...], w: _Where) -> Axis:
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


def spec_from_dict(d: JsonValue, source: str = "spec", lines: dict[tuple[str, ...], int] | None = None,
                   root: Path | None = None) -> SweepSpec:
    w = _Where(source, lines or {})
    if not isinstance(d, dict):
        raise w.err((), "expected a mapping with base, axes, sample, seeds, ...")
    for k in d:
        if k not in TOP_KEYS:
            close = difflib.get_close_matches(str(k), TOP_KEYS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise w.err((str(k),), f"unknown key; {hint}valid keys: {', '.join(TOP_KEYS)}")
    base: dict[str, ParamValue] = {}
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
    text = yamlsafe.decode(files.read_bytes(p, "sweep spec"), str(path))
    if p.suffix == ".json":
        d = jsondata.loads(text, str(path))
    else:
        d = yamlsafe.as_json(yamlsafe.load(text, str(path)), str(path))
    return spec_from_dict(d, source=str(path), lines=_line_map(text), root=p.resolve().parent)


def parse_cli_axis(text: str) -> tuple[str, JsonValue]:
    """``name=v1,v2,v3`` or ``name=LO..HI[:log][:steps=K]`` -> (name, raw axis for spec_from_dict)."""
    name, eq, rhs = text.partition("=")
    if not eq or not rhs:
        raise InputError(f"--axis {text}: expected NAME=V1,V2,... or NAME=MIN..MAX[:log]")
    if ".." in rhs:
        rng, *opts = rhs.split(":")
        lo, _, hi = rng.partition("..")
        raw: JsonObject = {"min": _scalar(lo), "max": _scalar(hi)}
        for o in opts:
            if o == "log":
                raw["log"] = True
            elif o.startswith("steps="):
                raw["steps"] = o[6:]
            else:
                raise InputError(f"--axis {text}: unknown range option {o!r}; use :log or :steps=K")
        return name, raw
    return name, [_scalar(x) for x in rhs.split(",")]


def parse_cli_set(text: str) -> tuple[str, JsonValue]:
    name, eq, rhs = text.partition("=")
    if not eq:
        raise InputError(f"--set {text}: expected NAME=VALUE")
    return name, _scalar(rhs)


def _scalar(s: str) -> int | float | bool | str:
    s = s.strip()
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    return s
