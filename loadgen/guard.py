"""Target safety: only send load to a cluster that is known to be a throw-away test cluster.

Users fear "a load test that hits production by mistake" (spec users-and-conventions). A target is
accepted when it is one of:

* ``local``: a cluster audit-tune's ``local`` provider created (its kubeconfig lives in a state
  dir with a ``state.json`` saying ``provider: local``), or any kubeconfig whose server is on
  loopback and whose context is ``audit-tune-*``;
* ``kind``: created by audit-tune's ``kind`` provider, or a ``kind-*`` context whose server is on
  loopback (what ``kind`` writes: ``https://127.0.0.1:<port>``).

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

import yaml

from audit_tune.basics.errors import InputError

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
    except ValueError:
        return "<unparsable url>"
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


def redact(text: str) -> str:
    """Mask ``key: value`` / ``key=value`` pairs whose key looks secret, and URL user-info."""
    text = re.sub(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+", r"\1 ***", text)
    text = re.sub(rf"(?i)([\w-]*{_SECRET_KEYS.pattern}[\w-]*)(\s*[:=]\s*)([^\s,;]+)", r"\1\2***", text)
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def is_loopback(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _created_by_us(kubeconfig: Path) -> str | None:
    """Provider name if ``kubeconfig`` sits next to an audit-tune ``state.json``."""
    st = kubeconfig.parent / "state.json"
    try:
        data = json.loads(st.read_text())
    except (OSError, ValueError):
        return None
    if Path(data.get("kubeconfig", "")).resolve() == kubeconfig.resolve():
        return data.get("provider")
    return None


def classify(kubeconfig: str | os.PathLike, context: str | None = None) -> Target:
    """Classify the cluster a kubeconfig (and optional context) points at."""
    path = Path(kubeconfig).expanduser()
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise InputError(f"--kubeconfig {path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise InputError(f"--kubeconfig {path}: not YAML ({type(e).__name__})") from None
    ctx_name = context or cfg.get("current-context") or ""
    ctxs = {c.get("name"): c.get("context", {}) for c in cfg.get("contexts") or []}
    if ctx_name not in ctxs:
        valid = ", ".join(sorted(n for n in ctxs if n)) or "none"
        raise InputError(f"--context {ctx_name!r}: not in {path} (contexts: {valid})")
    cl_name = ctxs[ctx_name].get("cluster")
    clusters = {c.get("name"): c.get("cluster", {}) for c in cfg.get("clusters") or []}
    server = redact_url((clusters.get(cl_name) or {}).get("server", ""))
    if not server:
        raise InputError(f"{path}: context {ctx_name!r} has no cluster server")
    return classify_server(server, ctx_name, kubeconfig=path)


def classify_server(server: str, context: str = "", kubeconfig: str | os.PathLike | None = None) -> Target:
    """Classify by server URL and context name (plus, if given, the kubeconfig's location)."""
    server = redact_url(server)
    provider = _created_by_us(Path(kubeconfig)) if kubeconfig else None
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
