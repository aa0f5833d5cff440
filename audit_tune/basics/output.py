"""Output plumbing shared by commands: formats, atomic writes, progress on stderr.

Data goes to stdout (or ``-o FILE``, see :func:`write_atomic`: a regular file is replaced
atomically, a device, FIFO or ``/dev/stdout`` is written through, a symlink keeps pointing at its
replaced target); logs and progress go to stderr.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.progress import Progress as RichProgress

from audit_tune.basics import formats
from audit_tune.basics.atomic import replace_with
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


_STDOUT_ALIASES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_STDERR_ALIASES = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that a reader never sees half of it, and what ``path`` is stays.

    * ``/dev/stdout`` / ``/dev/fd/1`` (and stderr): written to the process's own stream;
    * a character device (``/dev/null``), FIFO or socket: written through, never replaced;
    * a folder: refused with one line;
    * a symlink: its final target is replaced atomically (temp file in the target's folder,
      renamed), so the link stays a link;
    * a regular or new file: temp file in the same folder, fsync, rename; an existing file keeps
      its mode.
    """
    raw = os.fspath(path)
    if raw in _STDOUT_ALIASES or raw in _STDERR_ALIASES:
        stream = sys.stdout if raw in _STDOUT_ALIASES else sys.stderr
        if isinstance(data, bytes):
            stream.flush()
            stream.buffer.write(data)
        else:
            stream.write(data)
        stream.flush()
        return
    p = Path(raw)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"-o {p}: cannot use ({e.strerror})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError(f"-o {p}: is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_through(p, data)
        return
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"-o {p}: folder {folder} does not exist")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(folder))
    except OSError as e:
        raise InputError(f"-o {p}: cannot write in {folder} ({e.strerror})") from None
    try:
        replace_with(fd, tmp, target, data, mode)
    except OSError as e:
        raise InputError(f"-o {p}: cannot write ({e.strerror or e})") from None


def _write_through(p: Path, data: str | bytes) -> None:
    """Open an existing non-regular file (device, FIFO, socket) and write into it."""
    try:
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
    except OSError as e:
        raise InputError(f"-o {p}: cannot write ({e.strerror or e})") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
