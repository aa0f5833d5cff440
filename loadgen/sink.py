"""The audit webhook sink: an aiohttp server that receives kube-apiserver audit batches.

Wire format (spec §3): kube-apiserver's webhook backend POSTs
``{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[...]}`` with
``Content-Type: application/json`` (to the kubeconfig server URL plus ``?timeout=30s``); any 2xx
is success and *any* error or non-2xx is retried (5 attempts, 10 s initial backoff x1.5).
The sink therefore accepts a POST on any path and answers:

* **200** once every event of the batch is stored and anchored (written, and fsynced per
  ``fsync`` policy, see :mod:`loadgen.store`): the acknowledgement never runs ahead of the store;
* **400/408/413/415** for a body that can never be stored (:mod:`loadgen.sink_body`);
* **401** for a missing or wrong bearer token (when a token is configured);
* **503** with ``Retry-After`` while the store cannot take writes (disk full, I/O error); the
  batch was rolled back, and every later batch tries again;
* **413/429/5xx**, delays, hangs and refused connections as :mod:`loadgen.faults` decides.

A request whose head is not complete within ``header_timeout`` of its first byte (the first
request: of the connection opening) has its connection closed, on every request of a keep-alive
or pipelined connection (:mod:`loadgen.sink_deadline`); an idle keep-alive connection is closed
after ``idle_timeout``.

``GET /metrics`` serves the sink's own Prometheus metrics, ``GET /stats`` a JSON snapshot
(counters and per-request handling latencies), ``GET /healthz`` ``ok``; these three are not
authenticated (the sink only binds loopback by default).

Three ways to run it: :class:`Sink` (in-process, in a thread: ``url = Sink(cfg).start()``),
:class:`SinkProcess` (a child ``python -m loadgen.sink``; same ``start/stop/stats``), and
:func:`serve` (foreground, for ``tune sink serve``).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import sys
import threading
import time

import numpy as np
from aiohttp import web

from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.basics.output import log
from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen import sink_tls
from audit_tune.loadgen.chain import load_key
from audit_tune.loadgen.faults import Decision, FaultInjector
from audit_tune.loadgen.sink_body import BodyError, parse_event_list, read_body
from audit_tune.loadgen.sink_client import SinkProcess, fetch_stats, webhook_kubeconfig
from audit_tune.loadgen.sink_config import SinkConfig
from audit_tune.loadgen.sink_deadline import HeaderDeadline
from audit_tune.loadgen.sink_log import HTTP_LOGGER
from audit_tune.loadgen.sink_stats import LatencySummary, SinkStats
from audit_tune.loadgen.store import EventStore, StoreUnavailable

__all__ = ["Sink", "SinkConfig", "SinkProcess", "SinkServer", "fetch_stats", "serve", "webhook_kubeconfig"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Metrics:
    """The sink's own Prometheus metrics (names prefixed ``audit_sink_``)."""

    def __init__(self) -> None:
        r = self.registry = mt.Registry()
        self.events = r.add(mt.Counter("audit_sink_events_received_total", "Audit events in valid EventList bodies."))
        self.stored = r.add(mt.Counter("audit_sink_events_stored_total", "Audit events stored and acknowledged."))
        self.batches = r.add(mt.Counter("audit_sink_batches_received_total", "Valid EventList POSTs acknowledged with 2xx."))
        self.requests = r.add(mt.Counter("audit_sink_requests_total", "HTTP requests received on the webhook path."))
        self.bytes = r.add(mt.Counter("audit_sink_request_bytes_total", "Request body bytes received."))
        self.responses = r.add(mt.Counter("audit_sink_responses_total", "Responses by HTTP status code "
                                                                         "(dropped = connection closed without answer).",
                                          ("code",)))
        self.duration = r.add(mt.Histogram("audit_sink_request_duration_seconds",
                                           "Time from request start to answer (including injected latency).",
                                           LATENCY_BUCKETS))
        self.inflight = r.add(mt.Gauge("audit_sink_inflight_requests", "Webhook requests being handled now."))


