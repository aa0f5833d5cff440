"""Read kube-apiserver audit history from Prometheus and turn it into a :class:`Snapshot`.

Two parts:

* :class:`PromSettings` -- how to reach Prometheus (URL, auth, TLS, timeouts). Its fields become CLI
  options (``tune.options.prometheus_options``), named as Robusta KRR names them; it is validated once
  (:meth:`PromSettings.validate`) and never prints a secret.
* :class:`PromClient` -- queries on top of ``prometheus_api_client.PrometheusConnect`` (``requests``
  underneath, retries with backoff on 5xx and timeouts). Every bad answer becomes one line:
  :class:`~sim.errors.ServiceError` (exit 1) for HTTP errors, malformed JSON, NaN/Inf, a wrong result
  type; :class:`~sim.errors.TimeoutExceeded` (exit 2) when Prometheus does not answer in time.

:func:`take_snapshot` runs the queries listed in ``docs/snapshot.md`` and explains every missing item
per instance (``Snapshot.missing``). It raises :class:`~sim.errors.NotEnoughData` (exit 4) only when
no instance has any audit event data.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from audit_tune.analysis.snapshot import (ERROR_PLUGINS, LEVELS, Errors, Histogram, InstanceData, Missing, PeakSeries, Series,
                               Snapshot, Source, Webhook, Window)
from audit_tune.basics.errors import InputError, NotEnoughData, ServiceError, TimeoutExceeded
from audit_tune.sim.units import format_duration, parse_duration

WINDOW = "__WINDOW__"       # placeholder for the whole window's range in window-wide queries
MAX_POINTS = 11000          # Prometheus refuses query_range answers above 11,000 points per series
LOOPBACK_RE = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)(:\d+)?$")


# ---------------------------------------------------------------------------------------------
# Settings


def _opt(*flags: str, help: str, panel: str = "Prometheus", envvar: str | None = None,
         metavar: str | None = None) -> dict[str, Any]:
    return {"flags": flags, "help": help, "panel": panel, "envvar": envvar, "metavar": metavar}


@dataclass
class PromSettings:
    """How to reach Prometheus. Field metadata lists the CLI flags (``tune.options``)."""

    url: str | None = field(default=None, metadata=_opt(
        "--prometheus-url", "-p", "--prometheus", metavar="URL",
        help="Prometheus URL, e.g. https://prometheus.example:9090 (user:password@ is accepted and never printed)."))
    auth_header: str | None = field(default=None, metadata=_opt(
        "--prometheus-auth-header", metavar="VALUE",
        help="Authorization header value, e.g. 'Bearer TOKEN' or 'Basic BASE64'."))
    headers: list[str] = field(default_factory=list, metadata=_opt(
        "--prometheus-headers", "-H", metavar="'K: V'", help="Extra HTTP header 'Name: value' (repeatable)."))
    ssl_enabled: bool = field(default=False, metadata=_opt(
        "--prometheus-ssl-enabled",
        help="Use https:// for a URL given without a scheme (KRR compatible). Certificates are always verified "
             "unless --insecure-skip-tls-verify."))
    label: str | None = field(default=None, metadata=_opt(
        "--prometheus-label", metavar="LABEL",
        help="Label that tells clusters apart in a shared Prometheus (default 'cluster' when -l is given, "
             "auto-detected otherwise)."))
    cluster: str | None = field(default=None, metadata=_opt(
        "--prometheus-cluster-label", "-l", "--cluster", metavar="NAME",
        help="Only this cluster: the value of --prometheus-label."))
    bearer_token_file: str | None = field(default=None, metadata=_opt(
        "--prometheus-bearer-token-file", metavar="FILE",
        help="File holding a bearer token (also: env PROMETHEUS_BEARER_TOKEN)."))
    ca_file: str | None = field(default=None, metadata=_opt(
        "--ca-file", metavar="FILE", help="CA bundle (PEM) to verify Prometheus' certificate."))
    insecure_skip_tls_verify: bool = field(default=False, metadata=_opt(
        "--insecure-skip-tls-verify", help="Do not verify Prometheus' TLS certificate (off by default)."))
    user: str | None = field(default=None, metadata=_opt(
        "--prometheus-user", metavar="USER", help="Basic auth user (with --prometheus-password-file)."))
    password_file: str | None = field(default=None, metadata=_opt(
        "--prometheus-password-file", metavar="FILE", help="File holding the basic auth password."))
    timeout: str = field(default="60s", metadata=_opt(
        "--prometheus-timeout", metavar="DURATION", help="Timeout of one Prometheus request, e.g. 30s."))
    retries: int = field(default=2, metadata=_opt(
        "--prometheus-retries", metavar="N", help="Retries (with backoff) on 5xx answers, timeouts and refused connections."))

    # Filled by validate(); never printed.
    _secrets: list[str] = field(default_factory=list, repr=False, compare=False, metadata={"internal": True})
    _auth: tuple[str, str] | None = field(default=None, repr=False, compare=False, metadata={"internal": True})
    _headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})
    _timeout_s: float = field(default=60.0, repr=False, compare=False, metadata={"internal": True})
    _verify: Any = field(default=True, repr=False, compare=False, metadata={"internal": True})
    _validated: bool = field(default=False, repr=False, compare=False, metadata={"internal": True})

    def __repr__(self) -> str:
        return f"PromSettings(url={self.display_url!r}, cluster={self.cluster!r})"

    @property
    def display_url(self) -> str:
        return strip_userinfo(self.url or "")

    @property
    def cluster_label(self) -> str | None:
        """The label name to filter/group on: ``--prometheus-label``, or 'cluster' when -l is given."""
        return self.label or ("cluster" if self.cluster else None)

    def validate(self, require_url: bool = True) -> "PromSettings":
        """Check every field once; resolve files and env. Raises :class:`InputError` naming the flag.

        Idempotent: a second call returns at once (the URL's userinfo was already moved to ``_auth``)."""
        if self._validated:
            return self
        self._secrets = []
        headers: dict[str, str] = {}
        if not self.url:
            if require_url:
                raise InputError("--prometheus-url/-p: required, e.g. -p http://prometheus.monitoring:9090")
            return self
        url = self.url.strip()
        if "://" not in url:
            url = ("https://" if self.ssl_enabled else "http://") + url
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InputError(f"--prometheus-url {strip_userinfo(url)!r}: want http(s)://host[:port][/path]")
        try:
            u.port
        except ValueError:
            raise InputError(f"--prometheus-url {strip_userinfo(url)!r}: bad port") from None
        auth: tuple[str, str] | None = None
        if u.username is not None or u.password is not None:
            auth = (_unq(u.username or ""), _unq(u.password or ""))
            self._secrets += [s for s in auth if s]
            if u.password:
                self._secrets.append(u.password)
        self.url = strip_userinfo(url).rstrip("/")

        for h in self.headers:
            if ":" not in h:
                raise InputError(f"--prometheus-headers {_mask_header(h)!r}: want 'Name: value'")
            k, v = h.split(":", 1)
            k, v = k.strip(), v.strip()
            if not k or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k):
                raise InputError(f"--prometheus-headers: {k!r} is not a header name; want 'Name: value'")
            headers[k] = v
            if v:
                self._secrets.append(v)
        mechanisms = []
        if self.auth_header:
            headers["Authorization"] = self.auth_header.strip()
            self._secrets.append(self.auth_header.strip())
            parts = self.auth_header.strip().split(None, 1)
            if len(parts) == 2:
                self._secrets.append(parts[1])
            mechanisms.append("--prometheus-auth-header")
        token = None
        if self.bearer_token_file:
            token = _read_secret(self.bearer_token_file, "--prometheus-bearer-token-file")
            mechanisms.append("--prometheus-bearer-token-file")
        elif os.environ.get("PROMETHEUS_BEARER_TOKEN", "").strip() and not self.auth_header and not self.user:
            token = os.environ["PROMETHEUS_BEARER_TOKEN"].strip()
            mechanisms.append("PROMETHEUS_BEARER_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
            self._secrets.append(token)
        if self.user or self.password_file:
            if not (self.user and self.password_file):
                raise InputError("--prometheus-user and --prometheus-password-file go together (basic auth)")
            pw = _read_secret(self.password_file, "--prometheus-password-file")
            auth = (self.user, pw)
            self._secrets.append(pw)
            mechanisms.append("--prometheus-user")
        elif auth is not None:
            mechanisms.append("user:password@ in --prometheus-url")
        if len(mechanisms) > 1:
            raise InputError(f"choose one Prometheus authentication: {' and '.join(mechanisms)} were both given")
        if self.ca_file:
            p = Path(self.ca_file)
            if not p.is_file():
                raise InputError(f"--ca-file {self.ca_file}: no such file")
            self._verify = str(p)
        else:
            self._verify = True
        if self.insecure_skip_tls_verify:
            if self.ca_file:
                raise InputError("--ca-file and --insecure-skip-tls-verify contradict each other; give one")
            self._verify = False
        self._timeout_s = parse_duration(self.timeout, "--prometheus-timeout")
        if self._timeout_s <= 0:
            raise InputError("--prometheus-timeout: must be > 0s, e.g. 30s")
        if self.retries < 0 or self.retries > 10:
            raise InputError(f"--prometheus-retries {self.retries}: want 0..10")
        if self.label is not None and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", self.label):
            raise InputError(f"--prometheus-label {self.label!r}: not a Prometheus label name")
        self._headers, self._auth = headers, auth
        self._validated = True
        self._secrets = sorted({s for s in self._secrets if s and len(s) >= 3}, key=len, reverse=True)
        return self

    def mask(self, text: str) -> str:
        """``text`` with every secret, URL userinfo and Authorization value replaced by ``***``."""
        out = _mask_urls(str(text))
        for s in self._secrets:
            out = out.replace(s, "***")
        out = re.sub(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer|basic)?\s*[^\s'\",}]+", r"\1\2 ***", out)
        return out


def _unq(s: str) -> str:
    from urllib.parse import unquote

    return unquote(s)


def _read_secret(path: str, flag: str) -> str:
    try:
        v = Path(path).read_text().strip()
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: no such file") from None
    except OSError as e:
        raise InputError(f"{flag} {path}: {e.strerror}") from None
    if not v:
        raise InputError(f"{flag} {path}: the file is empty")
    return v


def _mask_header(h: str) -> str:
    return h.split(":", 1)[0] + ": ***" if ":" in h else "***"


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<url>"
    if "@" not in u.netloc:
        return url
    host = u.netloc.rsplit("@", 1)[1]
    return urlunsplit((u.scheme, host, u.path, u.query, u.fragment))


def _mask_urls(text: str) -> str:
    return re.sub(r"(\w+://)[^/\s@'\"]+@", r"\1***@", text)


# ---------------------------------------------------------------------------------------------
# Client


class TooManySamples(ServiceError):
    """Prometheus refused a query that would load more samples than its ``--query.max-samples``."""


class PromClient:
    """Queries with one-line errors. ``query`` (instant vector) and ``query_range`` (matrix)."""

    def __init__(self, settings: PromSettings) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.s = settings.validate()
        sess = requests.Session()
        host = urlsplit(settings.url).hostname or ""
        if LOOPBACK_RE.match(host):
            sess.trust_env = False   # never send loopback traffic through a proxy
        sess.verify = settings._verify
        retry = Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                      status=settings.retries, backoff_factor=0.5, status_forcelist=[429, 500, 502, 503, 504],
                      allowed_methods=frozenset(["GET", "POST"]), raise_on_status=False, respect_retry_after_header=False)
        self.pc = PrometheusConnect(url=settings.url, headers=dict(settings._headers) or None, auth=settings._auth,
                                    retry=retry, session=sess, timeout=settings._timeout_s)
        self.queries = 0
        self._chunk_said: set[Any] = set()
        self.log: Callable[[str], None] = lambda m: None   # take_snapshot points it at stderr

    # -- error mapping ------------------------------------------------------------------------
    def _call(self, what: str, promql: str, fn: Callable[[], Any]) -> Any:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        url = self.s.display_url
        attempts = self.s.retries + 1
        self.queries += 1
        try:
            if self.s._verify is False:   # the user asked for it; one stderr line says so, not one per request
                import warnings

                from urllib3.exceptions import InsecureRequestWarning

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                    return fn()
            return fn()
        except (requests.exceptions.JSONDecodeError, ValueError):
            raise ServiceError(f"prometheus {url} answered {what} with malformed JSON: is --prometheus-url the "
                               f"Prometheus API root (not a UI or proxy login page)?") from None
        except (requests.exceptions.Timeout, requests.exceptions.ReadTimeout):
            raise TimeoutExceeded(f"prometheus {url} did not answer {what} within {self.s.timeout} "
                                  f"({attempts} attempts): raise --prometheus-timeout or shorten --history") from None
        except requests.exceptions.SSLError as e:
            why = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else "handshake failed"
            raise ServiceError(f"TLS to prometheus {url}: {why}: give --ca-file with the CA that signed its "
                               f"certificate (or --insecure-skip-tls-verify)") from None
        except requests.exceptions.ConnectionError as e:
            if "timed out" in str(e).lower() or "timeout" in type(getattr(e.args[0], "reason", None) or e).__name__.lower():
                raise TimeoutExceeded(f"prometheus {url} did not answer {what} within {self.s.timeout} "
                                      f"({attempts} attempts): raise --prometheus-timeout or shorten --history") from None
            raise ServiceError(f"cannot connect to prometheus {url}: {self.s.mask(_short_conn(e))}: "
                               f"check --prometheus-url/-p") from None
        except requests.exceptions.RequestException as e:
            raise ServiceError(f"prometheus {url} {what}: {self.s.mask(type(e).__name__ + ': ' + str(e))[:300]}") from None
        except PrometheusApiClientException as e:
            msg = self._http_error(str(e), what, promql)
            if "too many samples" in msg:
                raise TooManySamples(msg) from None
            raise ServiceError(msg) from None
        except ValueError:  # malformed JSON (json.JSONDecodeError and requests' JSONDecodeError)
            raise ServiceError(f"prometheus {url} answered {what} with malformed JSON: is --prometheus-url the "
                               f"Prometheus API root (not a UI or proxy login page)?") from None
        except (KeyError, TypeError, IndexError):
            raise ServiceError(f"prometheus {url} answered {what} with JSON that is not a Prometheus API answer "
                               f"(no data.result): is --prometheus-url the Prometheus API root?") from None

    def _http_error(self, msg: str, what: str, promql: str) -> str:
        url = self.s.display_url
        m = re.match(r"HTTP Status Code (\d+) \((.*)\)$", msg, re.S)
        code = int(m.group(1)) if m else 0
        detail = ""
        if m:
            body = m.group(2)
            em = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', body)
            detail = em.group(1) if em else ""
        detail = self.s.mask(detail)[:200]
        if code in (401, 403):
            return (f"prometheus {url} refused {what}: HTTP {code}: check --prometheus-auth-header, "
                    f"--prometheus-bearer-token-file / PROMETHEUS_BEARER_TOKEN or --prometheus-user")
        if code == 404:
            return f"prometheus {url}: HTTP 404 for {what}: is --prometheus-url the Prometheus root (e.g. without /graph)?"
        if code >= 500 or code in (429,):
            return (f"prometheus {url} failed {what}: HTTP {code} after {self.s.retries + 1} attempts"
                    + (f" ({detail})" if detail else ""))
        return f"prometheus {url} rejected {what}: HTTP {code}" + (f": {detail}" if detail else "") + f" [query: {promql[:160]}]"

    @staticmethod
    def _check_number(x: Any, what: str, url: str) -> float:
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise ServiceError(f"prometheus {url} answered {what} with a non-number sample {str(x)[:20]!r}") from None
        if not math.isfinite(v):
            raise ServiceError(f"prometheus {url} answered {what} with {x} (NaN/Inf): the query or the scraped "
                               f"series is broken; check the series in Prometheus")
        return v

    def query(self, promql: str, at: float, what: str = "a query") -> list[tuple[dict[str, str], float]]:
        """Instant query at ``at``; ``[(labels, value)]``. Checks the result is an instant vector."""
        res = self._call(what, promql, lambda: self.pc.custom_query(promql, params={"time": f"{at:.3f}"}))
        url = self.s.display_url
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not an instant vector")
        out = []
        for s in res:
            if not isinstance(s, dict) or "value" not in s or not isinstance(s.get("metric"), dict):
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not an instant vector")
            val = s["value"]
            if not isinstance(val, list) or len(val) != 2:
                raise ServiceError(f"prometheus {url} answered {what} with a malformed sample {str(val)[:40]}")
            out.append((s["metric"], self._check_number(val[1], what, url)))
        return out

    def query_over(self, promql: str, end: float, history: float, what: str,
                   log: Callable[[str], None] = lambda m: None) -> list[tuple[dict[str, str], float]]:
        """Instant query at ``end`` of a window-wide expression (``WINDOW`` stands for the range).

        Additive expressions only (``increase``, ``resets``, ``count``): when Prometheus refuses the
        whole window (``--query.max-samples``), the window is split into 2, 4, ... 128 chunks, evaluated
        as one range query with step = range = chunk, and the chunks are summed per series."""
        try:
            return self.query(promql.replace(WINDOW, _dur(history)), end, what)
        except TooManySamples:
            pass
        n = 2
        while True:
            chunk = math.ceil(history / n)
            try:
                res = self.query_range(promql.replace(WINDOW, _dur(chunk)), end - (n - 1) * chunk, end, chunk, what)
            except TooManySamples:
                if n >= 128:
                    raise TooManySamples(f"prometheus {self.s.display_url} refuses {what} even in 128 chunks of the "
                                         f"window (its --query.max-samples): shorten --history or narrow with "
                                         f"--instance/-l") from None
                n *= 2
                continue
            if n not in self._chunk_said:
                self._chunk_said.add(n)
                (log or self.log)(f"tune snapshot: window queries split into {n} chunks (Prometheus' --query.max-samples)")
            out: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], float]] = {}
            for lbl, ser in res:
                key = tuple(sorted(lbl.items()))
                prev = out.get(key, (lbl, 0.0))[1]
                out[key] = (lbl, prev + sum(ser.v))
            return list(out.values())

    def query_range(self, promql: str, start: float, end: float, step: float,
                    what: str = "a range query", _depth: int = 0) -> list[tuple[dict[str, str], Series]]:
        """Range query; ``[(labels, Series)]``. Checks the result is a matrix.

        When Prometheus refuses it for loading too many samples (``--query.max-samples``), the time range
        is halved (on the step grid) and the halves merged, down to 1/64 of the range."""
        try:
            return self._query_range_once(promql, start, end, step, what)
        except TooManySamples:
            n = int((end - start) // step) + 1
            if n < 2 or _depth >= 6:
                raise
        if _depth == 0 and "range" not in self._chunk_said:
            self._chunk_said.add("range")  # type: ignore[arg-type]
            self.log("tune snapshot: range queries split into shorter time ranges (Prometheus' --query.max-samples)")
        mid = start + ((n - 1) // 2) * step
        merged: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], Series]] = {}
        for a, b in ((start, mid), (mid + step, end)):
            for lbl, ser in self.query_range(promql, a, b, step, what, _depth + 1):
                key = tuple(sorted(lbl.items()))
                have = merged.setdefault(key, (lbl, Series()))[1]
                have.t.extend(ser.t)
                have.v.extend(ser.v)
        return list(merged.values())

    def _query_range_once(self, promql: str, start: float, end: float, step: float,
                          what: str) -> list[tuple[dict[str, str], Series]]:
        from datetime import datetime, timezone

        res = self._call(what, promql, lambda: self.pc.custom_query_range(
            promql, datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc),
            step=f"{step:g}s"))
        url = self.s.display_url
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not a matrix")
        out = []
        for s in res:
            if not isinstance(s, dict) or "values" not in s or not isinstance(s.get("metric"), dict):
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not a matrix")
            t, v = [], []
            for p in s["values"]:
                if not isinstance(p, list) or len(p) != 2:
                    raise ServiceError(f"prometheus {url} answered {what} with a malformed point {str(p)[:40]}")
                t.append(self._check_number(p[0], what, url))
                v.append(self._check_number(p[1], what, url))
            out.append((s["metric"], Series(t, v)))
        return out

    def raw_samples(self, promql_range: str, at: float, what: str) -> list[tuple[dict[str, str], list[float]]]:
        """Instant query of a range selector: the raw sample timestamps per series."""
        res = self._call(what, promql_range, lambda: self.pc.custom_query(promql_range, params={"time": f"{at:.3f}"}))
        url = self.s.display_url
        out = []
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not a range vector")
        for s in res:
            if not isinstance(s, dict) or "values" not in s:
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not a range vector")
            out.append((s.get("metric", {}), [self._check_number(p[0], what, url) for p in s["values"]]))
        return out


