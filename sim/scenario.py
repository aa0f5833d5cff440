"""One ``Scenario`` in, one ``Result`` out: the interface every engine implements.

A scenario is the apiserver's audit flags, the workload, the receiver's behaviour, the log
writer's cost, which backends are enabled, and the seed. It round-trips through JSON
(``tune simulate --scenario FILE``), where flags are written as kube-apiserver spells them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from audit_tune.basics import files, jsondata, yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.basics.version import __version__
from audit_tune.sim.config import AuditFlags, flags_from_options
from audit_tune.sim.latency import parse_latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.units import format_duration, parse_duration
from audit_tune.sim.workload import Arrivals, OnOff, RateProfile, RequestClass, Workload


@dataclass(frozen=True)
class Scenario:
    flags: AuditFlags = field(default_factory=AuditFlags)
    workload: Workload = field(default_factory=Workload)
    receiver: Receiver = field(default_factory=Receiver)
    log_writer: LogWriter = field(default_factory=LogWriter)
    backends: tuple[str, ...] = ("webhook",)  # enabled backends, union order is always log then webhook
    seed: int = 1
    drain: bool = True  # shut down like the apiserver at the end (drain buffer, wait for retries)
    request_timeout: float = 60.0
    occupancy_interval: float = 0.0  # 0 = automatic (about 600 points)
    # tokens in each buffered backend's throttle bucket at t=0; None = full (burst), as when the
    # apiserver starts. A replay of a window that starts mid-run may know better (loadgen/verify.py).
    throttle_initial_tokens: float | None = None
    # graceful termination at the end (and at each restart): sim/shutdown.py
    shutdown: ShutdownOptions = field(default_factory=ShutdownOptions)
    # statistics kept for callers that read them: without them the run and every count are the
    # same, only the result's delivery_latency_seconds (and p50/p90/p99) or occupancy series are empty
    record_latency: bool = True
    record_occupancy: bool = True

    def validate(self) -> Scenario:
        if not self.backends or any(b not in ("log", "webhook") for b in self.backends):
            raise InputError(f"backends {list(self.backends)}: enable 'webhook' and/or 'log'")
        self.flags.validate(self.enabled)
        self.workload.validate()
        self.shutdown.validate(self.workload.duration)
        if not self.request_timeout > 0:
            raise InputError(f"--request-timeout={self.request_timeout}: must be a positive duration")
        if self.shutdown.restart_at and not self.drain:
            raise InputError("--restart-at needs the apiserver's shutdown sequence; drop --no-drain")
        r = self.receiver
        if not 0 <= r.error_rate <= 1:
            raise InputError(f"--webhook-failure-rate={r.error_rate}: must be within [0, 1]")
        if not 0 <= self.log_writer.error_rate <= 1:
            raise InputError(f"--log-failure-rate={self.log_writer.error_rate}: must be within [0, 1]")
        if self.throttle_initial_tokens is not None and not self.throttle_initial_tokens >= 0:
            raise InputError(f"throttle_initial_tokens={self.throttle_initial_tokens}: must be >= 0")
        for o in r.outages:
            if o.kind not in ("status", "refuse", "hang") or not o.end > o.start:
                raise InputError(f"--webhook-outage {o.start}-{o.end}:{o.kind}: need start < end and kind status, refuse or hang")
            if o.retry_after is not None and (o.kind != "status" or o.retry_after < 0):
                raise InputError(f"--webhook-outage {o.start}-{o.end}:{o.kind}: a Retry-After needs a status answer and >= 0 s")
        return self

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(b for b in ("log", "webhook") if b in self.backends)

    @property
    def all_batch(self) -> bool:
        return all(self.flags.backend(b).mode == "batch" for b in self.enabled)

    @property
    def interval(self) -> float:
        if self.occupancy_interval > 0:
            return self.occupancy_interval
        d = self.workload.duration
        raw = d / 600.0
        for nice in (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600):
            if raw <= nice:
                return float(nice)
        return 3600.0

    def with_flags(self, flags: AuditFlags) -> Scenario:
        return replace(self, flags=flags)

    # ---- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> JsonObject:
        w = self.workload
        a = w.arrivals
        arr: JsonObject = {"process": a.process}
        if a.process == "trace":
            arr["trace"] = list(a.trace)
            if a.trace_instances:
                arr["trace_instances"] = list(a.trace_instances)
        elif a.onoff:
            arr["onoff"] = {"on": a.onoff.on, "off": a.onoff.off, "mean_on": a.onoff.mean_on, "mean_off": a.onoff.mean_off}
        else:
            arr["profile"] = {"times": list(a.profile.times), "rates": list(a.profile.rates), "interp": a.profile.interp}
        r = self.receiver
        return {
            "seed": self.seed,
            "backends": list(self.backends),
            "drain": self.drain,
            "request_timeout": format_duration(self.request_timeout),
            "throttle_initial_tokens": self.throttle_initial_tokens,
            "shutdown": {"delay": format_duration(self.shutdown.delay),
                         "watch_grace": format_duration(self.shutdown.watch_grace),
                         "restart_at": [format_duration(t) for t in self.shutdown.restart_at],
                         "kill_after": format_duration(self.shutdown.kill_after),
                         "restart_gap": format_duration(self.shutdown.restart_gap)},
            "flags": dict(self.flags.to_dict()),
            "workload": {
                "duration": format_duration(w.duration),
                "instances": w.instances,
                "weights": list(w.weights),
                "arrivals": arr,
                "omit_stages": list(sorted(w.policy_omit_stages)),
                "classes": [
                    {"name": c.name, "weight": c.weight, "level": c.level, "long_running": c.long_running,
                     "duration": c.duration, "first_byte": c.first_byte, "panic": c.panic,
                     "omit_stages": list(sorted(c.omit_stages)), "sizes": list(c.stage_sizes())}
                    for c in w.classes
                ],
            },
            "receiver": {
                "latency": r.latency.describe(), "per_kib": r.per_kib, "per_inflight": r.per_inflight,
                "error_rate": r.error_rate, "error_status": r.error_status,
                "outages": [_outage_dict(o) for o in r.outages],
                "max_body_bytes": r.max_body_bytes, "timeout": r.timeout,
            },
            "log_writer": {"per_event": self.log_writer.per_event.describe(), "per_batch": self.log_writer.per_batch,
                           "error_rate": self.log_writer.error_rate},
            **({} if self.record_latency and self.record_occupancy else
               {"record": {"latency": self.record_latency, "occupancy": self.record_occupancy}}),
        }

    @staticmethod
    def from_dict(d: JsonObject, source: str = "scenario") -> Scenario:
        try:
            return _from_dict(d)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{source}: invalid scenario field ({type(e).__name__}: {e})") from None

    @staticmethod
    def load(path: str | Path) -> Scenario:
        text = yamlsafe.decode(files.read_bytes(path, "--scenario"), f"--scenario {path}")
        try:
            d: JsonValue
            if str(path).endswith((".yaml", ".yml")):
                d = yamlsafe.as_json(yamlsafe.load(text, f"--scenario {path}"), f"--scenario {path}")
            else:
                d = jsondata.loads(text, f"--scenario {path}")
        except InputError:
            raise
        except (ValueError, RecursionError) as e:
            raise InputError(f"--scenario {path}: not valid {'YAML' if str(path).endswith(('.yaml', '.yml')) else 'JSON'} ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"--scenario {path}: expected a mapping at the top level")
        return Scenario.from_dict(d, source=f"--scenario {path}").validate()


# Readers for the fields of a scenario document. They convert as the scenario format always has
# (numbers may be written as strings) and raise TypeError or ValueError, which Scenario.from_dict
# turns into one line naming the file.

def _obj(v: JsonValue, what: str) -> JsonObject:
    if not isinstance(v, dict):
        raise TypeError(f"{what} must be a mapping, not {type(v).__name__}")
    return v


def _seq(v: JsonValue, what: str) -> list[JsonValue]:
    if not isinstance(v, list):
        raise TypeError(f"{what} must be a list, not {type(v).__name__}")
    return v


def _float(v: JsonValue, what: str) -> float:
    if not isinstance(v, (int, float, str)):
        raise TypeError(f"{what} must be a number, not {type(v).__name__}")
    return float(v)


def _int(v: JsonValue, what: str) -> int:
    if not isinstance(v, (int, float, str)):
        raise TypeError(f"{what} must be an integer, not {type(v).__name__}")
    return int(v)


def _str(v: JsonValue, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a string, not {type(v).__name__}")
    return v


def _strs(v: JsonValue, what: str) -> list[str]:
    return [_str(x, what) for x in _seq(v, what)]


def _dur(v: JsonValue, what: str) -> float:
    if not isinstance(v, (int, float, str)) or isinstance(v, bool):
        raise TypeError(f"{what} must be a duration, not {type(v).__name__}")
    return parse_duration(v, what)


def _class(i: int, v: JsonValue) -> RequestClass:
    c = _obj(v, f"workload.classes[{i}]")
    sizes = c.get("sizes")
    return RequestClass(
        name=_str(c.get("name", f"class{i}"), "class name"), weight=_float(c.get("weight", 1.0), "class weight"),
        level=_str(c.get("level", "Metadata"), "class level"), long_running=bool(c.get("long_running", False)),
        duration=_dur(c.get("duration", 0.0), "duration"), first_byte=_dur(c.get("first_byte", 0.0), "first_byte"),
        panic=bool(c.get("panic", False)), omit_stages=frozenset(_strs(c.get("omit_stages", []), "omit_stages")),
        sizes=_sizes(sizes) if sizes else None)


def _sizes(v: JsonValue) -> tuple[int, int, int, int]:
    sizes = [_int(x, "sizes") for x in _seq(v, "sizes")]
    if len(sizes) != 4:
        raise ValueError(f"sizes must be 4 byte counts (RequestReceived, ResponseStarted, ResponseComplete, Panic), got {len(sizes)}")
    return sizes[0], sizes[1], sizes[2], sizes[3]


def _outage(v: JsonValue) -> Outage:
    o = _obj(v, "receiver.outages[]")
    retry_after = o.get("retry_after")
    return Outage(_dur(o["start"], "outage.start"), _dur(o["end"], "outage.end"), _str(o.get("kind", "status"), "outage.kind"),
                  _int(o.get("status", 503), "outage.status"), None if retry_after is None else _int(retry_after, "outage.retry_after"))


def _arrivals(ad: JsonObject) -> Arrivals:
    proc = _str(ad.get("process", "poisson"), "arrivals.process")
    if proc == "trace":
        return Arrivals("trace", trace=tuple(_float(x, "trace") for x in _seq(ad["trace"], "trace")),
                        trace_instances=tuple(_int(x, "trace_instances") for x in _seq(ad.get("trace_instances", []), "trace_instances")))
    if "onoff" in ad:
        o = _obj(ad["onoff"], "onoff")
        return Arrivals(proc, onoff=OnOff(_float(o["on"], "onoff.on"), _float(o["off"], "onoff.off"),
                                          _dur(o["mean_on"], "mean_on"), _dur(o["mean_off"], "mean_off")))
    p = _obj(ad.get("profile", {"times": [0.0], "rates": [_float(ad.get("rate", 100.0), "rate")]}), "profile")
    return Arrivals(proc, RateProfile(tuple(_float(x, "profile.times") for x in _seq(p["times"], "profile.times")),
                                      tuple(_float(x, "profile.rates") for x in _seq(p["rates"], "profile.rates")),
                                      _str(p.get("interp", "step"), "profile.interp")))


def _from_dict(d: JsonObject) -> Scenario:
    wd = _obj(d.get("workload", {}), "workload")
    arrivals = _arrivals(_obj(wd.get("arrivals", {}), "workload.arrivals"))
    classes = tuple(_class(i, c) for i, c in enumerate(_seq(wd.get("classes", [{}]), "workload.classes")))
    workload = Workload(arrivals=arrivals, duration=_dur(wd.get("duration", 60.0), "workload.duration"), classes=classes,
                        policy_omit_stages=frozenset(_strs(wd.get("omit_stages", []), "workload.omit_stages")),
                        instances=_int(wd.get("instances", 1), "workload.instances"),
                        weights=tuple(_float(x, "workload.weights") for x in _seq(wd.get("weights", []), "workload.weights")))
    rd = _obj(d.get("receiver", {}), "receiver")
    receiver = Receiver(
        latency=parse_latency(_str(rd.get("latency", "50ms"), "receiver.latency"), "receiver.latency"),
        per_kib=_float(rd.get("per_kib", 0.0), "receiver.per_kib"),
        per_inflight=_float(rd.get("per_inflight", 0.0), "receiver.per_inflight"),
        error_rate=_float(rd.get("error_rate", 0.0), "receiver.error_rate"),
        error_status=_int(rd.get("error_status", 500), "receiver.error_status"),
        outages=tuple(_outage(o) for o in _seq(rd.get("outages", []), "receiver.outages")),
        max_body_bytes=_int(rd.get("max_body_bytes", 0), "receiver.max_body_bytes"),
        timeout=_dur(rd.get("timeout", 30.0), "receiver.timeout"))
    ld = _obj(d.get("log_writer", {}), "log_writer")
    log_writer = LogWriter(per_event=parse_latency(_str(ld.get("per_event", "0s"), "log_writer.per_event"), "log_writer.per_event"),
                           per_batch=_dur(ld.get("per_batch", 0.0), "log_writer.per_batch"),
                           error_rate=_float(ld.get("error_rate", 0.0), "log_writer.error_rate"))
    flags = flags_from_options(_obj(d.get("flags", {}), "flags"))
    sd = _obj(d.get("shutdown", {}), "shutdown")
    shutdown = ShutdownOptions(delay=_dur(sd.get("delay", 0.0), "shutdown.delay"),
                               watch_grace=_dur(sd.get("watch_grace", 0.0), "shutdown.watch_grace"),
                               restart_at=tuple(_dur(t, "shutdown.restart_at") for t in _seq(sd.get("restart_at", []), "shutdown.restart_at")),
                               kill_after=_dur(sd.get("kill_after", 30.0), "shutdown.kill_after"),
                               restart_gap=_dur(sd.get("restart_gap", 5.0), "shutdown.restart_gap"))
    tokens = d.get("throttle_initial_tokens")
    rec = _obj(d.get("record", {}), "record")
    return Scenario(flags=flags, workload=workload, receiver=receiver, log_writer=log_writer,
                    backends=tuple(_strs(d.get("backends", ["webhook"]), "backends")), seed=_int(d.get("seed", 1), "seed"),
                    drain=bool(d.get("drain", True)), request_timeout=_dur(d.get("request_timeout", 60.0), "request_timeout"),
                    occupancy_interval=_float(d.get("occupancy_interval", 0.0), "occupancy_interval"),
                    throttle_initial_tokens=None if tokens is None else _float(tokens, "throttle_initial_tokens"),
                    shutdown=shutdown, record_latency=_flag(rec.get("latency", True), "record.latency"),
                    record_occupancy=_flag(rec.get("occupancy", True), "record.occupancy"))


def _flag(v: JsonValue, what: str) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"{what}: {str(v)[:40]!r} is not true or false")
    return v


def result_config(sc: Scenario) -> JsonObject:
    """The scenario as a result records it: its dict, long traces summarised, the changed flags and the
    tool version (every engine's ``Result.config``)."""
    d = sc.to_dict()
    arrivals = _obj(_obj(d["workload"], "workload")["arrivals"], "arrivals")
    if arrivals.get("trace") and len(sc.workload.arrivals.trace) > 1000:
        arrivals["trace"] = f"<{len(sc.workload.arrivals.trace)} arrival times>"
    d["flags_changed"] = list(sc.flags.to_flags(only_changed=True))
    d["tool_version"] = __version__
    return d


def is_finite(x: float) -> bool:
    return math.isfinite(x)


def _outage_dict(o: Outage) -> JsonObject:
    d: JsonObject = {"start": o.start, "end": o.end, "kind": o.kind, "status": o.status}
    if o.retry_after is not None:
        d["retry_after"] = o.retry_after
    return d
