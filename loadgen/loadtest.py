"""Open-loop load generator against a kube-apiserver (asyncio + aiohttp), and its run record.

Model: the schedule (:mod:`loadgen.arrivals`) fixes every request's send time before the run;
the scheduler coroutine wakes at each time and starts the request as its own task, whether or
not earlier requests have finished (open loop: a slow apiserver does not slow the offered
load, as with real clients). Each request's verb/resource/namespace is drawn from the mix
(:mod:`loadgen.mix`) when scheduled. At most ``max_inflight`` requests are on the wire; a
request waiting for a slot, or a scheduler that wakes late because the event loop is busy,
shows up as *send lag* (``send - scheduled``). The run never silently sends less: the record
says ``kept_up: false`` with the reason when the achieved rate is more than 3% below the
schedule or lag p99 exceeds ``max_lag``.

Phases: setup (namespaces ``<prefix>-<run id>-<i>``, ``preseed`` objects per namespace and
resource so get/update/patch/delete have targets; not measured), before-scrape of the
apiserver's ``/metrics`` and the sink's ``/stats``, the measured window, drain (wait up to
``drain_timeout`` for in-flight requests, then cancel them), after-scrape, optional ``settle``
(wait for the sink's count to stop growing), and cleanup, which runs also on error and on
Ctrl-C: a label-selected ``deletecollection`` per namespace and resource (every object this run
created carries ``audit-tune.io/run=<run id>``), a check that none is left, and deletion of the
namespaces the run created.

get/update/patch/delete act on an object taken from the pool of live objects (and returned
after, except delete), so two requests never race on one object; if the pool is empty the
request becomes a create (counted in ``substituted``).

Python API::

    record, trace = run_loadtest(LoadTestConfig(rate="300", duration=5), target)
"""
from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from yarl import URL

from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.arrivals import Schedule, parse_profile
from audit_tune.loadgen.audit_metrics import audit_delta
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.mix import DEFAULT_MIX, RESOURCES, RUN_LABEL, VERBS, Mix, make_object, make_patch
from audit_tune.loadgen.record import FORMAT, ST_CANCELLED, ST_ERROR, ST_TIMEOUT, Trace, summarize
from audit_tune.basics.errors import InputError, ServiceError

