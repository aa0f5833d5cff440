"""The heap policy of simulating processes (audit_tune/basics/heap.py): a large temporary array
comes from the process heap (memory the heap keeps after a free) instead of a fresh mapping of its
own, which glibc unmaps again on free and the next array faults in anew."""
from __future__ import annotations

import json
import subprocess
import sys

from audit_tune.basics import heap

# a 64 MiB array (above glibc's largest dynamic mmap threshold, 32 MiB), freed, then another: is
# each one's data inside the [heap] mapping of /proc/self/maps, and was the second one placed where
# the first was
PROBE = """
import json, sys
import numpy as np
from audit_tune.basics.heap import keep_large_blocks
took = keep_large_blocks() if sys.argv[1] == "1" else None

def in_heap(addr):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False

a = np.ones(8 << 20); first = a.ctypes.data; first_in = in_heap(first); del a
b = np.ones(8 << 20); second_in = in_heap(b.ctypes.data)
print(json.dumps({"took": took, "first": first_in, "second": second_in, "reused": b.ctypes.data == first}))
"""


def _probe(policy: bool) -> dict[str, bool | None]:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if policy else "0"], capture_output=True, text=True,
                         check=True, timeout=120)
    result: dict[str, bool | None] = json.loads(out.stdout)
    return result


def test_large_arrays_come_from_the_heap_with_the_policy() -> None:
    plain, kept = _probe(False), _probe(True)
    assert kept["took"] is True  # glibc here (Debian): the policy must take
    # glibc's default: a mapping of its own for each, outside the heap
    assert plain["first"] is False and plain["second"] is False
    # with the policy: both from the heap, the second in the memory the first one freed
    assert kept["first"] is True and kept["second"] is True and kept["reused"] is True


def test_the_policy_is_set_once_per_process() -> None:
    assert heap.keep_large_blocks() is heap.keep_large_blocks()
    assert heap.MMAP_THRESHOLD > 32 << 20  # above glibc's dynamic maximum, or it changes nothing
    assert heap.TRIM_THRESHOLD >= heap.MMAP_THRESHOLD


def test_the_fast_engine_sets_the_policy() -> None:
    code = ("from audit_tune.basics import heap\n"
            "from audit_tune.sim.api import run\n"
            "from audit_tune.sim.scenario import Scenario\n"
            "before = heap.keep_large_blocks.cache_info().currsize\n"
            "run(Scenario(), engine='fast')\n"
            "print(before, heap.keep_large_blocks.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["0", "1"]
