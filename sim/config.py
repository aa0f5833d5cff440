"""Every ``--audit-log-*`` and ``--audit-webhook-*`` kube-apiserver flag: defaults, validation, parse, print.

Mirrors ``staging/src/k8s.io/apiserver/pkg/server/options/audit.go`` (Kubernetes 1.34 to 1.37):

* ``NewAuditOptions`` gives the defaults: the webhook is ``batch`` mode (buffer 10000, max size 400,
  max wait 30s, throttle on at 10 qps / 15 burst, async delegate); the log is ``blocking``
  (its batch options default to max size 1, no throttle, sync delegate).
* ``Validate`` checks only enabled backends (log: ``--audit-log-path`` set; webhook: a config
  file), for each the batch options only in batch mode (buffer > 0, max size > 0, qps and burst
  > 0 when the throttle is on) and the truncate options always, even with truncation off
  (max-event-size > 0, max-batch-size >= max-event-size); log batch options without
  ``--audit-log-path`` are ignored.
* Log rotation defaults changed in 1.36 (maxage 366, maxbackup 100, maxsize 100); they do not
  affect buffering and are kept only so flags round-trip.

Flags are parsed from kube-apiserver syntax (``--audit-webhook-batch-max-wait=30s``, also
``--flag value`` and bare booleans), from a file of flags, or from a kube-apiserver static pod
manifest, and printed back the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune.basics import files, yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonMapping, JsonObject
from audit_tune.basics.output import log as stderr_log
from audit_tune.sim.units import format_duration, parse_duration

MODES = ("batch", "blocking", "blocking-strict")


@dataclass(frozen=True)
class BatchOptions:
    """``buffered.BatchConfig`` (``plugin/pkg/audit/buffered/buffered.go``)."""

    buffer_size: int
    max_batch_size: int
    max_batch_wait: float  # seconds
    throttle_enable: bool
    throttle_qps: float  # stored as float32 upstream; see effective_qps
    throttle_burst: int
    async_delegate: bool  # hard-wired: webhook True, log False

    @property
    def effective_qps(self) -> float:
        """The qps the token bucket really uses: upstream stores it as float32."""
        return float(np.float32(self.throttle_qps))

    @property
    def drain_capacity(self) -> float:
        """Sustained events/s the collector can drain when the delegate is async: qps x max size."""
        if not self.throttle_enable:
            return float("inf")
        return self.effective_qps * self.max_batch_size


@dataclass(frozen=True)
class TruncateOptions:
    """``truncate.Config`` (``plugin/pkg/audit/truncate/truncate.go``)."""

    enabled: bool = False
    max_batch_size: int = 10 * 1024 * 1024
    max_event_size: int = 100 * 1024


@dataclass(frozen=True)
class BackendOptions:
    mode: str
    batch: BatchOptions
    truncate: TruncateOptions = field(default_factory=TruncateOptions)


@dataclass(frozen=True)
class LogFileOptions:
    path: str = ""
    maxage: int = 366
    maxbackup: int = 100
    maxsize: int = 100
    compress: bool = False
    format: str = "json"
    version: str = "audit.k8s.io/v1"


@dataclass(frozen=True)
class AuditFlags:
    """The effective audit configuration of one kube-apiserver."""

    policy_file: str = ""
    log_file: LogFileOptions = field(default_factory=LogFileOptions)
    log: BackendOptions = field(
        default_factory=lambda: BackendOptions(
            mode="blocking",
            batch=BatchOptions(10000, 1, 0.0, False, 0.0, 0, async_delegate=False),
        )
    )
    webhook_config_file: str = ""
    webhook_initial_backoff: float = 10.0
    webhook_version: str = "audit.k8s.io/v1"
    webhook: BackendOptions = field(
        default_factory=lambda: BackendOptions(
            mode="batch",
            batch=BatchOptions(10000, 400, 30.0, True, 10.0, 15, async_delegate=True),
        )
    )

    # ---- flag table -------------------------------------------------------------------------
    def to_flags(self, only_changed: bool = False, include: Iterable[str] | None = None) -> list[str]:
        """Render as kube-apiserver flags, ``--name=value``, in upstream order."""
        base = AuditFlags()
        wanted = set(include) if include is not None else None
        out = []
        for spec in FLAG_SPECS:
            if spec.deprecated_alias_of:
                continue
            if wanted is not None and spec.name not in wanted:
                continue
            val = spec.get(self)
            if only_changed and val == spec.get(base):
                continue
            out.append(f"--{spec.name}={spec.fmt(val)}")
        return out

    def to_dict(self) -> dict[str, str]:
        """``{flag-name: printed value}`` for every flag; what JSON outputs echo as ``config.flags``."""
        return {s.name: s.fmt(s.get(self)) for s in FLAG_SPECS if not s.deprecated_alias_of}

    def backend(self, name: str) -> BackendOptions:
        if name not in ("log", "webhook"):
            raise ValueError(name)
        opts: BackendOptions = getattr(self, name)
        return opts

    def default_backends(self) -> tuple[str, ...]:
        """Backends the simulator runs for these flags: the webhook always (it is what audit-tune
        is about), the log when ``--audit-log-path`` is set."""
        return ("log", "webhook") if self.log_file.path else ("webhook",)

    def validate(self, backends: Iterable[str] | None = None) -> AuditFlags:
        """Upstream ``AuditOptions.Validate``. Raises InputError naming the first bad flag.

        As upstream, only enabled backends are checked (``backends``; default
        :meth:`default_backends`); for each, the mode, the batch options in batch mode only, and
        the truncate options always, whether truncation is enabled or not; the log file options
        (format, maxage, maxbackup, maxsize) only when the log backend is enabled."""
        enabled = tuple(backends) if backends is not None else self.default_backends()
        for name in ("log", "webhook"):
            if name not in enabled:
                continue
            b = self.backend(name)
            if b.mode not in MODES:
                raise InputError(
                    f"--audit-{name}-mode={b.mode}: invalid audit {name} mode, allowed modes are "
                    f"\"batch,blocking,blocking-strict\""
                )
            if b.mode == "batch":
                c = b.batch
                if c.buffer_size <= 0:
                    raise InputError(f"--audit-{name}-batch-buffer-size={c.buffer_size}: must be a positive number")
                if c.max_batch_size <= 0:
                    raise InputError(f"--audit-{name}-batch-max-size={c.max_batch_size}: must be a positive number")
                if c.throttle_enable:
                    if not c.throttle_qps > 0:
                        raise InputError(
                            f"--audit-{name}-batch-throttle-qps={fmt_float(c.throttle_qps)}: must be a positive "
                            f"number when --audit-{name}-batch-throttle-enable=true"
                        )
                    if c.throttle_burst <= 0:
                        raise InputError(
                            f"--audit-{name}-batch-throttle-burst={c.throttle_burst}: must be a positive number "
                            f"when --audit-{name}-batch-throttle-enable=true"
                        )
            t = b.truncate
            if t.max_event_size <= 0:
                raise InputError(f"--audit-{name}-truncate-max-event-size={t.max_event_size}: must be a positive "
                                 f"number (checked even when truncation is disabled)")
            if t.max_batch_size < t.max_event_size:
                raise InputError(
                    f"--audit-{name}-truncate-max-batch-size={t.max_batch_size}: must be >= "
                    f"--audit-{name}-truncate-max-event-size={t.max_event_size} (checked even when truncation "
                    f"is disabled)"
                )
            version = self.log_file.version if name == "log" else self.webhook_version
            if version not in ("audit.k8s.io/v1",):
                raise InputError(f"--audit-{name}-version={version}: unsupported; the only served version is "
                                 f"audit.k8s.io/v1")
        if "log" in enabled:
            lf = self.log_file
            if lf.format not in ("legacy", "json"):
                raise InputError(f"--audit-log-format={lf.format}: invalid format, allowed formats are \"legacy,json\"")
            for fname, v in (("maxage", lf.maxage), ("maxbackup", lf.maxbackup), ("maxsize", lf.maxsize)):
                if v < 0:
                    raise InputError(f"--audit-log-{fname}={v}: must be >= 0")
        return self

    def spin_warning(self, backends: Iterable[str] | None = None) -> str | None:
        """One line when a synchronous (log) batch backend has max-wait 0 and max-size > 1: its
        collector's timer has always fired, so ``collectEvents`` loops on an empty ``select``
        and keeps a CPU core busy (``plugin/pkg/audit/buffered/buffered.go``; measured by the
        oracle). kube-apiserver starts anyway, so this is a warning, not an error."""
        enabled = tuple(backends) if backends is not None else self.default_backends()
        b = self.log.batch
        if "log" in enabled and self.log.mode == "batch" and b.max_batch_size > 1 and b.max_batch_wait <= 0:
            return (f"warning: --audit-log-batch-max-wait=0s with --audit-log-batch-max-size={b.max_batch_size} "
                    f"makes the log backend's collector spin a CPU core; set a max-wait (e.g. 1s) or max-size 1")
        return None


def fmt_float(x: float) -> str:
    """Print a float as Go's pflag does for a float32: the shortest decimal that round-trips it
    (``0.8``, not ``0.800000011920929``)."""
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def _fmt_bool(b: bool) -> str:
    return "true" if b else "false"


def parse_bool(name: str, s: str) -> bool:
    low = s.strip().lower()
    if low in ("true", "t", "1"):
        return True
    if low in ("false", "f", "0"):
        return False
    raise InputError(f"--{name}={s}: not a boolean; use true or false")


def parse_int(name: str, s: str, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    try:
        v = int(s.strip(), 10)
    except ValueError:
        raise InputError(f"--{name}={s}: not an integer") from None
    if not lo <= v <= hi:
        raise InputError(f"--{name}={s}: out of range [{lo}, {hi}]")
    return v


def parse_float32(name: str, s: str) -> float:
    try:
        v = float(s.strip())
    except ValueError:
        raise InputError(f"--{name}={s}: not a number") from None
    if not np.isfinite(v) or abs(v) > float(np.finfo(np.float32).max):
        raise InputError(f"--{name}={s}: out of range for a float32")
    return v


def parse_dur(name: str, s: str) -> float:
    return parse_duration(s, what=f"--{name}")


def _choice(name: str, allowed: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(n: str, s: str) -> str:
        if s not in allowed:
            raise InputError(f"--{n}={s}: must be one of {', '.join(allowed)}")
        return s
    return parse


def _str(name: str, s: str) -> str:
    return s


@dataclass(frozen=True)
class FlagSpec:
    """One flag: its name, where it lives in :class:`AuditFlags`, how to parse and print it."""

    name: str
    path: tuple[str, ...]
    parse: Callable[[str, str], Any]
    fmt: Callable[[Any], str]
    is_bool: bool = False
    deprecated_alias_of: str | None = None

    def get(self, flags: AuditFlags) -> Any:
        obj: Any = flags
        for p in self.path:
            obj = getattr(obj, p)
        return obj

    def set(self, flags: AuditFlags, value: Any) -> AuditFlags:
        updated: AuditFlags = _set_path(flags, self.path, value)
        return updated


def _set_path(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: _set_path(getattr(obj, path[0]), path[1:], value)})


def _backend_specs(name: str) -> list[FlagSpec]:
    b = (name,)
    specs = [
        FlagSpec(f"audit-{name}-mode", b + ("mode",), _choice("", MODES), str),
        FlagSpec(f"audit-{name}-batch-buffer-size", b + ("batch", "buffer_size"), parse_int, str),
        FlagSpec(f"audit-{name}-batch-max-size", b + ("batch", "max_batch_size"), parse_int, str),
        FlagSpec(f"audit-{name}-batch-max-wait", b + ("batch", "max_batch_wait"), parse_dur, format_duration),
        FlagSpec(f"audit-{name}-batch-throttle-enable", b + ("batch", "throttle_enable"), parse_bool, _fmt_bool, is_bool=True),
        FlagSpec(f"audit-{name}-batch-throttle-qps", b + ("batch", "throttle_qps"), parse_float32, fmt_float),
        FlagSpec(f"audit-{name}-batch-throttle-burst", b + ("batch", "throttle_burst"), parse_int, str),
        FlagSpec(f"audit-{name}-truncate-enabled", b + ("truncate", "enabled"), parse_bool, _fmt_bool, is_bool=True),
        FlagSpec(f"audit-{name}-truncate-max-batch-size", b + ("truncate", "max_batch_size"), parse_int, str),
        FlagSpec(f"audit-{name}-truncate-max-event-size", b + ("truncate", "max_event_size"), parse_int, str),
    ]
    return specs


FLAG_SPECS: list[FlagSpec] = [
    FlagSpec("audit-policy-file", ("policy_file",), _str, str),
    FlagSpec("audit-log-path", ("log_file", "path"), _str, str),
    FlagSpec("audit-log-maxage", ("log_file", "maxage"), parse_int, str),
    FlagSpec("audit-log-maxbackup", ("log_file", "maxbackup"), parse_int, str),
    FlagSpec("audit-log-maxsize", ("log_file", "maxsize"), parse_int, str),
    FlagSpec("audit-log-format", ("log_file", "format"), _str, str),
    FlagSpec("audit-log-compress", ("log_file", "compress"), parse_bool, _fmt_bool, is_bool=True),
    FlagSpec("audit-log-version", ("log_file", "version"), _str, str),
    *_backend_specs("log"),
    FlagSpec("audit-webhook-config-file", ("webhook_config_file",), _str, str),
    FlagSpec("audit-webhook-initial-backoff", ("webhook_initial_backoff",), parse_dur, format_duration),
    FlagSpec("audit-webhook-batch-initial-backoff", ("webhook_initial_backoff",), parse_dur, format_duration,
             deprecated_alias_of="audit-webhook-initial-backoff"),
    FlagSpec("audit-webhook-version", ("webhook_version",), _str, str),
    *_backend_specs("webhook"),
]
FLAGS_BY_NAME = {s.name: s for s in FLAG_SPECS}


def is_audit_flag(arg: str) -> bool:
    return arg.startswith("--audit-")


def parse_flags(args: Iterable[str], base: AuditFlags | None = None, ignore_unknown: bool = False,
                source: str = "") -> AuditFlags:
    """Parse kube-apiserver audit flags. Accepts ``--a=b``, ``--a b`` and bare ``--bool``.

    Unknown ``--audit-*`` flags are errors that list close matches; non-audit flags are errors
    unless ``ignore_unknown`` (used for manifests and flag files of a whole kube-apiserver).
    """
    flags = base or AuditFlags()
    items = list(args)
    where = f" (in {source})" if source else ""
    i = 0
    while i < len(items):
        arg = items[i].strip()
        i += 1
        if not arg:
            continue
        if not arg.startswith("--"):
            if ignore_unknown:
                continue
            raise InputError(f"{arg!r}{where}: expected a flag like --audit-webhook-batch-max-size=400")
        name, eq, value = arg[2:].partition("=")
        spec = FLAGS_BY_NAME.get(name)
        if spec is None:
            if ignore_unknown and not name.startswith("audit-"):
                continue
            if name.startswith("audit-"):
                close = difflib.get_close_matches(name, FLAGS_BY_NAME, n=1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                raise InputError(f"--{name}{where}: unknown audit flag{hint}")
            raise InputError(f"--{name}{where}: not an audit flag; only --audit-* kube-apiserver flags are accepted here")
        if not eq:
            if spec.is_bool:
                value = "true"
            elif i < len(items) and not items[i].startswith("--"):
                value = items[i]
                i += 1
            else:
                raise InputError(f"--{name}{where}: needs a value, e.g. --{name}={spec.fmt(spec.get(AuditFlags()))}")
        parsed = spec.parse(name, value)
        flags = spec.set(flags, parsed)
    return flags.validate()


def load_flags_file(path: str | Path, base: AuditFlags | None = None) -> AuditFlags:
    """Load flags from a file: either flags (one or more per line, ``#`` comments) or a
    kube-apiserver static pod manifest (``spec.containers[].command``/``args``).

    A file that sets no ``--audit-*`` flag at all means "kube-apiserver's defaults"; that is said
    on stderr in one line, since it is more often a wrong file than a wish."""
    text = yamlsafe.decode(files.read_bytes(path, "flags file"), f"flags file {path}")
    stripped = text.lstrip()
    if stripped.startswith(("apiVersion", "kind", "{", "metadata", "spec")) or "\nspec:" in text:
        args = _args_from_manifest(text, str(path))
    else:
        args = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip().rstrip("\\").strip()
            if not line:
                continue
            try:
                args.extend(shlex.split(line))
            except ValueError as e:
                raise InputError(f"{path}:{lineno}: {e}") from None
    if not any(a.strip().startswith("--audit-") for a in args):
        stderr_log(f"note: {path} sets no --audit-* flag; kube-apiserver's defaults are assumed")
    return parse_flags(args, base=base, ignore_unknown=True, source=str(path))


def _args_from_manifest(text: str, path: str) -> list[str]:
    doc = yamlsafe.load(text, path)
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a Pod manifest or a file of flags")
    spec = doc.get("spec") or {}
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list):
        raise InputError(f"{path}: spec.containers must be a list of containers")
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            raise InputError(f"{path}: spec.containers[{i}] must be a mapping")
        parts = []
        for key in ("command", "args"):
            v = c.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, (str, int, float, bool)) for x in v):
                raise InputError(f"{path}: spec.containers[{i}].{key} must be a list of strings")
            parts += [str(x) for x in v]
        if c.get("name") == "kube-apiserver" or any("kube-apiserver" in x for x in parts[:1]):
            return parts
    raise InputError(f"{path}: no kube-apiserver container in spec.containers")


def flags_from_options(options: JsonMapping | None) -> AuditFlags:
    """Build from a ``{flag-name: value}`` mapping (JSON/YAML scenarios). Values may be strings."""
    args = []
    for k, v in (options or {}).items():
        name = k.lstrip("-")
        if isinstance(v, bool):
            v = "true" if v else "false"
        args.append(f"--{name}={v}")
    return parse_flags(args, source="scenario flags")


def asdict(flags: AuditFlags) -> JsonObject:
    """The flags as nested plain data (every field is a str, bool, int or float, or a nested group)."""
    d: JsonObject = dataclasses.asdict(flags)
    return d
