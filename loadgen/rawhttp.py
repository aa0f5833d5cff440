"""A lean HTTP/1.1 client for the load test's measured window.

Model: a :class:`ConnPool` of persistent keep-alive connections (plain TCP or TLS), at most
``limit`` of them, each carrying one request at a time (no pipelining, as Go's ``net/http`` and
so vegeta). A request is one pre-encoded ``bytes`` (request line, headers, body) written in one
call; the response is parsed by httptools (llhttp, the parser of Node.js) and only its status
is kept, the body is counted and dropped. Completion is a plain callback, not a coroutine: a
request costs no task, no future and no header dict, which is where aiohttp spends most of its
CPU per request at these rates (``bench/bench_loadtest.py`` measures both).

A connection the server closes (``Connection: close``, an error, a reset) is dropped from the
pool; the request on it completes with :data:`ST_ERROR`. :meth:`ConnPool.expire` aborts requests
past their deadline (:data:`ST_TIMEOUT`); :meth:`ConnPool.abort_all` cancels every request in
flight (:data:`ST_CANCELLED`).
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import httptools

from audit_tune.loadgen.record import ST_CANCELLED, ST_ERROR, ST_TIMEOUT

Done = Callable[[int], None]


def encode_request(method: str, target: str, host: str, extra_headers: str, body: bytes = b"",
                   content_type: str | None = None) -> bytes:
    """One HTTP/1.1 request as bytes. ``extra_headers``: pre-rendered ``Name: value\\r\\n`` lines."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Type: {content_type or 'application/json'}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


class Conn(asyncio.Protocol):
    """One keep-alive connection; ``done`` is the callback of the request on it (None when idle)."""

    __slots__ = ("pool", "transport", "parser", "done", "deadline", "dead")

    def __init__(self, pool: ConnPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: Done | None = None
        self.deadline = 0.0
        self.dead = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail(ST_ERROR)

    def on_message_complete(self) -> None:
        done, self.done = self.done, None
        keep = self.parser.should_keep_alive()
        status = self.parser.get_status_code()
        self.pool.busy.discard(self)
        if not keep:
            self._drop()
        if done is not None:
            done(status)
        if keep:
            self.pool.free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ST_ERROR)

    def send(self, data: bytes, done: Done, deadline: float) -> None:
        self.done = done
        self.deadline = deadline
        self.pool.busy.add(self)
        self.transport.write(data)  # type: ignore[union-attr]

    def fail(self, status: int) -> None:
        """End the request on this connection with ``status`` and drop the connection."""
        done, self.done = self.done, None
        self.pool.busy.discard(self)
        self._drop()
        if done is not None:
            done(status)

    def _drop(self) -> None:
        if not self.dead:
            self.dead = True
            self.pool.opened -= 1
            if self.transport is not None:
                self.transport.abort()


class ConnPool:
    """Up to ``limit`` connections to ``host:port``. ``free(conn)`` is the owner's hook: it either
    hands the connection a waiting request or :meth:`park` s it."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, limit: int,
                 free: Callable[[Conn], None], connect_failed: Callable[[BaseException], None]) -> None:
        self.host, self.port, self.tls, self.limit = host, port, tls, limit
        self.idle: list[Conn] = []
        self.busy: set[Conn] = set()
        self.opened = 0
        self.connecting = 0
        self.connects = 0
        self.free = free
        self.connect_failed = connect_failed
        self._tasks: set[asyncio.Task] = set()

    def get(self) -> Conn | None:
        while self.idle:
            c = self.idle.pop()
            if not c.dead:
                return c
        return None

    def park(self, conn: Conn) -> None:
        self.idle.append(conn)

    def can_open(self) -> bool:
        return self.opened < self.limit

    def open(self) -> None:
        """Start one new connection; when up it is handed to ``free``."""
        self.opened += 1
        self.connecting += 1
        self.connects += 1
        t = asyncio.get_running_loop().create_task(self._connect())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port, ssl=self.tls,
                                                   server_hostname=self.host if self.tls else None)
        except (TimeoutError, OSError, ssl.SSLError) as e:
            self.opened -= 1
            self.connecting -= 1
            self.connect_failed(e)
            return
        self.connecting -= 1
        self.free(conn)

    def expire(self, now: float) -> int:
        """Abort the requests whose deadline (``time.monotonic()``) has passed."""
        late = [c for c in self.busy if c.deadline <= now]
        for c in late:
            c.fail(ST_TIMEOUT)
        return len(late)

    def abort_all(self) -> None:
        """Cancel every request in flight and close every connection."""
        for c in list(self.busy):
            c.fail(ST_CANCELLED)
        for c in self.idle:
            c._drop()
        self.idle.clear()
        for t in self._tasks:
            t.cancel()


def now() -> float:
    """The clock of every timestamp in the window: CLOCK_MONOTONIC (ns resolution, shared by all
    processes of the machine, so worker processes agree on the window's start)."""
    return time.monotonic()
