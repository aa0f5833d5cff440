"""Run a function over many items on a local process pool or on Dask distributed.

Items are shipped in *chunks* (one task = a list of items) so per-task scheduling overhead stays
small next to the work. Three executors:

* ``local``: :class:`concurrent.futures.ProcessPoolExecutor` with ``jobs`` processes
  (forkserver start method, workers ignore SIGINT so Ctrl-C is handled once, by the parent).
* ``dask``: a running Dask cluster, ``scheduler="tcp://HOST:8786"``; tasks are submitted with
  ``retries`` (a task whose worker dies is rescheduled by the scheduler anyway, up to
  ``distributed.scheduler.allowed-failures``).
* ``dask-local``: starts a :class:`distributed.LocalCluster` of ``workers`` processes (one thread
  each) on 127.0.0.1 for the duration of the run.

``fn`` must be importable by name on the workers (a module-level function of an installed
package), and items and results must pickle. :func:`map_points` is the simple entry point;
:class:`ChunkExecutor` gives results chunk by chunk as they complete (what ``tune sweep`` uses to
append results as they arrive).
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from audit_tune import __version__
from audit_tune.basics.errors import InputError, ServiceError

EXECUTORS = ("local", "dask", "dask-local")

T = TypeVar("T")  # an item
R = TypeVar("R")  # its result


@dataclass
class ExecutorOptions:
    kind: str = "local"
    jobs: int | None = None  # local: processes (default: CPUs)
    scheduler: str | None = None  # dask: tcp://host:port
    workers: int | None = None  # dask-local: worker processes (default: CPUs)
    chunk_size: int | None = None  # items per task (default: automatic)
    retries: int = 2  # dask: retries of a task that raised
    warmup: Callable[[], None] | None = None  # run once per worker before the first chunk

    def validate(self) -> ExecutorOptions:
        if self.kind not in EXECUTORS:
            raise InputError(f"--executor {self.kind}: use one of {', '.join(EXECUTORS)}")
        if self.kind == "dask" and not self.scheduler:
            raise InputError("--executor dask needs --scheduler tcp://HOST:PORT (or use --executor dask-local)")
        if self.kind != "dask" and self.scheduler:
            raise InputError(f"--scheduler is for --executor dask, not {self.kind}")
        for name, v in (("-j/--jobs", self.jobs), ("--workers", self.workers), ("--chunk-size", self.chunk_size)):
            if v is not None and v < 1:
                raise InputError(f"{name} {v}: must be >= 1")
        if self.retries < 0:
            raise InputError(f"--retries {self.retries}: must be >= 0")
        return self


def auto_chunk_size(n_items: int, n_workers: int, max_chunk: int = 50) -> int:
    """About 4 tasks per worker, at most ``max_chunk`` items a task (finer progress and resume)."""
    if n_items <= 0:
        return 1
    return max(1, min(max_chunk, math.ceil(n_items / (4 * max(1, n_workers)))))


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


# ---- worker side ------------------------------------------------------------------------------------
def run_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(x) for x in items]


def _pool_init(warmup: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts us down
    if warmup is not None:
        warmup()


def _ignore_sigint() -> bool:
    """On our own LocalCluster's workers: Ctrl-C is the parent's to handle (it closes the cluster)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return True
    except ValueError:  # not the main thread of the worker process
        return False


def _dask_probe(warmup: Callable[[], None] | None) -> str:
    if warmup is not None:
        warmup()

    return __version__


