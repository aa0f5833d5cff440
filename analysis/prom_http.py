"""The HTTP transport to Prometheus' API: one GET under a whole-request deadline, capped answers,
same-origin redirects only.

Prometheus found in the wild sits behind proxies, tenant gateways and slow links, so:

* ``--prometheus-timeout`` is a deadline for the whole query, retries and backoff included. Each
  socket operation waits at most the time left, and a watchdog shuts the socket down when the
  deadline passes, so a server that sends one byte a second cannot hold a command past it
  (a per-read timeout would wait forever on such a server).
* An answer larger than :data:`MAX_ANSWER_BYTES` is cut off with one line (before it is parsed).
* Redirects are followed only to the same origin (scheme, host, port), and that is said on stderr
  once; a redirect to another origin is refused with one line, so ``-H`` headers, tokens and
  passwords are never sent anywhere but the ``--prometheus-url`` host.
* Answers 429 and 5xx and refused or reset connections are retried (``--prometheus-retries``, with
  backoff) while the deadline allows.

Only the standard library is used (``http.client``), so the socket is ours to watch; no proxy
environment variable is honoured.
"""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

from audit_tune.analysis.prom_settings import PromSettings
from audit_tune.basics.errors import ServiceError, TimeoutExceeded

MAX_ANSWER_BYTES = 128 * 1024 * 1024
MAX_REDIRECTS = 5
_RETRY_STATUS = (429, 500, 502, 503, 504)
_REDIRECT_STATUS = (301, 302, 303, 307, 308)


@dataclass
class Reply:
    status: int
    body: bytes
    url: str


class _Timeout(Exception):
    pass


def _origin(url: str) -> tuple[str, str, int]:
    u = urlsplit(url)
    return (u.scheme, (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80))


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


class Transport:
    """GETs against one Prometheus with the settings' auth, TLS, deadline and retries."""

    def __init__(self, settings: PromSettings, log: Callable[[str], None]) -> None:
        self.s = settings
        self.log = log
        self.base = settings.url or ""
        self.headers = {"Accept": "application/json", "User-Agent": "audit-tune", **settings._headers}
        if settings._auth is not None:
            user, pw = settings._auth
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        self.ctx: ssl.SSLContext | None = None
        if urlsplit(self.base).scheme == "https":
            verify = settings._verify
            self.ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
        self._redirect_said: set[str] = set()

    # -- one query, retries included ------------------------------------------------------------
    def get(self, path: str, params: dict[str, str], what: str) -> Reply:
        """The final (non-redirect) answer to ``GET base+path?params``; raises one-line errors."""
        deadline = time.monotonic() + self.s._timeout_s
        url = self.base + path + "?" + urlencode(params)
        attempts = self.s.retries + 1
        last: Reply | None = None
        for attempt in range(attempts):
            try:
                last = self._follow(url, deadline, what)
            except _Timeout:
                raise self._timeout(what) from None
            except ssl.SSLError as e:
                why = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else "handshake failed"
                raise ServiceError(f"TLS to prometheus {self.s.display_url}: {why}: give --ca-file with the CA that "
                                   f"signed its certificate (or --insecure-skip-tls-verify)") from None
            except (OSError, http.client.HTTPException) as e:
                if time.monotonic() >= deadline:
                    raise self._timeout(what) from None
                if attempt + 1 >= attempts or not self._sleep(attempt, deadline):
                    raise ServiceError(f"cannot connect to prometheus {self.s.display_url}: {_conn_reason(e)}: "
                                       f"check --prometheus-url/-p") from None
                continue
            if last.status not in _RETRY_STATUS or attempt + 1 >= attempts or not self._sleep(attempt, deadline):
                return last
        assert last is not None
        return last

    def _timeout(self, what: str) -> TimeoutExceeded:
        return TimeoutExceeded(f"prometheus {self.s.display_url} did not answer {what} within --prometheus-timeout "
                               f"{self.s.timeout}: raise --prometheus-timeout or shorten --history")

    @staticmethod
    def _sleep(attempt: int, deadline: float) -> bool:
        pause = 0.5 * 2 ** attempt
        if time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
        return True

    def _follow(self, url: str, deadline: float, what: str) -> Reply:
        for _ in range(MAX_REDIRECTS + 1):
            reply, location = self._once(url, deadline)
            if reply.status not in _REDIRECT_STATUS or not location:
                return reply
            nxt = urljoin(url, location)
            if _origin(nxt) != _origin(self.base):
                raise ServiceError(f"prometheus {self.s.display_url} redirected {what} to another origin "
                                   f"({_origin_text(nxt)}): refused, so that headers and credentials go nowhere "
                                   f"else; give that URL with --prometheus-url if you trust it")
            path = urlsplit(nxt).path
            if path not in self._redirect_said:
                self._redirect_said.add(path)
                self.log(f"tune: prometheus redirected {urlsplit(url).path} to {path} (same origin); following")
            url = nxt
        raise ServiceError(f"prometheus {self.s.display_url}: more than {MAX_REDIRECTS} redirects for {what}")

    # -- one HTTP exchange ----------------------------------------------------------------------
    def _once(self, url: str, deadline: float) -> tuple[Reply, str | None]:
        u = urlsplit(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout()
        conn: http.client.HTTPConnection
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname or "", u.port, timeout=left, context=self.ctx)
        else:
            conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=left)
        sock_box: list[socket.socket] = []
        timer = threading.Timer(left, _shutdown, (sock_box,))
        timer.daemon = True
        timer.start()
        try:
            conn.connect()
            sock_box.append(conn.sock)
            conn.request("GET", u.path + ("?" + u.query if u.query else ""), headers=self.headers)
            resp = conn.getresponse()
            body = bytearray()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout()
                sock_box[0].settimeout(left)
                chunk = resp.read1(65536)
                if not chunk:
                    if time.monotonic() >= deadline - 0.001:
                        raise _Timeout()   # the watchdog shut the socket
                    if resp.length:
                        raise http.client.IncompleteRead(bytes(body), resp.length)
                    break
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise ServiceError(f"prometheus {self.s.display_url} answered with more than "
                                       f"{MAX_ANSWER_BYTES:,} bytes: narrow the query with "
                                       f"-l/--instance/--selector or shorten --history")
            return Reply(resp.status, bytes(body), url), resp.getheader("Location")
        except TimeoutError:
            raise _Timeout() from None
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline - 0.001:
                raise _Timeout() from None
            raise
        finally:
            timer.cancel()
            conn.close()


def _shutdown(sock_box: list[socket.socket]) -> None:
    """Watchdog: wake a read blocked on a slow server when the deadline passes."""
    for sock in sock_box:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _conn_reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return "unknown host"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed without answer"
    return type(e).__name__ + (f" ({e.strerror})" if isinstance(e, OSError) and e.strerror else "")
