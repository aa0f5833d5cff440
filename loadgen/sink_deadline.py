"""A per-request header deadline for the sink's HTTP/1.1 connections.

aiohttp (``web_protocol.RequestHandler``) bounds only the idle time between requests
(``keepalive_timeout``); nothing bounds how long one request's head may take to arrive, so a
client dripping one header line at a time holds a connection (and a file descriptor) for as
long as it likes. Go's ``http.Server.ReadHeaderTimeout`` is the model: the head of *every*
request, the first on a connection and each later keep-alive or pipelined one, must be
complete within ``timeout`` of its first byte (the first request: of the connection opening).

:class:`HeaderDeadline` is a protocol factory for ``loop.create_server`` wrapping aiohttp's
public ``AppRunner.server`` factory. Each connection gets a :class:`_Guarded` protocol that
forwards every asyncio protocol call to aiohttp's handler and keeps one timer:

* armed when the connection opens, and when bytes arrive while no request head is pending
  and none is being handled past its body (idle keep-alive, or after a body was read:
  pipelined);
* disarmed when the application sees the request (``head_seen``, from a middleware);
* on expiry, the connection is closed unless a request is being handled, in which case the
  next head gets a fresh ``timeout`` once that request is answered (aiohttp handles a
  connection's requests one at a time, so a pipelined head waits behind it).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["HeaderDeadline"]


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's handler plus the header timer."""

    def __init__(self, inner: asyncio.Protocol, timeout: float,
                 registry: dict[asyncio.BaseProtocol, _Guarded]) -> None:
        self.inner, self._timeout, self._registry = inner, timeout, registry
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._busy = False        # a request is in the application
        self._body_done = True    # that request's body has been read (later bytes are a new head)
        self._late = False        # the timer fired while a request was in the application

    # asyncio protocol calls, forwarded
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._registry[self.inner] = self
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and (not self._busy or self._body_done):
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._registry.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # request boundaries, from the application
    def head_seen(self, has_body: bool) -> None:
        self._disarm()
        self._busy, self._body_done, self._late = True, not has_body, False

    def body_read(self) -> None:
        self._body_done = True

    def answered(self) -> None:
        self._busy = False
        if self._late:
            self._late = False
            self._arm()

    # the timer
    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._busy:
            self._late = True
        elif self._transport is not None:
            self._transport.close()


class HeaderDeadline:
    """Protocol factory: ``loop.create_server(HeaderDeadline(runner.server, 10.0), host, port)``.

    :meth:`of` finds the guard of a request's connection (``request.protocol``) so the
    application can report request boundaries; it is ``None`` for connections it did not make.
    """

    def __init__(self, factory: Callable[[], asyncio.Protocol], timeout: float) -> None:
        self._factory, self._timeout = factory, timeout
        self._guards: dict[asyncio.BaseProtocol, _Guarded] = {}

    def __call__(self) -> _Guarded:
        return _Guarded(self._factory(), self._timeout, self._guards)

    def of(self, protocol: asyncio.BaseProtocol | None) -> _Guarded | None:
        return self._guards.get(protocol) if protocol is not None else None