def _kind(x: Any) -> str:
    if isinstance(x, dict):
        return "vector sample" if "value" in x else ("matrix series" if "values" in x else "object")
    if isinstance(x, list):
        return "scalar or string" if len(x) == 2 and not isinstance(x[0], dict) else "list"
    return type(x).__name__


def _short_conn(e: Exception) -> str:
    s = str(e)
    for key, text in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                      ("nodename nor servname", "unknown host"), ("Temporary failure in name resolution", "unknown host"),
                      ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed (use --ca-file)"),
                      ("SSLError", "TLS error (check --ca-file)"), ("RemoteDisconnected", "connection closed without answer"),
                      ("Connection reset", "connection reset"), ("Max retries exceeded", "no answer")):
        if key in s:
            return text
    return s[:120]


# ---------------------------------------------------------------------------------------------
# Snapshot


@dataclass
class SnapshotRequest:
    history: float = 7 * 86400.0
    step: float = 15.0
    end: float | None = None
    instances: list[str] = field(default_factory=list)
    selector: str = ""              # extra matchers, e.g. job="apiserver"
    webhook_host: str | None = None


def human_duration(seconds: float) -> str:
    """7d, 36h, 90m, 45s: the largest unit that divides evenly (else Go's format)."""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= n and abs(seconds / n - round(seconds / n)) < 1e-9:
            return f"{round(seconds / n)}{unit}"
    return format_duration(seconds)