class SinkServer:
    """The aiohttp application and its state; runs on whatever event loop calls :meth:`start`."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.metrics = _Metrics()
        self.injector = FaultInjector(config.faults)
        key = load_key(config.chain_key_file, config.store) if config.chain_key_file else None
        self.store = EventStore(config.store, config.fsync, config.fsync_interval, key) if config.store else None
        self.inflight = 0
        self.max_inflight_seen = 0
        self._lat = np.zeros(max(1, config.max_latency_samples), dtype=np.float32)
        self._lat_n = 0
        self._lat_lock = threading.Lock()
        self.reasons: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.started_unix = time.time()
        self.url = ""
        self.tls_files = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._deadline: HeaderDeadline | None = None
        self._ssl = None
        self._port = config.port
        self._outage_tasks: list[asyncio.Task] = []
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    def _ssl_context(self):
        c = self.config
        if c.tls_generate:
            self.tls_files = sink_tls.generate(c.tls_generate, client=True)
            ca = c.client_ca or (str(self.tls_files.ca_cert) if c.client_cert_auth else None)
            return sink_tls.server_context(self.tls_files.server_cert, self.tls_files.server_key, ca)
        if c.tls_cert:
            if c.client_cert_auth and not c.client_ca:
                raise InputError("--client-cert-auth needs --client-ca (or --tls-generate)")
            return sink_tls.server_context(c.tls_cert, c.tls_key, c.client_ca)  # type: ignore[arg-type]
        if c.client_ca or c.client_cert_auth:
            raise InputError("--client-ca needs HTTPS: add --tls-cert/--tls-key or --tls-generate")
        return None

    async def start(self) -> str:
        """Bind and serve; returns the base URL (``http(s)://127.0.0.1:PORT``)."""
        try:
            return await self._start()
        except BaseException:
            if self.store is not None:
                self.store.close()
            raise

    async def _start(self) -> str:
        self._ssl = self._ssl_context()
        app = web.Application(client_max_size=self.config.body_limit + 1, middlewares=[self._request_bounds])
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_get("/healthz", self._get_health)
        app.router.add_route("POST", "/{tail:.*}", self._post)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False,
                                     auto_decompress=False, keepalive_timeout=self.config.idle_timeout,
                                     logger=HTTP_LOGGER)
        await self._runner.setup()
        assert self._runner.server is not None
        self._deadline = HeaderDeadline(self._runner.server, self.config.header_timeout)
        await self._bind()
        self.t0 = time.monotonic()
        self.started_unix = time.time()
        scheme = "https" if self._ssl else "http"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"{scheme}://{host}:{self._port}"
        for o in self.config.faults.outages:
            if o.mode == "refuse":
                self._outage_tasks.append(asyncio.get_running_loop().create_task(self._refuse_window(o.start, o.end)))
        return self.url

    async def _bind(self) -> None:
        assert self._deadline is not None
        loop = asyncio.get_running_loop()
        try:
            handshake = self.config.header_timeout if self._ssl else None  # TLS: the handshake counts as the head
            self._listener = await loop.create_server(self._deadline, self.config.host, self._port, ssl=self._ssl,
                                                      reuse_address=True, backlog=1024, ssl_handshake_timeout=handshake)
        except OSError as e:
            raise ServiceError(f"sink: cannot listen on {self.config.host}:{self._port}: {e.strerror or e}") from None
        if self._listener.sockets:  # port 0 -> the port the OS picked
            self._port = self._listener.sockets[0].getsockname()[1]

    def _unbind(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _refuse_window(self, start: float, end: float) -> None:
        """Stop listening during [start, end) so new connections are refused, then listen again."""
        await asyncio.sleep(max(0.0, self.t0 + start - time.monotonic()))
        self._unbind()
        await asyncio.sleep(max(0.0, self.t0 + end - time.monotonic()))
        said = False
        while not self._closing:  # listen again; if the port was taken meanwhile, keep trying
            try:
                await self._bind()
                return
            except ServiceError as e:
                if not said:
                    log(f"{e}; retrying every 0.5 s")
                    said = True
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        self._closing = True
        for t in self._outage_tasks:
            t.cancel()
        self._unbind()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ handlers
    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.registry.render().encode(), headers={"Content-Type": mt.Registry.CONTENT_TYPE})

    async def _get_stats(self, request: web.Request) -> web.Response:
        samples = request.query.get("samples", "0") not in ("0", "", "false")
        return web.json_response(self.stats(samples=samples))

    async def _get_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @web.middleware
    async def _request_bounds(self, request: web.Request, handler) -> web.StreamResponse:
        guard = self._deadline.of(request.protocol) if self._deadline else None
        if guard is not None:
            guard.head_seen(request.body_exists)
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.answered()

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    async def _post(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        self.inflight += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        m = self.metrics
        m.inflight.set(self.inflight)
        m.requests.inc()
        code = "dropped"
        try:
            try:
                resp = await self._handle(request)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception as e:  # noqa: BLE001 - one line, never a traceback
                log(f"sink: error handling a POST: {e.__class__.__name__}: {e}")
                resp = web.json_response({"error": "internal error"}, status=500)
            code = str(resp.status) if resp is not None else "dropped"
            return resp if resp is not None else web.Response(status=500)
        finally:
            self.inflight -= 1
            m.inflight.set(self.inflight)
            dt = time.perf_counter() - start
            m.duration.observe(dt)
            m.responses.inc(code=code)
            with self._lat_lock:
                if self._lat_n < len(self._lat):
                    self._lat[self._lat_n] = dt
                self._lat_n += 1

    def _note(self, reason: str) -> None:
        if reason:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    async def _drop(self, request: web.Request, decision: Decision) -> None:
        self._note(decision.reason)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if request.transport is not None:
            request.transport.close()

    async def _handle(self, request: web.Request) -> web.Response | None:
        t = time.monotonic() - self.t0
        outage = self.injector.outage_at(t)
        if outage is not None and outage.status is None:  # refuse / hang: no answer at all
            await self._drop(request, self.injector.decide(t, self.inflight, 0))
            return None
        if not self._authorized(request):
            self._note("unauthorized")
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body, wire = await read_body(request, self.config.body_limit, self.config.body_timeout)
        except BodyError as e:
            return self._refuse(e, close=True)
        guard = self._deadline.of(request.protocol) if self._deadline else None
        if guard is not None:
            guard.body_read()
        self.metrics.bytes.inc(wire)
        decision = self.injector.decide(t, self.inflight, wire)
        if decision.drop:
            await self._drop(request, decision)
            return None
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.status is not None:
            self._note(decision.reason)
            return web.json_response({"error": decision.reason}, status=decision.status)
        try:
            items = await asyncio.get_running_loop().run_in_executor(None, self._ingest, body)
        except BodyError as e:
            return self._refuse(e)
        except StoreUnavailable as e:
            self._note("store-unavailable")
            log(f"sink: {e}; answering 503")
            return web.json_response({"error": str(e)}, status=503,
                                     headers={"Retry-After": str(self.config.retry_after)})
        return web.json_response({"stored": items}, status=200)

    def _refuse(self, e: BodyError, close: bool = False) -> web.Response:
        self._note({400: "bad-request", 408: "body-timeout", 413: "max-body-bytes"}.get(e.status, "bad-request"))
        headers = {"Connection": "close"} if close and e.status in (408, 413) else None
        return web.json_response({"error": str(e)}, status=e.status, headers=headers)

    def _ingest(self, body: bytes) -> int:
        """Parse, check and store one batch (runs in a worker thread)."""
        events = parse_event_list(body)
        self.metrics.events.inc(len(events))
        if self.store is not None:
            self.store.append_batch(events)
        self.metrics.stored.inc(len(events))
        self.metrics.batches.inc()
        return len(events)

    # ------------------------------------------------------------------ measurements
    def latency_samples(self) -> np.ndarray:
        """Per-request handling latency in seconds (first ``max_latency_samples`` requests)."""
        with self._lat_lock:
            return self._lat[: min(self._lat_n, len(self._lat))].astype(np.float64)

    def stats(self, samples: bool = False) -> SinkStats:
        m = self.metrics
        lat = self.latency_samples()
        out: SinkStats = {
            "url": self.url,
            "started_unix": self.started_unix,
            "uptime_s": time.monotonic() - self.t0,
            "requests": int(m.requests.get()),
            "batches": int(m.batches.get()),
            "events_received": int(m.events.get()),
            "events_stored": int(m.stored.get()),
            "bytes_received": int(m.bytes.get()),
            "responses": {k[0][1]: int(v) for k, v in dict(m.responses.values).items()},  # copy: other thread
            "faults_applied": dict(self.reasons),
            "inflight": self.inflight,
            "max_inflight": self.max_inflight_seen,
            "store": self.config.store,
            "latency_s": _percentiles(lat),
        }
        if samples:
            out["latency_samples_s"] = [round(float(x), 6) for x in lat]
        return out


def _percentiles(x: np.ndarray) -> LatencySummary:
    if len(x) == 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p = np.percentile(x, [50, 90, 99])
    return {"count": int(len(x)), "mean": float(x.mean()), "p50": float(p[0]), "p90": float(p[1]),
            "p99": float(p[2]), "max": float(x.max())}


class Sink:
    """An in-process sink on its own event loop in a daemon thread.

    >>> sink = Sink(SinkConfig(store="/tmp/events.jsonl"))   # doctest: +SKIP
    >>> url = sink.start(); ...; sink.stats()["events_stored"]; sink.stop()   # doctest: +SKIP
    """

    def __init__(self, config: SinkConfig | None = None) -> None:
        self.config = config or SinkConfig()
        self.server: SinkServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._done: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.server.url if self.server else ""

    def start(self, timeout: float = 15.0) -> str:
        self._thread = threading.Thread(target=self._run, name="audit-sink", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServiceError(f"sink did not start within {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self.url

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.server = SinkServer(self.config)
            loop.run_until_complete(self.server.start())
            self._done = asyncio.Event()
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_until_complete(self._done.wait())
            loop.run_until_complete(self.server.stop())
        finally:
            loop.close()

    def stats(self, samples: bool = False) -> SinkStats:
        if self.server is None:
            raise ServiceError("sink is not running")
        return self.server.stats(samples=samples)

    def latency_samples(self) -> np.ndarray:
        return self.server.latency_samples() if self.server else np.zeros(0)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._done is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._done.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Sink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_until_signal(server: SinkServer, on_ready=None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    await server.start()
    if on_ready is not None:
        on_ready(server)
    try:
        await stop.wait()
    finally:
        await server.stop()


def serve(config: SinkConfig, on_ready=None) -> SinkServer:
    """Run a sink in the foreground until SIGINT/SIGTERM; ``on_ready(server)`` runs once it listens."""
    server = SinkServer(config)
    asyncio.run(_serve_until_signal(server, on_ready))
    return server


def _child_main() -> None:  # pragma: no cover - exercised through SinkProcess
    config = SinkConfig.from_json(sys.stdin.read())

    def ready(server: SinkServer) -> None:
        info = {"url": server.url, "pid": os.getpid(),
                "ca_cert": str(server.tls_files.ca_cert) if server.tls_files else None}
        print(json.dumps(info), flush=True)

    try:
        serve(config, ready)
    except Exception as e:  # noqa: BLE001
        print(f"sink: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    _child_main()