V_CREATE, V_GET, V_LIST, V_UPDATE, V_PATCH, V_DELETE, V_WATCH = range(len(VERBS))
JSON = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@dataclass(frozen=True)
class LoadTestConfig:
    """Everything that shapes a run; echoed in the record. Durations in seconds, sizes in bytes."""

    rate: str = "100"
    duration: float | None = 60.0
    arrivals: str = "constant"
    mix: str = DEFAULT_MIX
    resources: str = "configmaps,secrets"
    namespaces: int = 1
    namespace_prefix: str = "audit-tune-lt"
    object_size: int = 1024
    preseed: int = 20
    watch_duration: float = 10.0
    list_limit: int = 100
    max_inflight: int = 1024
    request_timeout: float = 30.0
    drain_timeout: float = 30.0
    max_lag: float = 0.1
    seed: int = 1
    cleanup: bool = True
    scrape_metrics: bool = True
    sink_url: str | None = None
    sink_ca: str | None = None
    webhook_host: str | None = None
    settle: float = 0.0
    audit_flags: tuple[str, ...] = ()
    max_records: int = 5_000_000

    def __post_init__(self) -> None:
        if self.max_inflight < 1:
            raise InputError(f"--max-inflight {self.max_inflight}: must be >= 1")
        if self.object_size < 0 or self.preseed < 0 or self.list_limit < 0:
            raise InputError("--object-size, --preseed and --list-limit must be >= 0")
        if not self.namespace_prefix or len(self.namespace_prefix) > 30:
            raise InputError(f"--namespace-prefix {self.namespace_prefix!r}: 1..30 characters")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Pool:
    """Live object names per (namespace, resource); O(1) random checkout."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.items: dict[tuple[int, int], list[str]] = {}
        self.rng = rng

    def put(self, key: tuple[int, int], name: str) -> None:
        self.items.setdefault(key, []).append(name)

    def take(self, key: tuple[int, int]) -> str | None:
        lst = self.items.get(key)
        if not lst:
            return None
        j = int(self.rng.integers(len(lst)))
        lst[j], lst[-1] = lst[-1], lst[j]
        return lst.pop()


class LoadTest:
    """One run. Use :func:`run_loadtest` (sync) or ``await LoadTest(cfg, target).run()``."""

    def __init__(self, config: LoadTestConfig, target: Target,
                 progress: Callable[[float, float, int, int], None] | None = None,
                 handle_signals: bool = False) -> None:
        self.cfg = config
        self.target = target
        self.progress = progress
        self.handle_signals = handle_signals
        self.profile = parse_profile(config.rate, config.duration)
        self.schedule = Schedule(self.profile, config.arrivals, config.seed)
        self.mix = Mix.parse(config.mix, config.resources, config.namespaces)
        self.run_id = time.strftime("%m%d%H%M%S") + "-" + secrets.token_hex(2)
        self.ns_names = [f"{config.namespace_prefix}-{self.run_id}-{i}" for i in range(config.namespaces)]
        self.ns_owned: list[str] = []
        cap = min(self.schedule.capacity_hint(), config.max_records)
        self.trace = Trace(cap)
        self.pool = _Pool(np.random.default_rng(config.seed + 2))
        self.created = 0
        self.deleted = 0
        self.substituted = 0
        self.gen = 0
        self.inflight = 0
        self.max_inflight_seen = 0
        self.interrupted = False
        self.notes: list[str] = []
        self._name_seq = 0
        self._t0 = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._base = URL(target.server)
        self._coll: dict[tuple[int, int], URL] = {}
        self._main: asyncio.Task | None = None
        self._measure_task: asyncio.Future | None = None

    # ------------------------------------------------------------------ HTTP helpers
    def _collection(self, ns: int, res: int) -> URL:
        key = (ns, res)
        u = self._coll.get(key)
        if u is None:
            u = self._coll[key] = URL(f"{self.target.server}/api/v1/namespaces/{self.ns_names[ns]}/{RESOURCES[res]}",
                                      encoded=True)
        return u

    async def _call(self, method: str, url: URL | str, data: bytes | None = None,
                    headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        assert self._session is not None
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self._session.request(method, url, data=data, headers=headers, **kw) as resp:
            body = await resp.read()
            return resp.status, body

    def _new_name(self) -> str:
        self._name_seq += 1
        return f"lt-{self._name_seq}"

    async def _create(self, ns: int, res: int) -> int:
        name = self._new_name()
        body = make_object(RESOURCES[res], name, self.ns_names[ns], self.run_id, self.cfg.object_size)
        status, _ = await self._call("POST", self._collection(ns, res), body, JSON)
        if status == 201:
            self.created += 1
            self.pool.put((ns, res), name)
        return status

    # ------------------------------------------------------------------ one request
    async def _do(self, i: int, verb: int, res: int, ns: int) -> int:
        key = (ns, res)
        if verb in (V_GET, V_UPDATE, V_PATCH, V_DELETE):
            name = self.pool.take(key)
            if name is None:
                self.substituted += 1
                if i >= 0:
                    self.trace.verb[i] = V_CREATE
                return await self._create(ns, res)
            url = self._collection(ns, res) / name
            keep = True
            try:
                if verb == V_GET:
                    status, _ = await self._call("GET", url)
                elif verb == V_UPDATE:
                    self.gen += 1
                    body = make_object(RESOURCES[res], name, self.ns_names[ns], self.run_id, self.cfg.object_size, self.gen)
                    status, _ = await self._call("PUT", url, body, JSON)
                elif verb == V_PATCH:
                    self.gen += 1
                    status, _ = await self._call("PATCH", url, make_patch(self.gen), MERGE_PATCH)
                else:
                    status, _ = await self._call("DELETE", url)
                    if status in (200, 202, 404):
                        keep = False
                        self.deleted += 1 if status != 404 else 0
                return status
            finally:
                if keep:
                    self.pool.put(key, name)
        if verb == V_CREATE:
            return await self._create(ns, res)
        if verb == V_LIST:
            url = self._collection(ns, res).with_query({"limit": str(self.cfg.list_limit)}) if self.cfg.list_limit \
                else self._collection(ns, res)
            status, _ = await self._call("GET", url)
            return status
        # watch: long-running; the server ends it after timeoutSeconds
        secs = max(1, int(math.ceil(self.cfg.watch_duration)))
        url = self._collection(ns, res).with_query({"watch": "1", "timeoutSeconds": str(secs),
                                                    "labelSelector": f"{RUN_LABEL}={self.run_id}"})
        status, _ = await self._call("GET", url, timeout=secs + self.cfg.request_timeout)
        return status

    async def _fire(self, sem: asyncio.Semaphore, i: int, verb: int, res: int, ns: int) -> None:
        loop = asyncio.get_running_loop()
        async with sem:
            self.inflight += 1
            if self.inflight > self.max_inflight_seen:
                self.max_inflight_seen = self.inflight
            t_send = loop.time() - self._t0
            if i >= 0:
                self.trace.send[i] = t_send
            status = ST_ERROR
            try:
                status = await self._do(i, verb, res, ns)
            except asyncio.TimeoutError:
                status = ST_TIMEOUT
            except asyncio.CancelledError:
                status = ST_CANCELLED
                raise
            except (aiohttp.ClientError, OSError):
                status = ST_ERROR
            finally:
                self.inflight -= 1
                if i >= 0:
                    self.trace.latency[i] = loop.time() - self._t0 - t_send
                    self.trace.status[i] = status

    # ------------------------------------------------------------------ phases
    async def _setup(self) -> None:
        for name in self.ns_names:
            body = ('{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"%s","labels":{"%s":"%s"}}}'
                    % (name, RUN_LABEL, self.run_id)).encode()
            status, text = await self._call("POST", f"{self.target.server}/api/v1/namespaces", body, JSON)
            if status in (200, 201, 202):
                self.ns_owned.append(name)
            elif status != 409:
                raise ServiceError(f"{self.target.server}: cannot create namespace {name}: HTTP {status} "
                                   f"{_reason(text)}")
        sem = asyncio.Semaphore(32)

        async def seed(ns: int, res: int) -> None:
            async with sem:
                st = await self._create(ns, res)
                if st != 201:
                    raise ServiceError(f"{self.target.server}: preseed create {RESOURCES[res]} in "
                                       f"{self.ns_names[ns]}: HTTP {st}")

        jobs = [seed(ns, res) for ns in range(self.cfg.namespaces) for res, p in enumerate(self.mix.resources)
                if p > 0 for _ in range(self.cfg.preseed)]
        await asyncio.gather(*jobs)

    async def _scrape(self) -> tuple[mt.Metrics | None, str | None]:
        try:
            status, body = await self._call("GET", f"{self.target.server}/metrics", timeout=30)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            return None, f"GET /metrics failed: {e.__class__.__name__}"
        if status != 200:
            return None, f"GET /metrics: HTTP {status} (the user needs get on nonResourceURL /metrics)"
        try:
            return mt.parse(body.decode(errors="replace"), f"{self.target.server}/metrics"), None
        except InputError as e:
            return None, str(e)

    async def _sink_stats(self) -> dict[str, Any] | None:
        if not self.cfg.sink_url:
            return None
        from audit_tune.loadgen.sink import fetch_stats

        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fetch_stats(self.cfg.sink_url, ca=self.cfg.sink_ca))  # type: ignore[arg-type]
        except ServiceError as e:
            return {"error": str(e)}

    async def _settle(self, before_sink: dict | None) -> dict | None:
        """Wait (up to ``settle`` s) until the sink's stored count is unchanged for 2 s."""
        stats = await self._sink_stats()
        if not self.cfg.settle or stats is None or "error" in stats:
            return stats
        deadline = time.monotonic() + self.cfg.settle
        last, stable_since = stats.get("events_stored"), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = await self._sink_stats()
            if stats is None or "error" in stats:
                return stats
            if stats.get("events_stored") != last:
                last, stable_since = stats.get("events_stored"), time.monotonic()
            elif time.monotonic() - stable_since >= 2.0:
                break
        return stats

    async def _measure(self) -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.cfg.max_inflight)
        tasks: set[asyncio.Task] = set()
        rng = np.random.default_rng(self.cfg.seed + 1)
        duration = self.profile.duration
        self._t0 = loop.time()
        trace = self.trace
        next_progress = 1.0
        try:
            for chunk in self.schedule.chunks():
                verbs, ress, nss = self.mix.draw(rng, len(chunk))
                for off, v, r, n in zip(chunk.tolist(), verbs.tolist(), ress.tolist(), nss.tolist()):
                    delay = off - (loop.time() - self._t0)
                    while delay > 0:  # timers may fire up to ~1 ms early: never send ahead of schedule,
                        await asyncio.sleep(max(delay, 0.001))  # but do not spin on sub-ms sleeps either
                        delay = off - (loop.time() - self._t0)
                    if self.interrupted:
                        raise asyncio.CancelledError
                    i = trace.add(off, v, r)
                    t = loop.create_task(self._fire(sem, i, v, r, n))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    if self.progress is not None and off >= next_progress:
                        next_progress = off + 1.0
                        self.progress(off, duration, trace.n, self.inflight)
            delay = duration - (loop.time() - self._t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if tasks:
                await asyncio.wait(set(tasks), timeout=self.cfg.drain_timeout)
        except asyncio.CancelledError:
            self.interrupted = True
        left = [t for t in tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            self.notes.append(f"{len(left)} requests still in flight after the drain were cancelled")
        return loop.time() - self._t0, len(left)

    async def _cleanup(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run_label": f"{RUN_LABEL}={self.run_id}", "objects_created": self.created,
                               "deleted_during_run": self.deleted, "deleted_at_cleanup": 0, "leftover": 0,
                               "namespaces_deleted": [], "errors": []}
        sel = {"labelSelector": f"{RUN_LABEL}={self.run_id}"}
        for ns in range(self.cfg.namespaces):
            for res, p in enumerate(self.mix.resources):
                coll = self._collection(ns, res)
                try:
                    before = await self._count(coll.with_query(sel))
                    status, text = await self._call("DELETE", coll.with_query(sel), timeout=60)
                    if status not in (200, 202, 404):
                        out["errors"].append(f"deletecollection {coll.path}: HTTP {status} {_reason(text)}")
                    after = await self._count(coll.with_query(sel))
                    out["deleted_at_cleanup"] += max(0, before - after)
                    out["leftover"] += after
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                    out["errors"].append(f"cleanup {coll.path}: {e.__class__.__name__}")
        for name in self.ns_owned:
            try:
                status, text = await self._call("DELETE", f"{self.target.server}/api/v1/namespaces/{name}", timeout=60)
                if status in (200, 202, 404):
                    out["namespaces_deleted"].append(name)
                else:
                    out["errors"].append(f"delete namespace {name}: HTTP {status} {_reason(text)}")
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                out["errors"].append(f"delete namespace {name}: {e.__class__.__name__}")
        return out

    async def _count(self, url: URL) -> int:
        """Objects matching ``url`` (a label-selected list), paged 500 at a time so a large
        leftover set never arrives as one response."""
        import json

        total, token = 0, ""
        while True:
            q = dict(url.query)
            q["limit"] = "500"
            if token:
                q["continue"] = token
            status, body = await self._call("GET", url.with_query(q), timeout=60)
            if status == 404:
                return total
            if status != 200:
                raise aiohttp.ClientError(f"HTTP {status}")
            doc = json.loads(body)
            total += len(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                return total

    # ------------------------------------------------------------------ the run
    async def run(self) -> tuple[dict[str, Any], Trace]:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        installed = []
        if self.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover
                    pass
        connector = aiohttp.TCPConnector(limit=0, ssl=self.target.ssl_context(), ttl_dns_cache=None,
                                         keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self.target.headers(),
            timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout, connect=10),
        )
        cleanup: dict[str, Any] | None = None
        record: dict[str, Any] = {}
        try:
            try:
                await self._setup()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                raise ServiceError(f"{self.target.server}: cannot reach the apiserver ({e.__class__.__name__}: "
                                   f"{str(e)[:120]})") from None
            m_before, m_err = (await self._scrape()) if self.cfg.scrape_metrics else (None, "disabled")
            s_before = await self._sink_stats()
            start_unix = time.time()
            cpu0 = time.process_time()
            if self.interrupted:
                raise KeyboardInterrupt
            self._measure_task = asyncio.ensure_future(self._measure())
            elapsed, cancelled = await self._measure_task
            cpu = time.process_time() - cpu0
            end_unix = time.time()
            m_after, m_err2 = (await self._scrape()) if (self.cfg.scrape_metrics and m_before) else (None, m_err)
            s_after = await self._settle(s_before)
            record = self._record(start_unix, end_unix, elapsed, cpu, m_before, m_after, m_err or m_err2,
                                  s_before, s_after)
        finally:
            try:
                if self.cfg.cleanup:
                    cleanup = await asyncio.shield(self._cleanup())
            finally:
                await self._session.close()
                for sig in installed:
                    loop.remove_signal_handler(sig)
        record["cleanup"] = cleanup if cleanup is not None else {"skipped": "--no-cleanup"}
        return record, self.trace

    def _on_signal(self) -> None:
        """First Ctrl-C/SIGTERM: stop sending, cancel in-flight requests, still scrape and clean up.
        Second: abort the whole run (cleanup may be cut short)."""
        if self.interrupted and self._main is not None:
            self._main.cancel()
            return
        self.interrupted = True
        if self._measure_task is not None:
            self._measure_task.cancel()

    def _record(self, start_unix: float, end_unix: float, elapsed: float, cpu: float,
                m_before: mt.Metrics | None, m_after: mt.Metrics | None, m_err: str | None,
                s_before: dict | None, s_after: dict | None) -> dict[str, Any]:
        from audit_tune import __version__

        duration = self.profile.duration
        summary = summarize(self.trace, duration, self.profile.mean_rate, self.profile.peak_rate, self.cfg.max_lag)
        load = summary["load"]
        load["substituted_creates"] = self.substituted
        load["max_inflight_seen"] = self.max_inflight_seen
        cpu_util = cpu / elapsed if elapsed > 0 else 0.0
        if not load["kept_up"]:
            # Say *why*: a slow target (requests queue for a slot) or a CPU-starved generator.
            if self.max_inflight_seen >= self.cfg.max_inflight:
                load["behind_reason"] += (f"; in-flight reached --max-inflight {self.cfg.max_inflight}: the target answers "
                                          f"slower than the offered load (latency p50 {summary['latency_s']['p50'] or 0:.3f}s)")
            if cpu_util > 0.85:
                load["behind_reason"] += f"; the generator used {100 * cpu_util:.0f}% of a CPU: it is CPU-bound"
        if self.substituted > 0.05 * max(1, self.trace.n):
            self.notes.append(f"{self.substituted} get/update/patch/delete found no free object and became creates; "
                              "raise --preseed to keep the mix")
        state = _cluster_state(self.target)
        sink_for_host = self.cfg.sink_url or state.get("sink_url")
        webhook_host = self.cfg.webhook_host or (urlsplit(sink_for_host).netloc if sink_for_host else None)
        if m_before is not None and m_after is not None:
            audit = audit_delta(m_before, m_after, webhook_host)
        else:
            audit = {"error": m_err or "no /metrics scrape"}
        sink = None
        if s_before is not None or s_after is not None:
            sink = {"url": self.cfg.sink_url, "before": s_before, "after": s_after}
            if s_before and s_after and "error" not in s_before and "error" not in s_after:
                sink["delta"] = {k: s_after[k] - s_before[k] for k in
                                 ("requests", "batches", "events_received", "events_stored", "bytes_received")}
        state = _cluster_state(self.target)
        flags = _flags(self.cfg.audit_flags) if self.cfg.audit_flags else _flags(tuple(state.get("audit_flags") or ()))
        if flags is not None and not self.cfg.audit_flags:
            flags["source"] = state.get("_path")
        return {
            "format": FORMAT, "tool_version": __version__, "run_id": self.run_id,
            "config": self.cfg.to_dict(), "target": self.target.describe(),
            "mix": self.mix.to_dict(), "profile": {"spec": self.profile.spec, "duration_s": duration,
                                                   "segments": [list(s) for s in self.profile.segments]},
            "window": {"start_unix": start_unix, "end_unix": end_unix, "duration_s": duration, "elapsed_s": elapsed},
            "interrupted": self.interrupted,
            **summary,
            "client_cpu_s": cpu, "client_cpu_util": cpu / elapsed if elapsed > 0 else None,
            "audit": audit, "sink": sink, "flags": flags, "notes": self.notes,
        }


def _cluster_state(target: Target) -> dict[str, Any]:
    """The ``state.json`` of an audit-tune cluster whose kubeconfig the target came from (else {}):
    it knows the ``--audit-*`` flags in force and the sink URL."""
    import json
    from pathlib import Path

    if not target.kubeconfig:
        return {}
    p = Path(target.kubeconfig).parent / "state.json"
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(st, dict) or Path(str(st.get("kubeconfig", ""))).resolve() != Path(target.kubeconfig).resolve():
        return {}
    if str(st.get("server", "")).rstrip("/") != target.server.rstrip("/"):
        return {}
    st["_path"] = str(p)
    return st


def _flags(args: tuple[str, ...]) -> dict[str, Any] | None:
    if not args:
        return None
    out: dict[str, Any] = {"args": list(args)}
    try:
        from audit_tune.sim.config import asdict as flags_asdict, parse_flags

        out["parsed"] = flags_asdict(parse_flags(list(args)))
    except Exception as e:  # noqa: BLE001 - the flags are echoed as given either way
        out["parse_error"] = str(e)
    return out


def _reason(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def run_loadtest(config: LoadTestConfig, target: Target,
                 progress: Callable[[float, float, int, int], None] | None = None,
                 handle_signals: bool = False) -> tuple[dict[str, Any], Trace]:
    """Run one load test to completion (cleanup included); returns ``(record, trace)``.

    The record has no ``trace`` yet: :func:`loadgen.record.write_record` adds it inline or as a
    sidecar. Raises :class:`sim.errors.ServiceError` if the apiserver cannot be reached.
    """
    lt = LoadTest(config, target, progress, handle_signals)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(lt.run())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (about 1.5x the requests per CPU second), else asyncio's.

    ``AUDIT_TUNE_NO_UVLOOP=1`` forces the standard loop.
    """
    if os.environ.get("AUDIT_TUNE_NO_UVLOOP") == "1":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
