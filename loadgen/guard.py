"""Target safety: only send load to a cluster that is known to be a throw-away test cluster.

Users fear "a load test that hits production by mistake" (spec users-and-conventions). A target is
accepted when it is one of:

* ``local``: a cluster audit-tune's ``local`` provider created (its kubeconfig lives in a state
  dir with a ``state.json`` saying ``provider: local``), or any kubeconfig whose server is on
  loopback and whose context is ``audit-tune-*``;
* ``kind``: created by audit-tune's ``kind`` provider, or a ``kind-*`` context whose server is on
  loopback (what ``kind`` writes: ``https://127.0.0.1:<port>``).

A ``state.json`` vouches only for the server it recorded: the kubeconfig's resolved server must be
the one in the state file (an edited kubeconfig next to an old state file is classified on its own
merits). The kubeconfig is read by :mod:`audit_tune.loadgen.kubeconfig`, the same reader the load
generator uses, so both always mean the same cluster (duplicate names are refused there).

Anything else is ``remote`` and :func:`check_target` refuses it unless ``i_understand=True``
(CLI: ``--i-understand-this-is-not-a-test-cluster``). Messages name the server and context only:
tokens, passwords and URL user-info are never printed (:func:`redact`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from audit_tune.basics.errors import InputError
from audit_tune.loadgen import kubeconfig as kc

OVERRIDE_FLAG = "--i-understand-this-is-not-a-test-cluster"
_SECRET_KEYS = re.compile(r"(?:token|password|passwd|secret|authorization|bearer|client-key-data|private)", re.I)


@dataclass(frozen=True)
class Target:
    """What a kubeconfig points at; safe to print (no credentials)."""

    kind: str  # "local" | "kind" | "remote"
    server: str
    context: str
    reason: str

    @property
    def is_test_cluster(self) -> bool:
        return self.kind in ("local", "kind")


def redact_url(url: str) -> str:
    """``https://user:pw@h/p?token=x`` -> ``https://h/p`` (drops user-info and the query)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return "<unparsable url>"
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


def redact(text: str) -> str:
    """Mask ``key: value`` / ``key=value`` pairs whose key looks secret, and URL user-info."""
    text = re.sub(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+", r"\1 ***", text)
    text = re.sub(rf"(?i)([\w-]*{_SECRET_KEYS.pattern}[\w-]*)(\s*[:=]\s*)([^\s,;]+)", r"\1\2***", text)
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def is_loopback(server: str) -> bool:
    try:
        host = urlsplit(server).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_server(a: str, b: str) -> bool:
    """Equal scheme, host and port (default ports made explicit), path ignored."""
    try:
        ua, ub = urlsplit(a), urlsplit(b)
        pa = ua.port or (443 if ua.scheme == "https" else 80)
        pb = ub.port or (443 if ub.scheme == "https" else 80)
    except ValueError:
        return False
    return bool(ua.hostname) and (ua.scheme, (ua.hostname or "").lower(), pa) == (ub.scheme, (ub.hostname or "").lower(), pb)


def _created_by_us(kubeconfig: Path, server: str) -> str | None:
    """Provider name if ``kubeconfig`` sits next to an audit-tune ``state.json`` that recorded this
    kubeconfig and this ``server``."""
    st = kubeconfig.parent / "state.json"
    try:
        data = json.loads(st.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("kubeconfig"), str):
        return None
    if Path(data["kubeconfig"]).resolve() != kubeconfig.resolve():
        return None
    recorded = data.get("server")
    if not isinstance(recorded, str) or not _same_server(recorded, server):
        return None
    provider = data.get("provider")
    return provider if isinstance(provider, str) else None


def classify(kubeconfig: str | os.PathLike, context: str | None = None) -> Target:
    """Classify the cluster a kubeconfig (and optional context) points at."""
    r = kc.resolve(Path(kubeconfig).expanduser(), context)
    return classify_server(r.server, r.context, kubeconfig=r.path)


def classify_server(server: str, context: str = "", kubeconfig: str | os.PathLike | None = None) -> Target:
    """Classify by server URL and context name (plus, if given, the kubeconfig's location)."""
    provider = _created_by_us(Path(kubeconfig), server) if kubeconfig else None
    server = redact_url(server)
    loop = is_loopback(server)
    if provider in ("local", "kind") and (loop or provider == "kind"):
        return Target(provider, server, context, f"created by audit-tune's {provider} provider")
    if loop and context.startswith("kind-"):
        return Target("kind", server, context, "kind context on loopback")
    if loop and context.startswith("audit-tune-"):
        return Target("local", server, context, "audit-tune context on loopback")
    if not loop:
        why = "server is not on loopback"
    else:
        why = "context is neither kind-* nor audit-tune-* (a loopback server may be a tunnel to a real cluster)"
    return Target("remote", server, context, why)


def check_target(kubeconfig: str | os.PathLike, context: str | None = None, i_understand: bool = False) -> Target:
    """Return the :class:`Target`, or raise :class:`InputError` if it is not a test cluster and
    ``i_understand`` is False."""
    return enforce(classify(kubeconfig, context), i_understand)


def enforce(t: Target, i_understand: bool = False) -> Target:
    """Raise the one-line refusal unless ``t`` is a test cluster or ``i_understand``."""
    if not t.is_test_cluster and not i_understand:
        raise InputError(f"refusing to send load to {t.server} (context {t.context!r}): {t.reason}, so it may not be "
                         f"a test cluster; use 'tune cluster up' or a kind cluster, or pass {OVERRIDE_FLAG}")
    return t


def check_server(server: str, i_understand: bool = False) -> str:
    """A bare server URL (``--server``, no kubeconfig): only loopback is accepted without override."""
    if not is_loopback(server) and not i_understand:
        raise InputError(f"refusing to send load to {redact_url(server)}: not on loopback, so it may not be a test "
                         f"cluster; pass {OVERRIDE_FLAG}")
    return redact_url(server)
