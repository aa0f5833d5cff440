"""How to reach Prometheus: URL, authentication, TLS, the request deadline and answer caps.

:class:`PromSettings` fields become CLI options (``tune.options.prometheus_options``), named as
Robusta KRR names them; it is validated once (:meth:`PromSettings.validate`) and never prints a
secret (:meth:`PromSettings.mask`).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import unquote, urlsplit, urlunsplit

from audit_tune.basics import files
from audit_tune.basics.errors import InputError
from audit_tune.sim.units import parse_duration

LOOPBACK_RE = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)(:\d+)?$")


class OptionMeta(TypedDict):
    """A setting's CLI option, read by ``tune.options`` from the field's metadata."""

    flags: tuple[str, ...]
    help: str
    panel: str
    envvar: str | None
    metavar: str | None


def _opt(*flags: str, help: str, panel: str = "Prometheus", envvar: str | None = None,
         metavar: str | None = None) -> OptionMeta:
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
        "--prometheus-timeout", metavar="DURATION",
        help="Deadline of one Prometheus query, retries included (a slow answer is cut there), e.g. 30s."))
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

    def validate(self, require_url: bool = True) -> PromSettings:
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
        try:
            u = urlsplit(url)
            _ = u.port  # raises on a bad host or port
        except ValueError:
            raise InputError(f"--prometheus-url {strip_userinfo(url)!r}: not a URL (bad host or port); "
                             "want http(s)://host[:port][/path], IPv6 as http://[::1]:9090") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InputError(f"--prometheus-url {strip_userinfo(url)!r}: want http(s)://host[:port][/path]")
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
            if any(ord(c) < 32 and c != "\t" or ord(c) > 255 for c in v):
                raise InputError(f"--prometheus-headers {k}: the value has a control or non-Latin-1 character")
            headers[k] = v
            if v:
                self._secrets.append(v)
        mechanisms = []
        if self.auth_header:
            if any(ord(c) < 32 and c != "\t" or ord(c) > 255 for c in self.auth_header.strip()):
                raise InputError("--prometheus-auth-header: the value has a control or non-Latin-1 character")
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
        if not math.isfinite(self._timeout_s) or self._timeout_s <= 0 or self._timeout_s > 86400:
            raise InputError("--prometheus-timeout: must be > 0s and at most 24h, e.g. 30s")
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
    return unquote(s)


def _read_secret(path: str, flag: str) -> str:
    v = files.read_text(path, flag, "one line of text", files.SECRET_BYTES).strip()
    if not v or any(c in v for c in "\r\n\x00"):
        if v:
            raise InputError(f"{flag} {path}: must hold one line (no NUL or line break inside)")
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
