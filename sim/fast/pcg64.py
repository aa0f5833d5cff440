"""numpy's PCG64 and its standard exponential, inline in compiled code, on the Generator's own state.

A ``numpy.random.Generator`` used inside numba reaches its bit generator through a function
pointer per draw (numba's ``next_uint64``), which the compiler cannot inline. For the arrival
stream, which draws one exponential per arrival, :func:`standard_exponential` runs the same
algorithms in the loop instead:

* the bit generator: ``pcg_setseq_128_xsl_rr_64_random_r`` of numpy's ``pcg64.h``: the 128-bit
  LCG step ``state = state * M + inc``, then the XSL-RR output ``rotr64(hi ^ lo, hi >> 58)``;
  ``next_double`` is ``(next64 >> 11) * 2**-53``;
* the draw: ``random_standard_exponential`` of numpy's ``distributions.c`` (the 256-step ziggurat,
  with its tables as numba ships them for its own Generator support).

The state is read and written in place (:func:`state_of`: the four 64-bit words the Generator's
``pcg64_state`` points to), so the Generator and the compiled draws stay one stream, bit for bit.
"""
from __future__ import annotations

import ctypes

import numba as nb
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numba.np.random._constants import fe_double, ke_double, we_double, ziggurat_exp_r

U64 = npt.NDArray[np.uint64]

_MULT_HI = np.uint64(0x2360ED051FC65DA4)  # PCG_DEFAULT_MULTIPLIER_128
_MULT_LO = np.uint64(0x4385DF649FCCF645)
_MASK = (1 << 64) - 1


_LAYOUT_CHECKED = [False]


def state_of(g: np.random.Generator) -> U64:
    """The PCG64 state of ``g`` as a view of its memory: state low, high, increment low, high
    words (the layout of ``__uint128_t`` on a little-endian machine, checked against the first
    generator's reported state: the layout is numpy's build's, one for the process)."""
    bg = g.bit_generator
    if not isinstance(bg, np.random.PCG64):
        raise TypeError(f"a PCG64 generator is needed, not {type(bg).__name__}")
    inner = ctypes.c_void_p.from_address(bg.ctypes.state_address).value
    if inner is None:
        raise RuntimeError("numpy's PCG64 has no state")
    st: U64 = np.frombuffer(memoryview((ctypes.c_uint64 * 4).from_address(inner)), dtype=np.uint64)
    if not _LAYOUT_CHECKED[0]:
        s = bg.state["state"]
        if [int(w) for w in st] != [s["state"] & _MASK, s["state"] >> 64, s["inc"] & _MASK, s["inc"] >> 64]:
            raise RuntimeError("numpy's PCG64 state is not laid out as two little-endian 128-bit words")
        _LAYOUT_CHECKED[0] = True
    return st


@intrinsic
def _mulhi(typingctx: object, a: object, b: object) -> tuple[object, object]:
    """The high 64 bits of the 128-bit product of two unsigned 64-bit integers."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: list[ir.Value]) -> ir.Value:
        i128 = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(p, ir.Constant(i128, 64)), ir.IntType(64))

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def next64(st: U64) -> np.uint64:
    """One PCG64 step and output (``pcg64_next64``)."""
    lo, hi = st[0], st[1]
    new_lo = lo * _MULT_LO + st[2]
    carry = np.uint64(1) if new_lo < lo * _MULT_LO else np.uint64(0)
    new_hi = _mulhi(lo, _MULT_LO) + lo * _MULT_HI + hi * _MULT_LO + st[3] + carry  # type: ignore[call-arg]
    st[0], st[1] = new_lo, new_hi
    x = new_hi ^ new_lo
    rot = new_hi >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@nb.njit(cache=True, nogil=True, inline="always")
def _next_double(st: U64) -> float:
    return float(next64(st) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(cache=True, nogil=True, inline="always")
def standard_exponential(st: U64) -> float:
    """``Generator.standard_exponential()`` drawn from the state ``st`` (:func:`state_of`)."""
    while True:
        ri = next64(st) >> np.uint64(3)
        idx = ri & np.uint64(0xFF)
        ri >>= np.uint64(8)
        x = ri * we_double[idx]
        if ri < ke_double[idx]:
            return x  # type: ignore[no-any-return]  # numba-compiled: float64
        if idx == 0:
            return ziggurat_exp_r - np.log1p(-_next_double(st))  # type: ignore[no-any-return]
        if (fe_double[idx - np.uint64(1)] - fe_double[idx]) * _next_double(st) + fe_double[idx] < np.exp(-x):
            return x  # type: ignore[no-any-return]
