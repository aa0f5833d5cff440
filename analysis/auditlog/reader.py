"""Find audit log files and stream their lines.

``[INSTANCE=]PATH`` names one apiserver's log: a file, or a folder holding the live file and its
rotated backups. kube-apiserver rotates with lumberjack (``--audit-log-maxsize``): the live file
``audit.log`` and backups ``audit-2026-12-06T19-00-00.000.log``, gzipped (``.log.gz``) with
``--audit-log-compress``. The files of one instance are put in time order by their first readable
timestamp (names are not trusted: copies get renamed). Without ``INSTANCE=`` the instance is the
file's name without rotation suffix and extension (for a folder: the folder's name).

Lines are read in blocks of about ``CHUNK`` bytes into one reused buffer (gzip decompressed on the
fly), so memory does not grow with the file; the last line of a file without a trailing newline is
flagged (a log being written, or a cut copy).
"""
from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from audit_tune.basics.errors import InputError

CHUNK = 4 << 20
MAX_LINE = 64 << 20  # generous: a RequestResponse event of a large list response runs to tens of MiB
#: Yielded by :func:`iter_blocks` in place of a line longer than :data:`MAX_LINE`, which is skipped
#: without being held in memory (a gzip bomb of one endless line costs one buffer, not the machine).
OVERLONG = memoryview(b"")
LOG_SUFFIXES = (".log", ".json", ".jsonl", ".gz", ".txt")
_ROTATED = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(\.\d+)?$")


@dataclass(frozen=True)
class LogFile:
    """One file of one apiserver's log."""

    instance: str
    path: str
    size: int  # bytes on disk (compressed for .gz)

    @property
    def gz(self) -> bool:
        return self.path.endswith(".gz")


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".gz", ".log", ".jsonl", ".json", ".txt"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return _ROTATED.sub("", name) or p.name


def parse_spec(spec: str, flag: str = "--audit-log") -> tuple[str | None, Path]:
    """``INSTANCE=PATH`` or ``PATH`` (a path containing '=' that exists is taken as a path)."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        if not name or not path:
            raise InputError(f"{flag} {spec!r}: want [INSTANCE=]PATH, e.g. apiserver-0=/var/log/kubernetes/audit/")
        return name, Path(path)
    return None, Path(spec)


def discover(specs: list[str], flag: str = "--audit-log") -> list[LogFile]:
    """Every file the specs name, grouped by instance. InputError (exit 1) for a path that does not
    exist or a folder with no log file in it."""
    out: list[LogFile] = []
    seen: set[str] = set()
    for spec in specs:
        name, p = parse_spec(spec, flag)
        if not p.exists():
            raise InputError(f"{flag} {spec}: no such file or folder; give an audit log file or its folder")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and (f.name.endswith(LOG_SUFFIXES) or ".log" in f.name))
            if not files:
                raise InputError(f"{flag} {spec}: no audit log files in the folder (want *.log, *.log.gz or *.jsonl)")
            inst = name or p.resolve().name
        else:
            files = [p]
            inst = name or _stem(p)
        for f in files:
            key = str(f.resolve())
            if key in seen:
                raise InputError(f"{flag} {spec}: {f} is given twice")
            seen.add(key)
            try:
                size = f.stat().st_size
            except OSError as e:
                raise InputError(f"{flag} {f}: cannot read ({e.strerror})") from None
            if not os.access(f, os.R_OK):
                raise InputError(f"{flag} {f}: not readable (permission denied)")
            out.append(LogFile(inst, str(f), size))
    return out


def open_file(f: LogFile) -> BinaryIO:
    try:
        return gzip.open(f.path, "rb") if f.gz else open(f.path, "rb")  # type: ignore[return-value]  # noqa: SIM115
    except OSError as e:
        raise InputError(f"--audit-log {f.path}: cannot open ({e.strerror})") from None


def iter_blocks(f: LogFile, raw_progress: list[int] | None = None) -> Iterator[tuple[memoryview, bool]]:
    """Blocks of whole lines, each block ending with a newline, read into one reused buffer of
    ``CHUNK`` bytes (grown only for a line longer than it, up to :data:`MAX_LINE`), so memory does
    not grow with the file and no per-line object is made here. The file's last line without a
    newline after it comes alone, with ``last`` True. A line longer than :data:`MAX_LINE` is read
    past and comes as :data:`OVERLONG`. A block is valid until the next one is asked for.
    ``raw_progress[0]`` counts bytes read from disk."""
    fh = open_file(f)
    raw = fh.fileobj if f.gz else fh  # type: ignore[attr-defined]
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    have = 0
    skipping = False  # inside a line longer than MAX_LINE: read to its newline, keep nothing
    try:
        while True:
            try:
                n = fh.readinto(view[have:])  # type: ignore[attr-defined]
            except (OSError, EOFError) as e:  # a cut .gz: keep what was read, report the cut
                if buf[:have].strip():
                    yield view[:have], True
                raise TruncatedGzip(str(e)) from None
            if raw_progress is not None:
                try:
                    raw_progress[0] = raw.tell()  # type: ignore[union-attr]
                except (OSError, ValueError, AttributeError):
                    pass
            if not n:
                if skipping:
                    yield OVERLONG, False
                elif buf[:have].strip():
                    yield view[:have], True
                return
            have += n
            if skipping:
                k = buf.find(b"\n", 0, have) + 1
                if not k:
                    have = 0
                    continue
                yield OVERLONG, False
                skipping = False
                view[: have - k] = view[k:have]  # memoryview assignment: a memmove, no temporary copy
                have -= k
            k = buf.rfind(b"\n", 0, have) + 1
            if k:
                yield view[:k], False
                view[: have - k] = view[k:have]
                have -= k
            elif have == len(buf) and len(buf) >= MAX_LINE:  # a line past the bound: skip it
                skipping, have = True, 0
                buf = bytearray(CHUNK)  # the grown buffer goes: the rest of the line is read a chunk at a time
                view = memoryview(buf)
            elif have == len(buf):  # one line longer than the buffer
                grown = bytearray(min(2 * len(buf), MAX_LINE))
                memoryview(grown)[:have] = view[:have]
                buf, view = grown, memoryview(grown)
    finally:
        fh.close()


def split_lines(block: memoryview, last: bool) -> list[bytes]:
    """The non-blank lines of a block of :func:`iter_blocks`, without ``\\r\\n`` line ends; the
    unterminated last line of a file is stripped of blanks."""
    if last:
        one = bytes(block).strip()
        return [one] if one else []
    data = bytes(block)
    parts = data.split(b"\n")
    parts.pop()  # the block ends with a newline
    if b"\r" in data:
        parts = [x.rstrip(b"\r") for x in parts]
    return [x for x in parts if x]


class TruncatedGzip(Exception):
    """A .gz file ends before its end-of-stream marker (a copy cut short)."""


def first_line(f: LogFile, limit: int = 1 << 20) -> bytes:
    """The first non-blank line (up to ``limit`` bytes), for sniffing the format and ordering files."""
    try:
        with open_file(f) as fh:
            buf = b""
            while len(buf) < limit:
                b = fh.read(65536)
                if not b:
                    break
                buf += b
                for line in buf.split(b"\n")[:-1]:
                    if line.strip():
                        return line.strip()
            return buf.split(b"\n")[0].strip()
    except (OSError, EOFError):
        return b""
