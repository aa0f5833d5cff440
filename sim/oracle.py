"""Run the Go oracle: the REAL ``k8s.io/apiserver`` (v0.37.2) audit backends, replayed in real time.

The oracle (``go/oracle/``, built by ``bash scripts/build-oracle.sh`` into
``${AUDIT_TUNE_CACHE:-~/.cache/audit-tune}/bin/audit-tune-oracle``) takes one
``audit-tune-trace/v1`` document and returns one result document; both are described in
``docs/oracle-io.md``.

What is real (upstream code, called, not copied):

* ``plugin/pkg/audit/buffered``: the buffer channel, drops when full, the max-size / max-wait
  batching loop, the client-go token-bucket throttle, async (webhook) vs sync (log) delegate
  calls, and the shutdown drain exactly as genericapiserver runs it (``Run(stopCh)`` before
  arrivals, ``close(stopCh)``, ``Shutdown()``).
* ``plugin/pkg/audit/webhook`` (delegate ``"real-webhook"``): the client-go REST client over
  HTTPS/HTTP2 to an in-process receiver on 127.0.0.1, the retry loop
  (``DefaultRetryBackoffWithInitialDelay(audit-webhook-initial-backoff)``, retry on any error),
  the 30 s per-attempt client timeout, ``apiserver_audit_error_total{plugin="webhook"}``.
* ``plugin/pkg/audit/truncate`` when ``audit-<backend>-truncate-enabled`` is true, placed outside
  ``buffered`` as ``options.ApplyTo`` does.
* ``errors`` are read from the real ``apiserver_audit_error_total{plugin}`` counter in the
  component-base legacy registry; ``attempts`` for ``real-webhook`` from the real
  ``rest_client_requests_total`` for the receiver's host.

What is modelled:

* the arrivals themselves (one ``ProcessEvents`` call with one synthetic Metadata-level event
  per offset, padded to roughly the requested size; no policy, no request handling);
* the receiver's behaviour (latency, random error statuses, outage windows);
* delegate ``"model"``: the network attempt (a sleep and an outcome). For ``backend="webhook"``
  the attempts still go through the real ``pkg/util/webhook.WithExponentialBackoff`` retry loop;
  its final failures are counted by the oracle under ``errors.webhook``. For ``backend="log"``
  each batch sleeps ``log.write_seconds + write_per_event_seconds x n`` and succeeds.

Times are wall-clock: results carry scheduling noise of roughly a millisecond (more on a busy
machine), and a run takes as long as its trace (``stop_at``) plus the shutdown drain.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import NotRequired, TypedDict

from audit_tune.basics.errors import BuildMissingError, InputError, ServiceError, TimeoutExceeded
from audit_tune.basics.jsondata import JsonObject, JsonValue

__all__ = ["oracle_binary", "run_oracle", "cache_dir", "TRACE_FORMAT"]

TRACE_FORMAT = "audit-tune-trace/v1"
_BUILD_HINT = "oracle not built: run bash scripts/build-oracle.sh"


def cache_dir() -> Path:
    """The build cache: ``$AUDIT_TUNE_CACHE`` or ``~/.cache/audit-tune``."""
    env = os.environ.get("AUDIT_TUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audit-tune"


def oracle_binary() -> Path:
    """Path of the built oracle binary.

    Raises :class:`BuildMissingError` (``"oracle not built: run bash scripts/build-oracle.sh"``)
    when it is missing or not executable. It does not check that the build is current; the build
    script does that from the source hash.
    """
    path = cache_dir() / "bin" / "audit-tune-oracle"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BuildMissingError(_BUILD_HINT)
    return path


class OracleEvent(TypedDict):
    """One event of ``events_detail``: its instance (index), position, and when it was created and
    delivered (seconds; None when it never was)."""

    instance: int
    index: int
    created: float | None
    delivered: float | None


class OracleBatch(TypedDict):
    """One delegate ``ProcessEvents`` call (``BatchRecord`` in ``go/oracle/record.go``)."""

    instance: str
    start: float
    end: float
    size: int
    ok: bool


class OracleInstance(TypedDict):
    name: str
    events_total: int
    errors: dict[str, int]
    delivered: int
    batches: int
    batch_sizes: list[int]
    max_inflight_batches: int
    delivery_latency_seconds: JsonObject
    stop_seconds: float
    shutdown_done_seconds: float


class OracleResult(TypedDict):
    """The oracle's answer (``run`` in ``go/oracle/main.go``); Go writes an empty list as null."""

    engine: str
    delegate: str
    backend: str
    events_total: int
    errors: dict[str, float]
    delivered: int
    batches: int
    batch_sizes: list[int] | None
    batch_dispatch_seconds: list[float] | None
    delivery_latency_seconds: JsonObject
    max_inflight_batches: int
    attempts: float
    attempts_by_code: dict[str, float]
    instances: list[OracleInstance]
    run_returned_seconds: float
    arrival_lag_seconds: JsonObject
    stall_seconds: JsonObject
    wall_seconds: float
    checks: JsonObject
    effective: JsonObject
    versions: JsonValue
    receiver: NotRequired[JsonObject]
    receiver_errors: NotRequired[list[str]]
    cpu_seconds: NotRequired[float]
    requests_detail: NotRequired[list[JsonObject] | None]
    batches_detail: NotRequired[list[OracleBatch] | None]
    events_detail: NotRequired[list[OracleEvent] | None]


def run_oracle(doc: JsonObject, timeout: float | None = None) -> OracleResult:
    """Replay ``doc`` (an ``audit-tune-trace/v1`` document) in the real backends; return the result.

    ``timeout`` is in seconds of wall time for the whole run (``None``: no limit). A run lasts at
    least ``doc["stop_at"]`` seconds, plus the shutdown drain (which waits for every in-flight
    webhook batch, retries included).

    Raises (all :class:`sim.errors.TuneError`, one-line messages):

    * :class:`BuildMissingError` when the binary is not built;
    * :class:`InputError` when the oracle rejects the document (the message names the field);
    * :class:`TimeoutExceeded` when ``timeout`` passes (the oracle is killed);
    * :class:`ServiceError` when the oracle crashes or prints something that is not JSON.
    """
    if not isinstance(doc, dict):
        raise InputError(f"oracle input: expected a dict, got {type(doc).__name__}")
    if "format" not in doc:
        doc = {"format": TRACE_FORMAT, **doc}
    binary = oracle_binary()
    try:
        payload = json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"oracle input is not JSON-serialisable: {exc}") from None
    try:
        proc = subprocess.run(
            [str(binary)], input=payload, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise TimeoutExceeded(f"oracle did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise ServiceError(f"cannot run oracle {binary}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        msg = _last_line(proc.stderr) or f"exit code {proc.returncode}"
        prefix = "audit-tune-oracle: error: "
        if proc.returncode == 1 and msg.startswith(prefix):
            raise InputError(f"oracle rejected the trace: {msg[len(prefix):]}")
        raise ServiceError(f"oracle failed (exit {proc.returncode}): {msg}")
    try:
        out: OracleResult = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ServiceError(f"oracle printed invalid JSON: {exc}") from None
    if not isinstance(out, dict) or out.get("engine") != "oracle":
        raise ServiceError("oracle output is not an oracle result document (no engine=oracle)")
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""

