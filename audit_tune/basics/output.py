"""Output plumbing shared by commands: formats, atomic writes, progress on stderr.

Data goes to stdout (or ``-o FILE``, written atomically: a temp file in the same folder, then
renamed, so an error never leaves a half-written file); logs and progress go to stderr.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from rich.progress import Progress as RichProgress

from audit_tune.basics import formats
from audit_tune.basics.errors import InputError
from audit_tune.basics.formats import json_default, to_json, to_yaml

__all__ = ["Progress", "formatter", "json_default", "log", "render", "write_atomic", "write_output"]

_FORMATTERS: dict[str, Callable[[object], str]] = {"json": to_json, "yaml": to_yaml}


def formatter(name: str) -> Callable[[Callable[[object], str]], Callable[[object], str]]:
    """Register a format for plain data (dicts and lists): ``@formatter("json")``. Result types
    register theirs with :func:`audit_tune.basics.formats.register`."""

    def deco(fn: Callable[[object], str]) -> Callable[[object], str]:
        _FORMATTERS[name] = fn
        return fn

    return deco


def render(data: object, fmt: str) -> str:
    """Plain data through the formats above; a result type through its registered formatters."""
    if not isinstance(data, (dict, list)):
        return formats.render(data, fmt)
    try:
        return _FORMATTERS[fmt](data)
    except KeyError:
        raise InputError(f"--format {fmt}: unknown format; use one of {', '.join(sorted(_FORMATTERS))}") from None


def write_output(text: str, output: str | os.PathLike | None) -> None:
    """Write ``text`` to stdout, or atomically to ``output``."""
    if output in (None, "", "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(Path(output), text)


def write_atomic(path: Path, data: str | bytes) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InputError(f"-o {path}: folder {path.parent} does not exist")
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent or "."))
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """Rich progress bar on a TTY, plain lines otherwise, nothing with ``enabled=False``."""

    def __init__(self, total: float, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self._rich = None
        self._last_pct = -10
        if enabled and sys.stderr.isatty():
            self._rich = RichProgress(transient=True)
            self._rich.start()
            self._task = self._rich.add_task(label, total=total)

    def update(self, done: float) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            return
        pct = int(100 * done / self.total) if self.total else 100
        if pct >= self._last_pct + 10:
            self._last_pct = pct - pct % 10
            log(f"{self.label}: {self._last_pct}%")

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