_MATCHER_RE = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')


def check_selector(text: str) -> None:
    """``--selector``: comma-separated label matchers such as ``job="apiserver",env!~"dev.*"``."""
    pos = 0
    while pos < len(text):
        m = _MATCHER_RE.match(text, pos)
        if not m:
            raise InputError(f"--selector {text!r}: want label matchers such as 'job=\"apiserver\"' "
                             f"(name, one of = != =~ !~, a double-quoted value; comma-separated)")
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise InputError(f"--selector {text!r}: matchers must be separated by commas")
            pos += 1


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def _dur(s: float) -> str:
    return f"{int(math.ceil(s))}s"


def _key(labels: dict[str, str], cl: str | None) -> tuple[str, str]:
    return (labels.get(cl, "") if cl else "", labels.get("instance", ""))


def take_snapshot(client: PromClient, req: SnapshotRequest, log: Callable[[str], None] = lambda m: None,
                  now: float | None = None) -> Snapshot:
    """Query Prometheus and build the snapshot (see docs/snapshot.md)."""
    from audit_tune import __version__

    s = client.s
    client.log = log
    end = float(req.end if req.end is not None else (now or time.time()))
    end = math.floor(end)
    history = float(req.history)
    if history <= 0:
        raise InputError("--history: must be > 0, e.g. 7d")
    start = end - history
    hist_txt = human_duration(history)
    W = WINDOW

    def qw(promql: str, at: float, what: str) -> list[tuple[dict[str, str], float]]:
        return client.query_over(promql, at, history, what, log)

    # --- selector ----------------------------------------------------------------------------
    matchers = []
    cl = s.cluster_label
    if s.cluster:
        matchers.append(f'{cl}="{_esc(s.cluster)}"')
    if req.instances:
        matchers.append('instance=~"' + "|".join(re.escape(i).replace("\\", "\\\\") for i in req.instances) + '"')
    if req.selector:
        extra_sel = req.selector.strip().strip("{}").strip()
        if extra_sel:
            check_selector(extra_sel)
            matchers.append(extra_sel)
    S = ",".join(matchers)

    def sel(extra: str = "") -> str:
        parts = [p for p in (S, extra) if p]
        return "{" + ",".join(parts) + "}"

    # --- discovery ---------------------------------------------------------------------------
    names = ("apiserver_audit_event_total", "apiserver_audit_level_total", "apiserver_request_total")
    if cl is None:
        # Auto-detect a 'cluster' label on the apiserver series.
        probe = qw(f"count by (cluster) (last_over_time(apiserver_request_total{sel()}[{W}])) or "
                             f"count by (cluster) (last_over_time(apiserver_audit_event_total{sel()}[{W}]))", end,
                             "the cluster label probe")
        if any(lbl.get("cluster") for lbl, _ in probe):
            cl = "cluster"
    has: dict[tuple[str, str], set[str]] = {}
    for name in names:
        q = f'count by (instance{", " + cl if cl else ""}) (last_over_time({name}{sel()}[{W}]))'
        for lbl, _ in qw(q, end, f"the {name} discovery query"):
            has.setdefault(_key(lbl, cl), set()).add(name)
    missing: list[Missing] = []
    where = f" matching {sel()}" if S else ""
    source = Source(s.display_url, Window(float(start), float(end), float(req.step)), cl, S)
    if not has:
        raise NotEnoughData(
            f"no kube-apiserver metrics (apiserver_audit_event_total, apiserver_request_total){where} in prometheus "
            f"{s.display_url} in the last {hist_txt}: is kube-apiserver scraped by this Prometheus? check "
            f"--prometheus-url, -l/--prometheus-cluster-label, --instance and --history")
    for want in req.instances:
        if not any(k[1] == want for k in has):
            missing.append(Missing(want, "apiserver_request_total",
                                   f"no kube-apiserver metrics for instance {want} in the last {hist_txt}",
                                   "check --instance against the 'instance' label in Prometheus"))

    audit_keys = sorted(k for k, v in has.items() if "apiserver_audit_event_total" in v)
    for k in sorted(has):
        if k not in audit_keys:
            missing.append(Missing(k[1], "apiserver_audit_event_total",
                                   f"no apiserver_audit_event_total for instance {k[1]}"
                                   + (f" (cluster {k[0]})" if k[0] else "") + f" in the last {hist_txt}: "
                                   "is --audit-policy-file set?",
                                   "set --audit-policy-file and an audit backend (--audit-webhook-config-file or "
                                   "--audit-log-path) on this kube-apiserver"))
    if not audit_keys:
        snap = Snapshot(source, {}, missing, __version__, time.time())
        raise NotEnoughData(
            f"no apiserver_audit_event_total{where} in prometheus {s.display_url} in the last {hist_txt} "
            f"(kube-apiserver metrics found for {len(has)} instance(s)): is --audit-policy-file set?",
        ) from _MissingCarrier(snap)

    jobs: dict[tuple[str, str], list[str]] = {}
    for lbl, _ in qw(f'count by (instance, job{", " + cl if cl else ""}) '
                     f'(last_over_time(apiserver_audit_event_total{sel()}[{W}]))', end, "the duplicate scrape check"):
        jobs.setdefault(_key(lbl, cl), []).append(lbl.get("job", ""))
    for k, js in sorted(jobs.items()):
        if len(js) > 1:
            missing.append(Missing(k[1], "duplicate scrape",
                                   f"instance {k[1]} is scraped by {len(js)} jobs ({', '.join(sorted(js))}): every "
                                   f"rate and count below is {len(js)}x too high",
                                   f"select one job, e.g. --selector 'job=\"{sorted(js)[0]}\"'"))

    # --- scrape interval and step ----------------------------------------------------------------
    scrape = _scrape_interval(client, sel(), end, history)
    step = float(req.step)
    if scrape and step < scrape:
        log(f"tune snapshot: --step raised to {scrape:g}s, the scrape interval")
        step = scrape
    min_step = math.ceil(history / (MAX_POINTS - 1))
    if step < min_step:
        log(f"tune snapshot: --step raised from {step:g}s to {min_step}s: {hist_txt} at {step:g}s would exceed "
            f"Prometheus' {MAX_POINTS} points per series")
        step = float(min_step)
    source.window.step = step
    R = _dur(max(step, 2 * scrape if scrape else 2 * step))
    G = f"instance{', ' + cl if cl else ''}"

    def rng(promql: str, what: str) -> dict[tuple[str, str], Series]:
        out = {}
        for lbl, ser in client.query_range(promql, start, end, step, what):
            out[_key(lbl, cl)] = ser
        return out

    def inst_q(promql: str, what: str, by: str = "") -> dict[tuple[str, str], dict[str, float]]:
        out: dict[tuple[str, str], dict[str, float]] = {}
        for lbl, v in qw(promql, end, what):
            out.setdefault(_key(lbl, cl), {})[lbl.get(by, "") if by else ""] = v
        return out

    ev_sel = sel()
    event_rate = rng(f"sum by ({G}) (rate(apiserver_audit_event_total{ev_sel}[{R}]))", "the audit event rate query")
    peak: dict[tuple[str, str], Series] = {}
    peak_window = None
    if scrape:
        peak_window = human_duration(scrape)
        res = _dur(scrape)
        peak = rng(f"max_over_time((sum by ({G}) (irate(apiserver_audit_event_total{ev_sel}[{_dur(3 * scrape)}])))"
                   f"[{_dur(step)}:{res}])", "the audit peak rate query")
    ev_inc = inst_q(f"sum by ({G}) (increase(apiserver_audit_event_total{ev_sel}[{W}]))", "the audit event increase")
    resets = inst_q(f"sum by ({G}) (resets(apiserver_audit_event_total{ev_sel}[{W}]))", "the counter reset query")
    errs = inst_q(f"sum by ({G}, plugin) (increase(apiserver_audit_error_total{ev_sel}[{W}]))",
                  "the audit error increase", by="plugin")
    levels = inst_q(f"sum by ({G}, level) (increase(apiserver_audit_level_total{ev_sel}[{W}]))",
                    "the audit level increase", by="level")
    rejected = inst_q(f"sum by ({G}) (increase(apiserver_audit_requests_rejected_total{ev_sel}[{W}]))",
                      "the rejected requests increase")
    req_rate = rng(f"sum by ({G}) (rate(apiserver_request_total{ev_sel}[{R}]))", "the request rate query")
    verbs = inst_q(f"sum by ({G}, verb) (increase(apiserver_request_total{ev_sel}[{W}]))",
                   "the requests by verb increase", by="verb")
    post = sel('method="POST"')
    hosts = inst_q(f"sum by ({G}, host) (increase(rest_client_requests_total{post}[{W}]))",
                   "the webhook host detection", by="host")
    fsel = sel('filter="audit"')
    filt_b = inst_q(f"sum by ({G}, le) (increase(apiserver_request_filter_duration_seconds_bucket{fsel}[{W}]))",
                    "the audit filter latency query", by="le")
    filt_sc = {n: inst_q(f"sum by ({G}) (increase(apiserver_request_filter_duration_seconds_{n}{fsel}[{W}]))",
                         f"the audit filter latency {n}") for n in ("sum", "count")} if filt_b else {"sum": {}, "count": {}}
    mem = rng(f"max by ({G}) (process_resident_memory_bytes{ev_sel})", "the memory query")

    # Webhook host per instance, then its histograms.
    host_of: dict[tuple[str, str], str] = {}
    for k in audit_keys:
        hs = hosts.get(k, {})
        if req.webhook_host:
            if req.webhook_host in hs:
                host_of[k] = req.webhook_host
        else:
            cands = {h: v for h, v in hs.items() if h and not LOOPBACK_RE.match(h)}
            if cands:
                host_of[k] = max(sorted(cands), key=lambda h: cands[h])
                if len(cands) > 1:
                    others = ", ".join(f"{h} ({cands[h]:.0f} POSTs)" for h in sorted(cands) if h != host_of[k])
                    missing.append(Missing(k[1], "webhook host",
                                           f"instance {k[1]} POSTs to several non-loopback hosts; took the busiest, "
                                           f"{host_of[k]} ({cands[host_of[k]]:.0f} POSTs), as the audit webhook; "
                                           f"others: {others} (admission webhooks?)",
                                           "pass --webhook-host HOST:PORT (the server in the audit webhook kubeconfig)"))
    wh: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    if host_of:
        hre = "|".join(re.escape(h).replace("\\", "\\\\") for h in sorted(set(host_of.values())))
        hsel = sel(f'verb="POST",host=~"{hre}"')
        csel = sel(f'method="POST",host=~"{hre}"')
        wh["dur_b"] = _by2(qw, f"sum by ({G}, host, le) (increase(rest_client_request_duration_seconds_bucket{hsel}[{W}]))", end, cl)
        for n in ("sum", "count"):
            wh[f"dur_{n}"] = _hostval(qw, f"sum by ({G}, host) (increase(rest_client_request_duration_seconds_{n}{hsel}[{W}]))", end, cl, f"the webhook latency {n}")
            wh[f"size_{n}"] = _hostval(qw, f"sum by ({G}, host) (increase(rest_client_request_size_bytes_{n}{hsel}[{W}]))", end, cl, f"the webhook size {n}")
        wh["size_b"] = _by2(qw, f"sum by ({G}, host, le) (increase(rest_client_request_size_bytes_bucket{hsel}[{W}]))", end, cl)
        wh["codes"] = _by2(qw, f"sum by ({G}, host, code) (increase(rest_client_requests_total{csel}[{W}]))", end, cl, sub="code")

    # --- assemble ------------------------------------------------------------------------------
    keys_by_inst: dict[str, list[tuple[str, str]]] = {}
    for k in audit_keys:
        keys_by_inst.setdefault(k[1], []).append(k)
    instances: dict[str, InstanceData] = {}
    for k in audit_keys:
        name = k[1] if len(keys_by_inst[k[1]]) == 1 else f"{k[0]}/{k[1]}"
        cluster, inst = k
        ser = event_rate.get(k, Series())
        if len(ser) == 0:
            missing.append(Missing(inst, "apiserver_audit_event_total",
                                   f"apiserver_audit_event_total for instance {inst} has too few samples for a rate "
                                   f"over {R} in the last {hist_txt}", "lower --step or check the scrape job"))
            continue
        d = InstanceData(cluster=cluster, event_rate=ser)
        covered = (ser.t[-1] - ser.t[0] + step) if len(ser) else 0.0
        if covered < 0.9 * history:
            first = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ser.t[0]))
            missing.append(Missing(inst, "apiserver_audit_event_total",
                                   f"apiserver_audit_event_total for instance {inst} covers only "
                                   f"{human_duration(covered)} of the {hist_txt} window (from {first}): "
                                   "the recommendation rests on that",
                                   "record a longer history once the instance has been scraped longer"))
        if k in peak and len(peak[k]):
            d.event_rate_peak = PeakSeries(peak[k].t, peak[k].v, peak_window or "")
        else:
            why = ("no irate() answer over the scrape interval" if scrape
                   else "the scrape interval could not be measured (fewer than 2 samples)")
            missing.append(Missing(inst, "event_rate_peak", f"no sub-step peak rate for instance {inst}: {why}",
                                   "scrape kube-apiserver more often (e.g. scrape_interval: 10s) or use a larger --step"))
        d.events_increase = ev_inc.get(k, {}).get("", 0.0)
        e = errs.get(k, {})
        d.errors_increase = Errors(**{p: e.get(p, 0.0) for p in ERROR_PLUGINS})
        lv = levels.get(k)
        if lv is None:
            missing.append(Missing(inst, "apiserver_audit_level_total",
                                   f"no apiserver_audit_level_total for instance {inst}: level split unknown",
                                   "check that metric_relabel_configs do not drop apiserver_audit_* series"))
        d.level_increase = {x: (lv or {}).get(x, 0.0) for x in LEVELS}
        d.requests_rejected_increase = rejected.get(k, {}).get("", 0.0)
        n_res = resets.get(k, {}).get("", 0.0)
        if n_res > 0:
            missing.append(Missing(inst, "apiserver_audit_event_total resets",
                                   f"apiserver_audit_event_total of instance {inst} reset {n_res:g} time(s) in the "
                                   "window (apiserver restarts); increases account for them, but events buffered at "
                                   "a restart are not counted", ""))
        if k in req_rate and len(req_rate[k]):
            d.request_rate = req_rate[k]
            d.requests_by_verb = dict(sorted(verbs.get(k, {}).items()))
        else:
            missing.append(Missing(inst, "apiserver_request_total",
                                   f"no apiserver_request_total for instance {inst} in the last {hist_txt}: "
                                   "request rate and long-running share unknown",
                                   "scrape kube-apiserver's /metrics in full (metric_relabel_configs may drop it)"))
        h = host_of.get(k)
        if h is None:
            seen = sorted(hosts.get(k, {}))
            if req.webhook_host:
                why = (f"no rest_client_requests_total{{method=\"POST\",host=\"{req.webhook_host}\"}} for instance "
                       f"{inst}" + (f" (POST hosts seen: {', '.join(seen)})" if seen else ""))
                fix = "check --webhook-host (host:port as in the webhook kubeconfig)"
            else:
                why = (f"no audit webhook traffic from instance {inst}: no rest_client_requests_total{{method=\"POST\"}} "
                       f"to a non-loopback host" + (f" (only {', '.join(seen)})" if seen else "")
                       + ": is --audit-webhook-config-file set?")
                fix = "set --audit-webhook-config-file, or pass --webhook-host HOST:PORT if the webhook is on loopback"
            missing.append(Missing(inst, "rest_client_request_duration_seconds", why, fix))
        else:
            db = wh["dur_b"].get(k, {}).get(h, {})
            if not db:
                missing.append(Missing(inst, "rest_client_request_duration_seconds",
                                       f"no rest_client_request_duration_seconds{{verb=\"POST\",host=\"{h}\"}} for "
                                       f"instance {inst}: webhook latency unknown",
                                       "scrape kube-apiserver's /metrics in full"))
            else:
                dur = _hist(db, wh["dur_sum"].get(k, {}).get(h, 0.0), wh["dur_count"].get(k, {}).get(h, 0.0))
                sb = wh["size_b"].get(k, {}).get(h, {})
                size = _hist(sb, wh["size_sum"].get(k, {}).get(h, 0.0), wh["size_count"].get(k, {}).get(h, 0.0)) if sb else None
                if size is None:
                    missing.append(Missing(inst, "rest_client_request_size_bytes",
                                           f"no rest_client_request_size_bytes{{verb=\"POST\",host=\"{h}\"}} for "
                                           f"instance {inst}: batch body sizes unknown (Kubernetes < 1.27?)",
                                           "the recommender falls back to --event-size"))
                d.webhook = Webhook(h, dur, dict(sorted(wh["codes"].get(k, {}).get(h, {}).items())), size)
        fb = filt_b.get(k)
        if fb:
            d.audit_filter_latency = _hist(fb, filt_sc["sum"].get(k, {}).get("", 0.0), filt_sc["count"].get(k, {}).get("", 0.0))
        else:
            missing.append(Missing(inst, "apiserver_request_filter_duration_seconds",
                                   f"no apiserver_request_filter_duration_seconds{{filter=\"audit\"}} for instance "
                                   f"{inst}: audit filter latency unknown",
                                   "Kubernetes >= 1.20 exposes it; check metric_relabel_configs"))
        if k in mem and len(mem[k]):
            d.memory_bytes = mem[k]
        else:
            missing.append(Missing(inst, "process_resident_memory_bytes",
                                   f"no process_resident_memory_bytes for instance {inst}: memory headroom unknown",
                                   "scrape kube-apiserver's /metrics in full"))
        instances[name] = d
    snap = Snapshot(source, instances, missing, __version__, round(time.time(), 3))
    if not instances:
        raise NotEnoughData(f"no usable apiserver_audit_event_total{where} in prometheus {s.display_url} in the last "
                            f"{hist_txt}") from _MissingCarrier(snap)
    return snap


