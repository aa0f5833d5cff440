"""The last step of every atomic file write: a temporary file in the target's folder, written,
given its mode, flushed to disk and renamed over the target (``rename(2)`` replaces it in one step,
so a reader sees the old file or the new one, never a part). The callers differ in how they make
the temporary file (``tempfile.mkstemp`` for outputs, ``O_EXCL | O_NOFOLLOW`` for private keys)
and in the message they give; this part is the same for all.
"""
from __future__ import annotations

import contextlib
import os


def replace_with(fd: int, tmp: str | os.PathLike[str], target: str | os.PathLike[str], data: str | bytes,
                 mode: int) -> None:
    """Write ``data`` to the open temporary file ``fd`` (at ``tmp``), chmod it to ``mode``, fsync it
    and rename it over ``target``. On any failure (or Ctrl-C) the temporary file is removed and the
    error raised as it was."""
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
