"""The buffered backend's throttle: client-go's token bucket, as the collector uses it.

Mirrors ``client-go/util/flowcontrol/throttle.go`` (``NewTokenBucketRateLimiter``) over
``golang.org/x/time/rate``: the bucket starts **full** with ``burst`` tokens, refills at ``qps``
tokens/s up to ``burst``. ``Accept()`` reserves one token now and sleeps until it is due, so the
collector goroutine is blocked, and the buffer is not drained, for that long.

``qps`` is a float32 upstream (``BatchConfig.ThrottleQPS``); callers pass
``BatchOptions.effective_qps``. The arithmetic order below is the one the fast engine repeats.
"""
from __future__ import annotations


class TokenBucket:
    def __init__(self, qps: float, burst: int, now: float = 0.0, tokens: float | None = None) -> None:
        self.qps = float(qps)
        self.burst = float(burst)
        self.tokens = initial_tokens(burst, tokens)
        self.last = now

    def reserve(self, now: float) -> float:
        """Take one token at ``now``; return how long ``Accept`` sleeps (0 if one was there)."""
        tokens = self.tokens + (now - self.last) * self.qps
        if tokens > self.burst:
            tokens = self.burst
        tokens -= 1.0
        self.tokens = tokens
        self.last = now
        if tokens >= 0.0:
            return 0.0
        return -tokens / self.qps


def initial_tokens(burst: float, tokens: float | None) -> float:
    """The bucket's level at t=0: full unless a scenario says otherwise (never above burst)."""
    return float(burst) if tokens is None else min(float(burst), float(tokens))