class _MissingCarrier(Exception):
    """Carries the partial snapshot (its ``missing`` list) to the CLI on NotEnoughData."""

    def __init__(self, snap: Snapshot) -> None:
        super().__init__("partial snapshot")
        self.snap = snap


def partial_snapshot(e: BaseException) -> Snapshot | None:
    c = e.__cause__
    return c.snap if isinstance(c, _MissingCarrier) else None


def _hostval(q: Callable[..., Any], promql: str, at: float, cl: str | None, what: str
             ) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for lbl, v in q(promql, at, what):
        out.setdefault(_key(lbl, cl), {})[lbl.get("host", "")] = v
    return out


def _by2(q: Callable[..., Any], promql: str, at: float, cl: str | None, sub: str = "le"
         ) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """{instance key: {host: {sub label value: value}}}."""
    out: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for lbl, v in q(promql, at, f"the webhook {sub} query"):
        out.setdefault(_key(lbl, cl), {}).setdefault(lbl.get("host", ""), {})[lbl.get(sub, "")] = v
    return out


def _hist(buckets: dict[str, float], s: float, c: float) -> Histogram:
    items = []
    for le, v in buckets.items():
        try:
            items.append((math.inf if le in ("+Inf", "Inf") else float(le), v))
        except ValueError:
            continue
    items.sort()
    # Merge duplicate bounds ("1" and "1.0" from different exporters).
    merged: list[tuple[float, float]] = []
    for le, v in items:
        if merged and merged[-1][0] == le:
            merged[-1] = (le, merged[-1][1] + v)
        else:
            merged.append((le, v))
    # increase() extrapolation can make cumulative counts slightly non-monotonic: enforce it.
    cum, run = [], 0.0
    for _, v in merged:
        run = max(run, v)
        cum.append(run)
    return Histogram([le for le, _ in merged], cum, s, c)


def _scrape_interval(client: PromClient, selector: str, end: float, history: float) -> float:
    """Median gap between raw samples of apiserver_audit_event_total near the end of the window."""
    look = min(history, 3600.0)
    res = client.raw_samples(f"apiserver_audit_event_total{selector}[{_dur(look)}]", end, "the scrape interval query")
    gaps: list[float] = []
    for _, ts in res:
        gaps += [b - a for a, b in zip(ts, ts[1:]) if b > a]
    if not gaps:
        # Data ends earlier than an hour before the end: look at the whole window, sparsely.
        try:
            res = client.query_over(f"count_over_time(apiserver_audit_event_total{selector}[{WINDOW}])", end,
                                    history, "the scrape interval query")
        except TooManySamples:
            return 0.0
        n = max((v for _, v in res), default=0.0)
        return round(history / n, 3) if n > 1 else 0.0
    gaps.sort()
    return round(gaps[len(gaps) // 2], 3)
