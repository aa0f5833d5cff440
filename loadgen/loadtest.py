"""A load test against a kube-apiserver: setup, the measured window, scrapes, cleanup, the record.

Model: the schedule (:mod:`loadgen.arrivals`) fixes every request's send time before the run and
the mix (:mod:`loadgen.mix`) its verb/resource/namespace; the measured window is run by
:class:`loadgen.engine.Engine` (open loop, late requests shed past ``max_late``, drain bounded by
``drain_timeout``), in this process or in ``workers`` processes (:mod:`loadgen.workers`) whose
records are merged exactly. The run never silently sends less: the record says
``kept_up: false`` with the reason when the achieved rate is more than 3% below the schedule,
send lag p99 exceeds ``max_lag``, or requests were shed.

Phases: setup (namespaces ``<prefix>-<run id>-<i>``, ``preseed`` objects per namespace and
resource so get/update/patch/delete have targets; not measured; aiohttp), before-scrape of the
apiserver's ``/metrics`` and the sink's ``/stats``, the measured window, after-scrape, optional
``settle`` (wait for the sink's count to stop growing; skipped when interrupted), and cleanup,
which runs also on error and on Ctrl-C: a label-selected ``deletecollection`` per namespace and
resource (every object this run created carries ``audit-tune.io/run=<run id>``), a check that
none is left, and deletion of the namespaces the run created.

Python API::

    record, trace = run_loadtest(LoadTestConfig(rate="300", duration=5), target)
"""
from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from yarl import URL

from audit_tune import __version__
from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.arrivals import Schedule, parse_profile
from audit_tune.loadgen.audit_metrics import AuditDelta, audit_delta
from audit_tune.loadgen.engine import Engine, WorkerResult
from audit_tune.loadgen.eventloop import loop_factory
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.ltconfig import LoadTestConfig, available_cores
from audit_tune.loadgen.mix import RESOURCES, RUN_LABEL, Mix, make_object
from audit_tune.loadgen.rawhttp import now
from audit_tune.loadgen.record import FORMAT, Trace, merge_histograms, summarize
from audit_tune.loadgen.runinfo import cluster_state, flags_record, state_flags
from audit_tune.loadgen.sink_client import fetch_stats
from audit_tune.loadgen.sink_stats import SinkStats, StatsUnread
from audit_tune.loadgen.workers import WorkerSet, merge, worker_figures

JSON = {"Content-Type": "application/json"}
__all__ = ["LoadTest", "LoadTestConfig", "available_cores", "run_loadtest", "loop_factory", "cluster_state"]


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


T = TypeVar("T")
D = TypeVar("D")