# ---- the executor -------------------------------------------------------------------------------------
class ChunkExecutor:
    """Context manager: start the pool / connect to the cluster; :meth:`imap` runs chunks."""

    def __init__(self, opts: ExecutorOptions) -> None:
        self.opts = opts.validate()
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._cluster: Any = None
        self.n_workers = 1
        self.startup_seconds = 0.0

    # lifecycle
    def __enter__(self) -> ChunkExecutor:
        try:
            return self._start()
        except BaseException:  # Ctrl-C or a failed probe while starting: stop what was started
            self.close(cancel=True)
            raise

    def _start(self) -> ChunkExecutor:
        t0 = time.perf_counter()
        o = self.opts
        if o.kind == "local":
            self.n_workers = o.jobs or os.cpu_count() or 1
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=mp.get_context(method),
                                             initializer=_pool_init, initargs=(o.warmup,))
            # start every worker now (and run the warm-up) so startup is not billed to the first chunks
            list(self._pool.map(_noop, range(self.n_workers)))
        else:
            self._connect()
        self.startup_seconds = time.perf_counter() - t0
        return self

    def _connect(self) -> None:
        o = self.opts
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(f"--executor {o.kind} needs dask.distributed: pip install 'audit-tune[dask]'") from None
        if o.kind == "dask-local":
            import dask

            n = o.workers or os.cpu_count() or 1
            # Two Dask defaults that cost this CPU-bound, numpy-heavy engine: the statistical profiler
            # (samples every 10 ms), and MALLOC_TRIM_THRESHOLD_=65536 set in every worker's environment,
            # which also pins glibc's mmap threshold so every large array is mmapped and faulted in
            # afresh (~25 % more CPU a point, measured). None unsets a pre-spawn variable.
            with dask.config.set({"distributed.worker.profile.enabled": False,
                                  "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                             dashboard_address=None, silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(o.scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise ServiceError(f"--scheduler {o.scheduler}: cannot connect to the Dask scheduler ({e})") from None
        info = self._client.scheduler_info()
        self.n_workers = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1
        if not info.get("workers"):
            raise ServiceError(f"--scheduler {o.scheduler}: the Dask cluster has no workers yet; start some with "
                               f"'dask worker {o.scheduler}'")
        if self._cluster is not None:
            self._client.run(_ignore_sigint)
        try:
            versions = self._client.run(_dask_probe, o.warmup)
        except Exception as e:  # noqa: BLE001 - a worker without audit-tune installed, typically
            raise ServiceError(f"Dask workers cannot run audit-tune ({type(e).__name__}: {e}); install the same "
                               f"audit-tune on every worker") from None

        bad = {w: v for w, v in versions.items() if v != __version__}
        if bad:
            w, v = next(iter(bad.items()))
            raise ServiceError(f"Dask worker {w} runs audit-tune {v}, this client {__version__}; install the same version")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(cancel=exc_type is not None)

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if cancel:
                procs = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for p in procs:  # do not wait for the chunks in progress
                    try:
                        p.terminate()
                    except Exception:  # noqa: BLE001
                        pass
                for p in procs:
                    p.join(5)
            else:
                pool.shutdown(wait=True)
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - closing a dead cluster
                pass
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            try:
                cluster.close(timeout=20)
            except Exception:  # noqa: BLE001
                pass

    # running
    def imap(self, fn: Callable[[T], R], chunks: Sequence[list[T]]) -> Iterator[tuple[int, list[R]]]:
        """Yield ``(chunk index, [fn(item) for item in chunk])`` as chunks complete (any order).

        An exception raised by ``fn`` propagates (after the Dask retries); catch inside ``fn`` to
        record per-item errors instead."""
        if self._pool is not None:
            yield from self._imap_local(fn, chunks)
        elif self._client is not None:
            yield from self._imap_dask(fn, chunks)
        else:
            raise RuntimeError("ChunkExecutor used outside its 'with' block")

    def _imap_local(self, fn: Callable[[T], R], chunks: Sequence[list[T]]) -> Iterator[tuple[int, list[R]]]:
        window = max(4, 2 * self.n_workers)  # bounded in-flight tasks: memory stays flat for huge sweeps
        pool = self._pool
        assert pool is not None  # imap checked it
        pending: dict[Future[list[R]], int] = {}
        nxt = 0
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < window:
                pending[pool.submit(run_chunk, fn, chunks[nxt])] = nxt
                nxt += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: pending[f]):
                i = pending.pop(f)
                yield i, f.result()

    def _imap_dask(self, fn: Callable[[T], R], chunks: Sequence[list[T]]) -> Iterator[tuple[int, list[R]]]:
        from distributed import as_completed

        futs = [self._client.submit(run_chunk, fn, c, pure=False, retries=self.opts.retries) for c in chunks]
        index = {f.key: i for i, f in enumerate(futs)}
        try:
            for f, res in as_completed(futs, with_results=True):
                yield index[f.key], res
                f.release()
        finally:
            live = [f for f in futs if not f.done()]
            if live:
                self._client.cancel(live)


def _noop(_: int) -> None:
    time.sleep(0.05)  # long enough that each worker process gets one and runs its initializer


def map_points(fn: Callable[[T], R], items: Iterable[T], executor: str | ExecutorOptions = "local",
               *, jobs: int | None = None, scheduler: str | None = None, workers: int | None = None,
               chunk_size: int | None = None, retries: int = 2,
               on_chunk: Callable[[int, list[R]], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on the chosen executor, in input order.

    ``executor`` is ``local`` / ``dask`` / ``dask-local`` (with ``jobs``, ``scheduler``,
    ``workers``) or an :class:`ExecutorOptions`. ``on_chunk(done_items, results)`` is called in
    this process as chunks complete (progress, incremental saving). Exceptions from ``fn``
    propagate."""
    opts = executor if isinstance(executor, ExecutorOptions) else ExecutorOptions(
        kind=executor, jobs=jobs, scheduler=scheduler, workers=workers, chunk_size=chunk_size, retries=retries)
    items = list(items)
    if not items:
        return []
    by_chunk: dict[int, list[R]] = {}
    with ChunkExecutor(opts) as ex:
        size = opts.chunk_size or auto_chunk_size(len(items), ex.n_workers)
        chunks = chunked(items, size)
        done = 0
        for i, res in ex.imap(fn, chunks):
            by_chunk[i] = res
            done += len(res)
            if on_chunk is not None:
                on_chunk(done, res)
    return [r for i in range(len(chunks)) for r in by_chunk[i]]
