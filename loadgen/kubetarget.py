"""Which kube-apiserver the load test talks to, how it authenticates, and whether it may.

A :class:`Target` comes from a kubeconfig (current or named context; client cert/key or bearer
token; ``certificate-authority`` or ``-data``; ``*-data`` fields are loaded without leaving
files behind) or from explicit ``--server --client-cert --client-key --ca-file``.

Safety (:func:`check_safe`, the rule of :mod:`loadgen.guard`): a load test creates and deletes
thousands of objects, so it only runs without asking against a *test* cluster: one audit-tune's
``local``/``kind`` provider created, a loopback server with a ``kind-*`` or ``audit-tune-*``
context, or a bare ``--server`` on loopback. Anything else needs
``--i-understand-this-is-not-a-test-cluster``.
"""
from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from audit_tune.basics import files
from audit_tune.basics.errors import InputError
from audit_tune.basics.yamlsafe import YamlValue
from audit_tune.loadgen import guard
from audit_tune.loadgen import kubeconfig as kc

OVERRIDE_FLAG = "--i-understand-this-is-not-a-test-cluster"


@dataclass
class Target:
    """A kube-apiserver endpoint plus credentials. ``token`` is never printed (see :meth:`describe`)."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    client_cert: str | None = None
    client_key: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    insecure: bool = False
    context: str | None = None
    cluster: str | None = None
    source: str = "flags"
    kubeconfig: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    @property
    def hostport(self) -> str:
        return urlsplit(self.server).netloc

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext | bool:
        """An SSL context for aiohttp (``True`` = default verification for plain http servers)."""
        if not self.server.startswith("https://"):
            return True
        ctx = ssl.create_default_context()
        try:
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            if self.ca_data:
                ctx.load_verify_locations(cadata=self.ca_data.decode())
            if self.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.client_cert:
                ctx.load_cert_chain(self.client_cert, self.client_key)
            elif self.cert_data:
                _load_chain_from_data(ctx, self.cert_data, self.key_data or b"")
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"{self.source}: cannot load TLS material ({getattr(e, 'strerror', None) or e})") from None
        return ctx

    def describe(self) -> dict[str, str | bool | None]:
        auth = "client-cert" if (self.client_cert or self.cert_data) else ("token" if self.token else "none")
        return {"server": self.server, "source": self.source, "context": self.context, "cluster": self.cluster,
                "auth": auth, "ca": self.ca_file or ("<inline>" if self.ca_data else None),
                "insecure_skip_tls_verify": self.insecure}


def _load_chain_from_data(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``ssl`` only loads chains from files: write 0600 temp files, load, delete at once."""
    with tempfile.TemporaryDirectory(prefix="audit-tune-") as d:
        c, k = Path(d) / "c.pem", Path(d) / "k.pem"
        for p, data in ((c, cert), (k, key)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(str(c), str(k))


def _b64(value: YamlValue, where: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise InputError(f"{where}: not base64") from None


def from_kubeconfig(path: str | os.PathLike | None = None, context: str | None = None) -> Target:
    """Load ``path`` (default ``$KUBECONFIG``'s first entry, else ``~/.kube/config``) through the
    shared reader (:mod:`audit_tune.loadgen.kubeconfig`), the one the guard uses."""
    r = kc.resolve(path, context)
    p, cl, user = r.path, r.cluster, r.user
    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise InputError(f"--kubeconfig {p}: user {r.user_name!r} token must be a string")
    if not token and user.get("tokenFile"):
        token = files.read_text(r.file(user["tokenFile"]) or "", f"--kubeconfig {p}: user {r.user_name!r} tokenFile",
                                "a bearer token", files.SECRET_BYTES).strip()
    if user.get("exec") or user.get("auth-provider"):
        if not (token or user.get("client-certificate") or user.get("client-certificate-data")):
            raise InputError(f"--kubeconfig {p}: user {r.user_name!r} uses exec/auth-provider, which the load "
                             "generator does not run; use a client-cert or token user")
    return Target(
        server=r.server.rstrip("/"),
        ca_file=r.file(cl.get("certificate-authority")),
        ca_data=_b64(cl.get("certificate-authority-data"), f"{p} certificate-authority-data"),
        client_cert=r.file(user.get("client-certificate")),
        client_key=r.file(user.get("client-key")),
        cert_data=_b64(user.get("client-certificate-data"), f"{p} client-certificate-data"),
        key_data=_b64(user.get("client-key-data"), f"{p} client-key-data"),
        token=token, insecure=bool(cl.get("insecure-skip-tls-verify")),
        context=r.context, cluster=r.cluster_name, source=f"--kubeconfig {p}", kubeconfig=str(p),
    )


def from_flags(server: str, client_cert: str | None = None, client_key: str | None = None,
               ca_file: str | None = None, token: str | None = None, insecure: bool = False) -> Target:
    if not server.startswith(("https://", "http://")):
        raise InputError(f"--server {server}: must start with https:// (or http://)")
    try:
        u = urlsplit(server)
        _ = u.port  # raises on a bad port
    except ValueError:
        raise InputError(f"--server {server}: not a URL (bad host or port); IPv6 as https://[::1]:6443") from None
    if not u.hostname:
        raise InputError(f"--server {server}: no host")
    if bool(client_cert) != bool(client_key):
        raise InputError("--client-cert and --client-key go together")
    return Target(server=server.rstrip("/"), ca_file=ca_file, client_cert=client_cert, client_key=client_key,
                  token=token, insecure=insecure, source="--server")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_safe(target: Target, override: bool) -> str:
    """Apply the project's target-safety rule (:mod:`loadgen.guard`); returns ``local``, ``kind`` or
    ``override`` (a non-test cluster the user vouched for); raises InputError otherwise.

    From a kubeconfig: a cluster audit-tune created, or a loopback server with a ``kind-*`` /
    ``audit-tune-*`` context. From ``--server``: a loopback server.
    """
    if target.kubeconfig:
        kind = guard.check_target(target.kubeconfig, target.context, override).kind
    else:
        guard.check_server(target.server, override)
        kind = "local" if guard.is_loopback(target.server) else "remote"
    return "override" if kind == "remote" else kind
