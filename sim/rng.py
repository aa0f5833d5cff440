"""Counter-based random numbers: ``uniform(seed, stream, a, b)`` is a pure function.

Every random draw in a simulation (a webhook attempt's latency, its failure, a backoff jitter,
a request's class) is keyed by *what* it is for (stream), *which* entity (instance, batch
sequence number, attempt), and the seed, instead of being pulled from one shared generator.
So two engines that step the pipeline in different orders (SimPy's event loop, the fast
engine's batch loop) still see the same numbers for the same batch, which is what lets the
fast engine reproduce the reference engine exactly.

The hash is SplitMix64's finaliser applied to a combination of the keys; the scalar and the
numpy (vectorised) versions give bit-identical results.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

_M = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

# Streams: one per purpose.
S_REQ_CLASS = 1
S_ATTEMPT_LAT = 2
S_ATTEMPT_FAIL = 3
S_JITTER = 4
S_LOG_LAT = 5
S_LOG_FAIL = 6
S_ARRIVALS = 7
S_ONOFF = 8
S_DURATION = 9
S_SELECT = 10


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _C1) & _M
    z = ((z ^ (z >> 27)) * _C2) & _M
    return z ^ (z >> 31)


def hash64(seed: int, stream: int, a: int = 0, b: int = 0, c: int = 0) -> int:
    h = _mix((seed * _GOLDEN + stream) & _M)
    h = _mix((h ^ ((a + 1) * _GOLDEN)) & _M)
    h = _mix((h ^ ((b + 1) * _C1)) & _M)
    h = _mix((h ^ ((c + 1) * _C2)) & _M)
    return h


def uniform(seed: int, stream: int, a: int = 0, b: int = 0, c: int = 0) -> float:
    """A float in [0, 1) determined by the keys alone."""
    return (hash64(seed, stream, a, b, c) >> 11) * (1.0 / (1 << 53))


def _vmix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def hash_start(seed: int, stream: int) -> int:
    """The keyed start every draw of ``stream`` shares (the first mixing round of :func:`hash64`)."""
    return _mix((seed * _GOLDEN + stream) & _M)


def uniform_array(seed: int, stream: int, a: npt.ArrayLike, b: npt.ArrayLike = 0,
                  c: npt.ArrayLike = 0) -> npt.NDArray[np.float64]:
    """Vectorised :func:`uniform`; ``a``, ``b``, ``c`` broadcast."""
    with np.errstate(over="ignore"):
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        c = np.asarray(c, dtype=np.uint64)
        h0 = np.uint64(_mix((seed * _GOLDEN + stream) & _M))
        h = _vmix(h0 ^ ((a + np.uint64(1)) * np.uint64(_GOLDEN)))
        h = _vmix(h ^ ((b + np.uint64(1)) * np.uint64(_C1)))
        h = _vmix(h ^ ((c + np.uint64(1)) * np.uint64(_C2)))
        return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def generator(seed: int, stream: int, a: int = 0) -> np.random.Generator:
    """A numpy Generator for bulk draws (arrivals), keyed the same way."""
    return np.random.Generator(np.random.PCG64(hash64(seed, stream, a)))


def extra_takes(seed: int, inst: int, seqs: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """How many more ready events Go's random ``select`` takes after the first, when the batch
    timer has already fired (``--audit-*-batch-max-wait=0``): Geometric(1/2), one draw per batch.
    Measured on the real code: batch sizes 1, 2, 3 in proportions 0.50, 0.24, 0.12
    (docs/oracle-findings.md, finding c)."""
    u = uniform_array(seed, S_SELECT, inst, seqs)
    return np.floor(-np.log2(np.maximum(u, 2.0 ** -60))).astype(np.int64)
