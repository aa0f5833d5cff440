"""The fluid model of the webhook buffer: P(any buffered drop over a horizon) and P(a batch fails
every attempt) (``docs/recommend.md``, objective 2).

A Lindley recursion per burst window with the fitted lognormal multipliers, Monte Carlo over
``FLUID_PATHS`` paths, over the whole observed window, scaled to the horizon; the webhook part is
``1 - (1 - p_fail^5)^batches`` (``ATTEMPTS`` from the receiver model).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numba as nb
import numpy as np

from audit_tune.analysis.calibrate import InstanceModel, lognormal_quantile
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.receiver import ATTEMPTS

FLUID_PATHS = 200


def fluid_drop_probability(m: InstanceModel, flags: AuditFlags, horizon: float, paths: int = FLUID_PATHS,
                           seed: int = 1, scale: float = 1.0) -> dict[str, float]:
    """P(any buffered drop over ``horizon``) in the fluid model, and P(a batch fails all attempts)."""
    c = flags.webhook.batch
    room = c.buffer_size + (c.throttle_burst * c.max_batch_size if c.throttle_enable else 0)
    q = np.zeros(paths)
    dropped = np.zeros(paths, dtype=bool)
    for net in window_nets(m, flags, q, seed, scale):
        _fluid_walk(q, dropped, net, float(room))
        if dropped.all():
            break  # the probability reads only which paths ever dropped: every one has
    p_window = float(dropped.mean())
    reps = max(horizon / m.duration, 1e-9) if m.duration > 0 else 1.0
    p_buf = 1 - (1 - p_window) ** reps
    if p_window == 0:
        p_buf_upper = 1 - (1 - min(3.0 / paths, 1.0)) ** reps  # rule of three
    else:
        p_buf_upper = p_buf
    # batches failing every attempt
    pf = m.failure_rate
    rates = np.asarray(m.rates, dtype=float) * scale
    batches = _batch_count(rates, float(m.step), int(c.max_batch_size), float(c.max_batch_wait))
    batches *= horizon / m.duration if m.duration > 0 else 1.0
    p_wh = 1 - math.exp(batches * math.log1p(-pf ** ATTEMPTS)) if 0 < pf < 1 else (1.0 if pf >= 1 else 0.0)
    return {"buffered": p_buf, "buffered_upper_rule_of_three": p_buf_upper, "webhook": p_wh,
            "any": 1 - (1 - p_buf) * (1 - p_wh), "paths": paths}


def window_nets(m: InstanceModel, flags: AuditFlags, q: np.ndarray, seed: int = 1,
                scale: float = 1.0) -> Iterator[np.ndarray]:
    """Per chunk of the observed window, each path's net inflow (arrivals minus the drain) per burst
    window: ``(paths, windows)``, ``paths = len(q)``. A chunk where every path's backlog ``q`` is empty
    (the caller walks ``q`` between chunks) and even the largest plausible window stays under
    capacity is skipped, drawing nothing."""
    c = flags.webhook.batch
    cap = c.drain_capacity
    n = max(m.burst.per_step, 1)
    w = m.step / n
    rates = np.asarray(m.rates, dtype=float) * scale
    paths = len(q)
    g = np.random.default_rng([int(seed), 31337])
    chunk = max(1, 20000 // n)
    sig = m.burst.sigma
    xmax = lognormal_quantile(sig, 1 - 1e-7) if n > 1 and sig > 0 else 1.0
    for lo in range(0, len(rates), chunk):
        r = rates[lo:lo + chunk]
        if not q.any() and float(r.max()) * min(xmax, n) <= cap:
            continue  # even the largest plausible window stays under capacity: nothing builds up
        if n > 1 and sig > 0:
            # exp(sig z - sig^2/2) normalised per step, x the step's rate, x the window, minus the
            # drain: each step in place on the draw's array (the same operations in the same order
            # as with temporaries, so the same doubles)
            x = g.standard_normal((paths, len(r), n))
            x *= sig
            x -= sig * sig / 2
            np.exp(x, out=x)
            x /= x.mean(axis=2, keepdims=True)
            x *= r[None, :, None]
            net = x.reshape(paths, -1)
            net *= w
            net -= cap * w
        else:
            net = np.repeat(r, n)[None, :] * w - cap * w
            net = np.ascontiguousarray(np.broadcast_to(net, (paths, len(r) * n)))
        yield net


@nb.njit(cache=True, nogil=True)
def _fluid_walk(q: np.ndarray, dropped: np.ndarray, net: np.ndarray, room: float) -> None:
    """Reflected random walk per path, q <- max(q + net, 0), marking paths that ever exceed ``room``
    (the same arithmetic, step by step, as the numpy loop it replaces; compiled because it runs
    once per sub-step of every busy stretch)."""
    for p in range(net.shape[0]):
        x = q[p]
        hit = dropped[p]
        for k in range(net.shape[1]):
            x = max(x + net[p, k], 0.0)
            if x > room:
                hit = True
        q[p] = x
        dropped[p] = hit


@nb.njit(cache=True, nogil=True)
def _batch_count(rates: np.ndarray, step: float, max_size: int, wait: float) -> float:
    """Batches the observed window sends: per step, rate x step / (events a batch collects in
    max-wait at that rate, between 1 and max-size)."""
    total = 0.0
    for r in rates:
        if r <= 0:
            continue
        b = min(float(max_size), max(r * wait, 1.0)) if max_size > 1 else 1.0
        total += r * step / b
    return total
