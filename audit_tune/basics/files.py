"""Bounded reads of the files a user names: every failure is one :class:`InputError` line.

A file given on the command line (a trace, a rate profile, a policy, a token, a flags list, a
record) may be missing, a folder, a device, far larger than any real input, not UTF-8, or binary.
:func:`read_bytes` reads at most ``limit`` bytes (one more to tell "larger" from "exactly"), so a
10 GiB file or ``/dev/zero`` costs one bounded read, not the machine's memory; :func:`read_text`
adds the UTF-8 and NUL checks. ``what`` names the flag or document in the message; ``want`` says
what the file should hold.
"""
from __future__ import annotations

import os
from pathlib import Path

from audit_tune.basics.errors import InputError

MAX_BYTES = 64 * 1024 * 1024  # documents: snapshots, policies, scenarios, traces, records
SECRET_BYTES = 64 * 1024  # tokens, passwords, keys: a line, not a document


def read_bytes(path: str | os.PathLike[str], what: str, limit: int = MAX_BYTES) -> bytes:
    """The bytes of ``path`` (at most ``limit``), or a one-line error naming ``what``."""
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(f"{what} {p}: is a folder; give a file")
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file") from None
    except OSError as e:
        raise InputError(f"{what} {p}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise InputError(f"{what} {p}: larger than {_size(limit)}; refused")
    return data


def read_text(path: str | os.PathLike[str], what: str, want: str, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark dropped), at most ``limit`` bytes, without NUL
    bytes; else one line naming ``what`` and what the file should hold (``want``)."""
    return decode(read_bytes(path, what, limit), f"{what} {path}", want)


def decode(data: bytes | str, where: str, want: str) -> str:
    """``data`` as UTF-8 text (a byte-order mark dropped) without NUL bytes, or one line naming
    ``where`` and what it should hold (``want``)."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise InputError(f"{where}: not UTF-8 text (line {line}, byte {e.start}); want {want}") from None
    if "\x00" in text:
        raise InputError(f"{where}: contains a NUL byte (binary file?); want {want}")
    return text


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"
