"""The C heap policy of a simulating process: large numpy temporaries reuse freed heap.

glibc's ``malloc`` serves a block above ``M_MMAP_THRESHOLD`` (adjusted at run time, at most 32 MiB
on 64-bit systems) with its own ``mmap`` and gives it back with ``munmap`` when freed. The fast
engine allocates work arrays of tens of MiB per chunk of events (a 300 s stretch at 5,000 events/s
needs ~46 MiB of observation buffers), so every chunk mapped fresh pages and took one page fault per
4 KiB on first touch: 2.3-5.4 s of system time in one ``tune recommend`` over 7 days x 3 apiservers
whose user time was 9-11 s (``bench/bench_recommend.py``). :func:`keep_large_blocks` raises the
threshold to 256 MiB and lets the heap keep up to 512 MiB of freed memory at its top
(``M_TRIM_THRESHOLD``), so those arrays come from memory already mapped; with it the same run took
0.2-1.0 s of system time. The price is that a simulating process may keep that much freed memory
until it exits; the setting is per process (and inherited by forked pool workers), and a no-op where
the C library is not glibc.

The constants are glibc's ``malloc.h``: ``M_TRIM_THRESHOLD`` -1, ``M_TOP_PAD`` -2,
``M_MMAP_THRESHOLD`` -3.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap
TRIM_THRESHOLD = 512 << 20  # freed memory the heap keeps at its top
TOP_PAD = 64 << 20  # extra memory asked for with each heap growth


@functools.cache
def keep_large_blocks() -> bool:
    """Set the heap policy above once per process; True when the C library took it (glibc)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):  # not a GNU C library, or no confstr
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    ok = all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
             for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                  (M_TOP_PAD, TOP_PAD)))
    return ok
