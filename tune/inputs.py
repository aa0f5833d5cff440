"""The inputs `tune recommend` and `tune report` share: where the history comes from (a snapshot
file, a Prometheus, or the bundled sample) and which flags are in force (``--current-flags``, audit
flags on the command line, the flags the bundled sample was recorded with, or the defaults)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from audit_tune.analysis.snapshot import sample_path
from audit_tune.basics.jsondata import JsonObject

if TYPE_CHECKING:
    from audit_tune.analysis.prom import PromClient, PromSettings, SnapshotRequest
    from audit_tune.analysis.snapshot import Snapshot
    from audit_tune.sim.config import AuditFlags

SAMPLE = sample_path()
SAMPLE_FLAGS = SAMPLE.with_name("sample-flags.txt")  # the flags the bundled sample was recorded with
# a second bundled sample with a request mix (apiserver_request_total by class), for policy questions
POLICY_SAMPLE = SAMPLE.with_name("sample-policy-snapshot.json")


def load_history(who: str, snapshot: Optional[str], prom: PromSettings | None, prometheus_url: Optional[str],
                 history: str, step: str, selector: Optional[str], end: Optional[str],
                 say: Callable[[str], None]) -> tuple[JsonObject, JsonObject]:
    """The snapshot (as a dict) and a description of where it came from (``source``)."""
    from audit_tune.analysis.calibrate import load_snapshot, snapshot_dict
    from audit_tune.basics.errors import InputError
    from audit_tune.basics.output import log

    url = prom.url if prom is not None else prometheus_url
    if snapshot and url:
        raise InputError("--snapshot and --prometheus-url: give one of them, not both")
    source: JsonObject
    snap: JsonObject
    if snapshot:
        snap, source = load_snapshot(snapshot), {"kind": "snapshot", "snapshot": snapshot}
    elif url:  # from_prometheus refuses a missing prom
        snap = snapshot_dict(from_prometheus(prom, history, step, selector or "", say, end, who))
        source = {"kind": "prometheus", "prometheus_url": prom.display_url if prom is not None else url, "history": history, "step": step,
                  "end": end}
    else:
        if not SAMPLE.exists():
            raise InputError("no --snapshot or --prometheus-url given, and the bundled sample "
                             f"{SAMPLE} is missing; record one with --snapshot FILE")
        log(f"tune {who}: no --snapshot or --prometheus-url given; using the bundled sample {SAMPLE.name} "
            "(an example cluster, not yours)")
        snap, source = load_snapshot(SAMPLE), {"kind": "bundled sample", "snapshot": SAMPLE.name}
    src = snap.get("source") or {}
    if isinstance(src, dict):
        source["selector"], source["window"] = src.get("selector"), src.get("window")
    else:
        source["selector"], source["window"] = None, None
    return snap, source


def current_flags_of(current_flags: Optional[str], extra: list[str], bundled: bool = False) -> tuple[AuditFlags, str]:
    """The flags in force and where they came from."""
    from audit_tune.basics.errors import InputError
    from audit_tune.sim.config import AuditFlags, load_flags_file, parse_flags

    if current_flags:
        p = Path(current_flags)
        if p.is_file():
            current, src = load_flags_file(p), f"from {current_flags}"
        else:
            try:
                args = shlex.split(current_flags)
            except ValueError as e:
                raise InputError(f"--current-flags: {e}") from None
            if not args or not args[0].startswith("--"):
                raise InputError(f"--current-flags {current_flags!r}: not a file and not flags like "
                                 "'--audit-webhook-batch-max-size=400'")
            current, src = parse_flags(args, source="--current-flags", ignore_unknown=True), "from --current-flags"
    elif bundled and not extra and SAMPLE_FLAGS.exists():
        current = load_flags_file(SAMPLE_FLAGS)
        src = f"the flags the bundled sample was recorded with ({SAMPLE_FLAGS.name})"
    else:
        current, src = AuditFlags(), "kube-apiserver defaults: --current-flags not given"
    if extra:
        current = parse_flags(extra, base=current, source="command line")
        src += " + command line"
    return current, src


class Signature:
    """A command signature built from typer options at import time, for commands whose options come
    partly from dataclass fields (the objective). ``input_options`` and ``objective_options`` add the
    options `tune recommend` and `tune report` share; ``apply`` installs the signature on the function."""

    def __init__(self) -> None:
        import inspect

        import typer

        self._P = inspect.Parameter
        self.params = [self._P("ctx", self._P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        self.ann: dict[str, Any] = {"ctx": typer.Context, "return": int}

    def opt(self, name: str, typ: Any, default: Any) -> None:
        self.params.append(self._P(name, self._P.KEYWORD_ONLY, default=default, annotation=typ))
        self.ann[name] = typ

    def input_options(self, panel: str, step_default: str) -> None:
        """Where the history comes from, and the flags in force."""
        import typer

        from audit_tune.analysis.prom import PromSettings

        self.opt("snapshot", Optional[str], typer.Option(None, "--snapshot", help="Snapshot file (audit-tune-snapshot/v1 JSON).", rich_help_panel=panel))
        self.opt("prom", PromSettings, None)  # replaced by the shared Prometheus options (tune.options)
        self.opt("selector", Optional[str], typer.Option(None, "--selector", help="With --prometheus-url: extra label matchers, e.g. 'job=\"apiserver\"'.", rich_help_panel=panel))
        self.opt("history", str, typer.Option("7d", "--history", help="With --prometheus-url: how far back.", rich_help_panel=panel))
        self.opt("step", str, typer.Option(step_default, "--step", help="With --prometheus-url: resolution of the rate curve.", rich_help_panel=panel))
        self.opt("end", Optional[str], typer.Option(None, "--end", help="With --prometheus-url: end of the window, unix seconds or RFC 3339 (default: now).", rich_help_panel=panel))
        self.opt("current_flags", Optional[str], typer.Option(None, "--current-flags", help="Flags in force: 'flags', a flags file or a kube-apiserver manifest (default: kube-apiserver defaults; for the bundled sample, the flags it was recorded with). Audit flags may also follow verbatim.", rich_help_panel=panel))

    def objective_options(self, panel: str) -> None:
        """One option per field of ``analysis.recommend.Objective``."""
        import dataclasses

        import typer

        from audit_tune.analysis.recommend import Objective

        for f in dataclasses.fields(Objective):
            md = f.metadata
            self.opt(f.name, md["type"], typer.Option(f.default, md["flag"], help=md["help"], rich_help_panel=panel))

    def apply(self, fn: Callable[..., int]) -> None:
        import inspect

        fn.__signature__ = inspect.Signature(self.params, return_annotation=int)  # type: ignore[attr-defined]
        fn.__annotations__ = self.ann


def take_snapshot_or_say_missing(client: PromClient, req: SnapshotRequest, who: str,
                                 say: Callable[[str], None]) -> Snapshot:
    """``analysis.prom.take_snapshot``; when there is not enough data, each item the partial
    snapshot misses is logged (``tune WHO: missing: ...``) before the error is raised."""
    from audit_tune.analysis.prom import partial_snapshot, take_snapshot
    from audit_tune.basics.errors import NotEnoughData
    from audit_tune.basics.output import log

    try:
        return take_snapshot(client, req, log=say)
    except NotEnoughData as e:
        part = partial_snapshot(e)
        for m in (part.missing if part else []):
            log(f"tune {who}: missing: {m}")
        raise


def from_prometheus(prom: PromSettings | None, history: str, step: str, selector: str, say: Callable[[str], None],
                    end: Optional[str] = None, who: str = "recommend") -> Snapshot:
    """Record a snapshot in memory (``analysis.prom.take_snapshot``), then the same path as a file."""
    from audit_tune.analysis.prom import PromClient, SnapshotRequest
    from audit_tune.basics.errors import InputError
    from audit_tune.sim.units import parse_duration

    if prom is None:
        raise InputError("--prometheus-url: Prometheus reading is not available in this build; use --snapshot FILE")
    prom.validate()
    req = SnapshotRequest(history=parse_duration(history, "--history"), step=parse_duration(step, "--step"),
                          end=parse_end(end) if end else None, selector=selector)
    if req.step <= 0:
        raise InputError("--step: must be > 0s, e.g. 15s")
    say(f"reading {history} from {prom.display_url}")
    snap = take_snapshot_or_say_missing(PromClient(prom), req, who, say)
    for m in snap.missing:
        say(f"missing: {m}")
    return snap


def parse_end(text: str) -> float:
    """``--end``: unix seconds or RFC 3339."""
    from datetime import datetime

    from audit_tune.basics.errors import InputError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(f"--end {text!r}: want unix seconds or RFC 3339 such as 2026-05-28T12:00:00Z") from None
