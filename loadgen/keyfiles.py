"""Writing key material safely: a private folder, and files created fresh, never reused.

* :func:`private_dir` creates the folder with mode 0700, or accepts an existing one only if it
  is a real folder (not a symlink), owned by the caller, with mode 0700; anything else is
  refused with one line, since another user could swap or read files in it.
* :func:`write_private` writes to a new temporary name opened with
  ``O_CREAT|O_EXCL|O_NOFOLLOW`` and mode 0600 (0644 for public material), fsyncs it and renames
  it into place: an existing file, or a symlink planted at the target, is replaced, never
  written through, and a key never exists with a wider mode.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from audit_tune.basics.atomic import replace_with
from audit_tune.basics.errors import InputError


def private_dir(folder: str | os.PathLike, what: str = "--tls-generate") -> Path:
    """Create ``folder`` 0700 (parents as usual), or check that an existing one is private."""
    d = Path(folder).absolute()
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(d, 0o700)
        os.chmod(d, 0o700)  # umask may have narrowed nothing, but be explicit
        return d
    except FileExistsError:
        pass
    except OSError as e:
        raise InputError(f"{what} {d}: cannot create the folder: {e.strerror}") from None
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{what} {d}: is a symlink; give a real folder (or a new name)")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {d}: exists and is not a folder")
    if st.st_uid != os.geteuid():
        raise InputError(f"{what} {d}: owned by uid {st.st_uid}, not you; give a folder of your own")
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise InputError(f"{what} {d}: mode {stat.S_IMODE(st.st_mode):04o}; keys need a private folder "
                         f"(chmod 700 {d}, or give a new name)")
    return d


def write_private(path: str | os.PathLike, data: bytes | str, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` through a fresh exclusive temp file renamed into place."""
    p = Path(path).absolute()
    raw = data.encode() if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise InputError(f"{p}: cannot create: {e.strerror}") from None
    try:
        replace_with(fd, tmp, p, raw, mode)
    except OSError as e:
        raise InputError(f"{p}: cannot write: {e.strerror}") from None
    return p