class CleanupReport(TypedDict):
    """What the clean-up after a run deleted (by the run's label) and what it could not."""

    run_label: str
    objects_created: int
    deleted_during_run: int
    deleted_at_cleanup: int
    leftover: int
    namespaces_deleted: list[str]
    errors: list[str]


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
        self.trace = Trace(1)  # replaced by the workers' merged rows after the window
        self.pool = _Pool(np.random.default_rng(config.seed + 2))
        self.created = 0
        self.deleted = 0
        self.substituted = 0
        self.interrupted = False
        self.notes: list[str] = []
        self._name_seq = 0
        self._t0 = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._base = URL(target.server)
        self._coll: dict[tuple[int, int], URL] = {}
        self._main: asyncio.Task | None = None
        self._measure_task: asyncio.Future | None = None
        self._engine: Engine | None = None
        self._workers: WorkerSet | None = None
        self.results: list[WorkerResult] = []
        self._start_unix = 0.0

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

    # ------------------------------------------------------------------ phases
    async def _setup(self) -> None:
        for name in self.ns_names:
            body = json.dumps({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": name, "labels": {RUN_LABEL: self.run_id}}},
                              separators=(",", ":")).encode()
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
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return None, f"GET /metrics failed: {e.__class__.__name__}"
        if status != 200:
            return None, f"GET /metrics: HTTP {status} (the user needs get on nonResourceURL /metrics)"
        try:
            return mt.parse(body.decode(errors="replace"), f"{self.target.server}/metrics"), None
        except InputError as e:
            return None, str(e)

    async def _sink_stats(self) -> SinkStats | StatsUnread | None:
        if not self.cfg.sink_url:
            return None

        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fetch_stats(self.cfg.sink_url, ca=self.cfg.sink_ca))  # type: ignore[arg-type]
        except ServiceError as e:
            return StatsUnread(error=str(e))

    async def _settle(self, before_sink: SinkStats | StatsUnread | None) -> SinkStats | StatsUnread | None:
        """Wait (up to ``settle`` s) until the sink's stored count is unchanged for 2 s."""
        stats = await self._sink_stats()
        if not self.cfg.settle or stats is None or "error" in stats:
            return stats
        deadline = time.monotonic() + self.cfg.settle
        last, stable_since = stats["events_stored"], time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = await self._sink_stats()
            if stats is None or "error" in stats:
                return stats
            if stats["events_stored"] != last:
                last, stable_since = stats["events_stored"], time.monotonic()
            elif time.monotonic() - stable_since >= 2.0:
                break
        return stats

    async def _measure(self) -> tuple[float, int]:
        """The measured window: one in-process :class:`loadgen.engine.Engine`, or ``workers``
        processes (:mod:`loadgen.workers`); their results merged into ``self.trace``."""
        pool = {key: list(names) for key, names in self.pool.items.items()}
        if self._workers is not None:
            run = asyncio.ensure_future(self._workers.run(self.cfg, self.target, self.ns_names, self.run_id, pool, now))
            ticker = asyncio.ensure_future(self._tick())
            try:
                t0, results, notes = await asyncio.shield(run)
            except asyncio.CancelledError:  # a stop: the workers were told, their results still come
                t0, results, notes = await run
            finally:
                ticker.cancel()
            self.notes.extend(notes)
        else:
            t0 = now() + 0.01
            self._engine = Engine(self.cfg, self.target, self.ns_names, self.run_id, pool, progress=self.progress)
            if self.interrupted:
                self._engine.stop()
            results = [await self._engine.run(t0)]
        self._t0 = t0
        self._start_unix = time.time() - (now() - t0)  # the window's start, not the workers' start-up
        self.results = results
        self.trace = merge(results)
        for r in results:
            self.created += r.created
            self.deleted += r.deleted
            self.substituted += r.substituted
            self.notes.extend(f"worker {r.worker}: {x}" if len(results) > 1 else x for x in r.notes)
            if r.interrupted:
                self.interrupted = True
        cancelled = sum(r.cancelled_at_drain for r in results)
        return max((r.elapsed_s for r in results), default=0.0), cancelled

    async def _tick(self) -> None:
        if self.progress is None:
            return
        start = now()
        while True:
            await asyncio.sleep(1.0)
            self.progress(now() - start, self.profile.duration, 0, 0)

    async def _cleanup(self) -> CleanupReport:
        out = CleanupReport(run_label=f"{RUN_LABEL}={self.run_id}", objects_created=self.created,
                            deleted_during_run=self.deleted, deleted_at_cleanup=0, leftover=0,
                            namespaces_deleted=[], errors=[])
        sel = {"labelSelector": f"{RUN_LABEL}={self.run_id}"}
        for ns in range(self.cfg.namespaces):
            for res, _p in enumerate(self.mix.resources):
                coll = self._collection(ns, res)
                try:
                    before = await self._count(coll.with_query(sel))
                    status, text = await self._call("DELETE", coll.with_query(sel), timeout=60)
                    if status not in (200, 202, 404):
                        out["errors"].append(f"deletecollection {coll.path}: HTTP {status} {_reason(text)}")
                    after = await self._count(coll.with_query(sel))
                    out["deleted_at_cleanup"] += max(0, before - after)
                    out["leftover"] += after
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    out["errors"].append(f"cleanup {coll.path}: {e.__class__.__name__}")
        for name in self.ns_owned:
            try:
                status, text = await self._call("DELETE", f"{self.target.server}/api/v1/namespaces/{name}", timeout=60)
                if status in (200, 202, 404):
                    out["namespaces_deleted"].append(name)
                else:
                    out["errors"].append(f"delete namespace {name}: HTTP {status} {_reason(text)}")
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                out["errors"].append(f"delete namespace {name}: {e.__class__.__name__}")
        return out

    async def _count(self, url: URL) -> int:
        """Objects matching ``url`` (a label-selected list), paged 500 at a time so a large
        leftover set never arrives as one response."""
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
        cleanup: CleanupReport | None = None
        record: dict[str, Any] = {}
        if self.cfg.workers > 1:
            self._workers = WorkerSet(self.cfg.workers)
        try:
            try:
                await self._setup()
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
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
            start_unix = self._start_unix or start_unix
            cpu = time.process_time() - cpu0
            if self._workers is not None:
                cpu += sum(r.cpu_s for r in self.results)
            end_unix = time.time()
            m_after, m_err2 = (None, m_err)
            if self.cfg.scrape_metrics and m_before:  # interrupted: stop within a second, so a short bound
                m_after, m_err2 = await (_bounded(self._scrape(), (None, "interrupted: no /metrics read after"))
                                         if self.interrupted else self._scrape())
            s_after = await (_bounded(self._sink_stats(), StatsUnread(error="interrupted: no /stats read after"))
                             if self.interrupted else self._settle(s_before))
            record = self._record(start_unix, end_unix, elapsed, cpu, m_before, m_after, m_err or m_err2,
                                  s_before, s_after)
        finally:
            try:
                if self.cfg.cleanup:
                    cleanup = await asyncio.shield(self._cleanup())
            finally:
                await self._session.close()
                if self._workers is not None:
                    self._workers.close()
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
        if self._engine is not None:
            self._engine.stop()
        if self._workers is not None:
            self._workers.stop()
        if self._measure_task is not None and self._engine is None and self._workers is None:
            self._measure_task.cancel()

    def _record(self, start_unix: float, end_unix: float, elapsed: float, cpu: float,
                m_before: mt.Metrics | None, m_after: mt.Metrics | None, m_err: str | None,
                s_before: SinkStats | StatsUnread | None, s_after: SinkStats | StatsUnread | None) -> dict[str, Any]:
        duration = self.profile.duration
        summary = summarize(self.trace, duration, self.profile.mean_rate, self.profile.peak_rate, self.cfg.max_lag)
        load = summary["load"]
        load["substituted_creates"] = self.substituted
        res = self.results
        load["max_inflight_seen"] = sum(r.max_inflight_seen for r in res)
        load["shed"] = shed = sum(r.shed for r in res)
        load["shed_policy"] = (f"a request more than --max-late {self.cfg.max_late:g} s behind its scheduled time "
                               "is not sent (counted here, 'unsent' in the trace)")
        load["cancelled_at_drain"] = sum(r.cancelled_at_drain for r in res)
        load["workers"] = len(res)
        load["connections"] = sum(r.connections for r in res)
        cpu_util = max((r.cpu_s / r.elapsed_s for r in res if r.elapsed_s > 0), default=0.0)
        if shed:
            reason = f"shed {shed} requests more than {self.cfg.max_late:g} s late"
            load["kept_up"] = False
            load["behind_reason"] = f"{load['behind_reason']}; {reason}" if load["behind_reason"] else reason
        if not load["kept_up"]:
            # Say *why*: a slow target (requests queue for a slot) or a CPU-starved generator.
            if any(r.max_inflight_seen >= r.max_inflight for r in res):
                load["behind_reason"] += (f"; in-flight reached --max-inflight {self.cfg.max_inflight}: the target answers "
                                          f"slower than the offered load (latency p50 {summary['latency_s']['p50'] or 0:.3f}s)")
            if cpu_util > 0.85:
                load["behind_reason"] += (f"; a generator process used {100 * cpu_util:.0f}% of a CPU: it is CPU-bound"
                                          + (" (add --workers)" if len(res) < available_cores() else ""))
        workers = [worker_figures(r, duration) for r in res]
        summary["latency_histogram_us"] = merge_histograms([w.pop("latency_histogram_us") for w in workers])
        if self.substituted > 0.05 * max(1, self.trace.n):
            self.notes.append(f"{self.substituted} get/update/patch/delete found no free object and became creates; "
                              "raise --preseed to keep the mix")
        state = cluster_state(self.target)
        state_sink = state.get("sink_url")
        sink_for_host = self.cfg.sink_url or (state_sink if isinstance(state_sink, str) else None)
        webhook_host = self.cfg.webhook_host or (urlsplit(sink_for_host).netloc if sink_for_host else None)
        audit: AuditDelta | dict[str, str]
        if m_before is not None and m_after is not None:
            audit = audit_delta(m_before, m_after, webhook_host)
        else:
            audit = {"error": m_err or "no /metrics scrape"}
        sink: dict[str, object] | None = None
        if s_before is not None or s_after is not None:
            sink = {"url": self.cfg.sink_url, "before": s_before, "after": s_after}
            if s_before and s_after and "error" not in s_before and "error" not in s_after:
                sink["delta"] = {"requests": s_after["requests"] - s_before["requests"],
                                 "batches": s_after["batches"] - s_before["batches"],
                                 "events_received": s_after["events_received"] - s_before["events_received"],
                                 "events_stored": s_after["events_stored"] - s_before["events_stored"],
                                 "bytes_received": s_after["bytes_received"] - s_before["bytes_received"]}
        state = cluster_state(self.target)
        flags = flags_record(self.cfg.audit_flags) if self.cfg.audit_flags else flags_record(state_flags(state))
        if flags is not None and not self.cfg.audit_flags:
            flags["source"] = state.get("_path")
        return {
            "format": FORMAT, "tool_version": __version__, "run_id": self.run_id,
            "config": self.cfg.to_dict(), "target": self.target.describe(),
            "mix": self.mix.to_dict(), "profile": {"spec": self.profile.spec, "duration_s": duration,
                                                   "segments": [list(s) for s in self.profile.segments]},
            "window": {"start_unix": start_unix, "end_unix": end_unix, "duration_s": duration, "elapsed_s": elapsed,
                       "drain_limit_s": self.cfg.drain_timeout, "drain_s": max((r.drain_s for r in res), default=0.0)},
            "interrupted": self.interrupted,
            **summary,
            "workers": workers, "http_client": "rawhttp (httptools, keep-alive, pre-encoded requests)",
            "client_cpu_s": cpu, "client_cpu_util": cpu / elapsed if elapsed > 0 else None,
            "audit": audit, "sink": sink, "flags": flags, "notes": self.notes,
        }


async def _bounded(coro: Awaitable[T], default: D, timeout: float = 0.3) -> T | D:
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        return default


def _reason(body: bytes) -> str:
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
