"""What the audit webhook receiver (the SIEM, Falco, a log pipeline) does with each POST,
and the apiserver's retry loop around it.

Mirrors ``apiserver/plugin/pkg/audit/webhook/webhook.go`` and ``apiserver/pkg/util/webhook/webhook.go``:

* one POST per attempt with the whole batch as an ``EventList``; any 2xx is success;
* **any** error or non-2xx is retried (the audit webhook's ``retryOnError``), up to 5 attempts;
* between attempts it sleeps ``initial x 1.5^k`` with jitter ``x U[1, 1.2)`` (k = 0..3), i.e.
  10, 15, 22.5, 33.75 s with the default ``--audit-webhook-initial-backoff=10s``;
* each attempt is cut at 30 s (``http.Client.Timeout``);
* after the last failure the whole batch is dropped and counted as
  ``apiserver_audit_error_total{plugin="webhook"} += len(batch)``.

Inside one attempt, the webhook's REST client (``k8s.io/client-go/rest/request.go`` ``request()``
and ``rest/with_retry.go``) retries by itself when the receiver answers 429 or any 5xx **with a
``Retry-After: N`` header** (whole seconds): it sleeps N s (its backoff manager is ``NoBackoff``)
and POSTs the same bytes again, up to ``maxRetries`` = 10 retries (11 requests). The whole loop
runs under one ``context.WithTimeout`` of the client's 30 s timeout, so a sleep or a request that
reaches it ends the attempt with an error at start + 30 s. Transport errors on a POST are never
retried there. Only the outcome of the last request is the attempt's outcome that the webhook's
own backoff above sees.

An attempt's outcome is a pure function of the batch's identity, the attempt number, its start
time, its size and the in-flight count, drawn with :mod:`sim.rng`, so every engine agrees.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit_tune.sim import rng
from audit_tune.sim.latency import Latency

ATTEMPTS = 5
BACKOFF_FACTOR = 1.5
BACKOFF_JITTER = 0.2
ATTEMPT_TIMEOUT = 30.0
REFUSE_SECONDS = 0.001  # a refused connection fails about this fast on loopback
CLIENT_MAX_RETRIES = 10  # rest.Request.maxRetries as NewRequest sets it (client-go rest/request.go)
INNER_DRAW_STRIDE = 16  # random draws of request i > 0 inside an attempt use attempt + 16 i


@dataclass(frozen=True)
class Outage:
    """A window of receiver time in which every attempt fails.

    ``kind``: ``status`` (answers ``status`` after the normal latency), ``refuse`` (connection
    refused, fails in about 1 ms; attempts in flight when it starts fail at that moment, as the
    real client's connections are closed) or ``hang`` (never answers: the attempt times out at 30 s).
    """

    start: float
    end: float
    kind: str = "status"
    status: int = 503
    retry_after: int | None = None  # whole seconds in a Retry-After header on the status answers

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end

    @property
    def asks_retry(self) -> bool:
        """Does the client retry inside the attempt? (``checkWait``: 429 or >= 500, with Retry-After.)"""
        return (self.kind == "status" and self.retry_after is not None
                and (self.status == 429 or self.status >= 500))


@dataclass(frozen=True)
class Receiver:
    """The receiver's behaviour: latency, errors, outages, a body-size limit."""

    latency: Latency = field(default_factory=lambda: Latency("fixed", 0.05))
    per_kib: float = 0.0  # extra seconds per KiB of request body
    per_inflight: float = 0.0  # extra seconds per other request in flight at the attempt's start
    error_rate: float = 0.0
    error_status: int = 500
    outages: tuple[Outage, ...] = ()
    max_body_bytes: int = 0  # 0 = no limit; above it the receiver answers 413
    timeout: float = ATTEMPT_TIMEOUT

    def attempt(self, seed: int, inst: int, key: int, attempt: int, start: float,
                nbytes: int, inflight: int) -> tuple[float, bool, str]:
        """Outcome of one POST attempt: (seconds it takes, success, code or ``<error>``)."""
        dur, ok, code = self.attempt_array(seed, inst, np.array([key]), attempt, np.array([start]),
                                           np.array([nbytes]), np.array([inflight]))
        c = int(code[0])
        return float(dur[0]), bool(ok[0]), "<error>" if c < 0 else str(c)

    def attempt_array(self, seed: int, inst: int, keys: np.ndarray, attempt: int, starts: np.ndarray,
                      nbytes: np.ndarray, inflight: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised :meth:`attempt` (the single implementation): durations, ok flags, codes
        (HTTP status, or -1 for a transport error or timeout). An answer with Retry-After is
        followed by the REST client's own retries inside the attempt (module docstring)."""
        keys = np.asarray(keys, dtype=np.int64)
        starts = np.asarray(starts, dtype=float)
        nbytes = np.asarray(nbytes)
        budget = np.full(len(keys), self.timeout)
        dur, ok, code, wait = self._requests(seed, inst, keys, attempt, starts, nbytes, inflight, budget)
        idx = np.flatnonzero(wait >= 0)
        if not len(idx):
            return dur, ok, code
        deadline = starts + self.timeout
        end = starts + dur
        for i in range(1, CLIENT_MAX_RETRIES + 1):
            nxt = end[idx] + wait[idx]
            late = nxt >= deadline[idx]
            cut = idx[late]  # the sleep reaches the context deadline: the next Do fails at once
            end[cut], ok[cut], code[cut] = deadline[cut], False, -1
            idx, nxt = idx[~late], nxt[~late]
            if not len(idx):
                break
            infl = None if inflight is None else np.asarray(inflight)[idx]
            d2, ok2, c2, w2 = self._requests(seed, inst, keys[idx], attempt + INNER_DRAW_STRIDE * i, nxt,
                                             nbytes[idx], infl, deadline[idx] - nxt)
            end[idx], ok[idx], code[idx] = nxt + d2, ok2, c2
            idx = idx[w2 >= 0]
            if not len(idx):
                break
        return end - starts, ok, code

    def _requests(self, seed: int, inst: int, keys: np.ndarray, draw: int, starts: np.ndarray,
                  nbytes: np.ndarray, inflight: np.ndarray | None, budget: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One HTTP request each, cut at ``budget`` seconds: duration, ok, code, and the Retry-After
        the client honours (seconds, -1 when it does not retry)."""
        n = len(keys)
        lat = self.latency.sample_array(rng.uniform_array(seed, rng.S_ATTEMPT_LAT, inst, keys, draw))
        if self.per_kib:
            lat = lat + self.per_kib * (nbytes.astype(float) / 1024.0)
        if self.per_inflight:
            lat = lat + self.per_inflight * np.maximum(np.asarray(inflight) - 1, 0)
        dur = np.minimum(lat, budget)
        timed_out = lat >= budget
        ok = ~timed_out
        code = np.where(timed_out, -1, 200).astype(np.int64)
        wait = np.full(n, -1.0)
        if self.max_body_bytes:
            big = ok & (nbytes > self.max_body_bytes)
            ok &= ~big
            code[big] = 413
        if self.error_rate > 0:
            err = ok & (rng.uniform_array(seed, rng.S_ATTEMPT_FAIL, inst, keys, draw) < self.error_rate)
            ok &= ~err
            code[err] = self.error_status
        covered = np.zeros(n, dtype=bool)
        for o in self.outages:
            if o.kind == "refuse":
                # the receiver going away kills connections in flight: those attempts fail when it
                # goes, even if it had already answered (the oracle saw the retried batch delivered twice)
                cut = ~covered & ~((starts >= o.start) & (starts < o.end)) & (starts < o.start) & (starts + dur > o.start)
                if cut.any():
                    covered |= cut
                    ok[cut] = False
                    dur[cut] = o.start - starts[cut]
                    code[cut] = -1
                    wait[cut] = -1.0
            hit = ~covered & (starts >= o.start) & (starts < o.end)
            if not hit.any():
                continue
            covered |= hit
            ok[hit] = False
            if o.kind == "refuse":
                dur[hit] = np.minimum(REFUSE_SECONDS, budget[hit])
                code[hit] = -1
            elif o.kind == "hang":
                dur[hit] = budget[hit]
                code[hit] = -1
            else:
                code[hit] = np.where(timed_out[hit], -1, o.status)
                if o.asks_retry and o.retry_after is not None:
                    wait[hit] = np.where(timed_out[hit], -1.0, float(o.retry_after))
        return dur, ok, code, wait


def backoff_sleep(initial: float, seed: int, inst: int, key: int, attempt: int) -> float:
    """Sleep after failed attempt ``attempt`` (0-based, 0..3): ``initial x 1.5^k x (1 + 0.2 U)``
    (``wait.Backoff.Step`` with ``wait.Jitter``)."""
    return float(backoff_sleep_array(initial, seed, inst, np.array([key]), attempt)[0])


def backoff_sleep_array(initial: float, seed: int, inst: int, keys: np.ndarray, attempt: int) -> np.ndarray:
    d = initial * BACKOFF_FACTOR ** attempt
    return d + rng.uniform_array(seed, rng.S_JITTER, inst, keys, attempt) * BACKOFF_JITTER * d


@dataclass(frozen=True)
class LogWriter:
    """The log backend's file writes (``plugin/pkg/audit/log/backend.go``): synchronous, one
    encode + write per event under lumberjack's mutex. ``per_event`` is one write's cost;
    ``error_rate`` the chance a write fails (counted as ``plugin="log"``)."""

    per_event: Latency = field(default_factory=lambda: Latency("fixed", 0.0))
    per_batch: float = 0.0
    error_rate: float = 0.0

    def costs(self, seed: int, inst: int, ids: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-event write cost and failure flag, keyed by each event's ordinal in its stream."""
        ids = np.asarray(ids, dtype=np.int64)
        cost = self.per_event.sample_array(rng.uniform_array(seed, rng.S_LOG_LAT, inst, ids))
        if self.error_rate > 0:
            failed = rng.uniform_array(seed, rng.S_LOG_FAIL, inst, ids) < self.error_rate
        else:
            failed = np.zeros(len(ids), dtype=bool)
        return cost, failed

    def write(self, seed: int, inst: int, ids: list[int]) -> tuple[float, list[bool]]:
        """Cost of writing these events one after another (plus ``per_batch``), and which failed."""
        cost, failed = self.costs(seed, inst, ids)
        total = self.per_batch
        for c in cost.tolist():
            total += c
        return total, failed.tolist()
