"""Kubeconfig files: the one reader, and the writer of the one-cluster kubeconfigs the providers
generate (the client's, and the ``--audit-webhook-config-file`` that points kube-apiserver at a sink).

The reader: the guard, the load generator and cluster status all resolve a
context through here, so they can never disagree about which server a name means.

Mirrors client-go's ``tools/clientcmd`` loader for a single file:

* ``clusters``, ``contexts`` and ``users`` are lists of ``{name, <kind>}``; a name that appears
  twice in one list is refused, as client-go's v1 -> internal conversion does ("duplicate name
  ... in list"), instead of silently taking the first or the last entry;
* the context is ``--context`` or ``current-context``; its ``cluster`` and ``user`` must exist;
* relative file paths (``certificate-authority``, ``client-certificate``, ``client-key``,
  ``tokenFile``) resolve against the kubeconfig's folder (client-go's ``ResolvePaths``).

The file is read with the bounded YAML loader (:mod:`audit_tune.basics.yamlsafe`). Every error is
one :class:`InputError` line naming the kubeconfig; no credential is ever part of a message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml

from audit_tune.basics import yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.basics.yamlsafe import YamlKey, YamlValue

YamlMapping: TypeAlias = dict[YamlKey, YamlValue]

_KINDS = (("clusters", "cluster"), ("contexts", "context"), ("users", "user"))


@dataclass(frozen=True)
class Resolved:
    """One context resolved to its cluster and user (the user's fields may hold secrets)."""

    path: Path
    context: str
    cluster_name: str
    cluster: YamlMapping
    user_name: str
    user: YamlMapping = field(repr=False)

    @property
    def server(self) -> str:
        return str(self.cluster.get("server") or "")

    def file(self, value: YamlValue) -> str | None:
        """A path field resolved against the kubeconfig's folder, as client-go does."""
        if not value:
            return None
        q = Path(os.path.expanduser(str(value)))
        return str(q if q.is_absolute() else (self.path.parent / q))


@dataclass(frozen=True)
class Kubeconfig:
    path: Path
    current_context: str
    clusters: dict[str, YamlMapping]
    contexts: dict[str, YamlMapping]
    users: dict[str, YamlMapping] = field(repr=False)

    def resolve(self, context: str | None = None) -> Resolved:
        """The named (or current) context with its cluster and user; one-line errors otherwise."""
        name = context or self.current_context
        where = f"--kubeconfig {self.path}"
        if not name:
            raise InputError(f"{where}: no current-context; pass --context")
        if name not in self.contexts:
            valid = ", ".join(sorted(self.contexts)) or "none"
            raise InputError(f"--context {name!r}: no context named so in {self.path} (contexts: {valid})")
        ctx = self.contexts[name]
        cl_name, user_name = ctx.get("cluster"), ctx.get("user")
        if not isinstance(cl_name, str) or cl_name not in self.clusters:
            raise InputError(f"{where}: context {name!r} names no cluster of the file ({cl_name!r})")
        if user_name not in (None, "") and (not isinstance(user_name, str) or user_name not in self.users):
            raise InputError(f"{where}: context {name!r} names no user of the file ({user_name!r})")
        cluster = self.clusters[cl_name]
        server = cluster.get("server")
        if not isinstance(server, str) or not server:
            raise InputError(f"{where}: cluster {cl_name!r} has no server")
        user_key = user_name if isinstance(user_name, str) else ""
        return Resolved(self.path, name, cl_name, cluster, user_key, self.users.get(user_key, {}))


def default_path() -> Path:
    """``$KUBECONFIG``'s first entry, else ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    return Path(env.split(os.pathsep)[0] if env else os.path.expanduser("~/.kube/config"))


def parse(doc: YamlValue, path: Path) -> Kubeconfig:
    """Check the shape of a loaded kubeconfig and index it by name (duplicates refused)."""
    where = f"--kubeconfig {path}"
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError(f"{where}: not a kubeconfig (a YAML mapping with clusters, contexts, users)")
    tables: dict[str, dict[str, YamlMapping]] = {}
    for plural, singular in _KINDS:
        items = doc.get(plural) or []
        if not isinstance(items, list):
            raise InputError(f"{where}: {plural} must be a list")
        table: dict[str, YamlMapping] = {}
        for i, item in enumerate(items):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(name, str):
                raise InputError(f"{where}: {plural}[{i}] must be a mapping with a string name")
            body = item.get(singular) or {}
            if not isinstance(body, dict):
                raise InputError(f"{where}: {singular} {name!r} must be a mapping")
            if name in table:
                raise InputError(f"{where}: duplicate {singular} name {name!r} in {plural}; "
                                 "client-go refuses such a kubeconfig, so it is ambiguous: rename one")
            table[name] = body
        tables[plural] = table
    current = doc.get("current-context") or ""
    if not isinstance(current, str):
        raise InputError(f"{where}: current-context must be a string")
    return Kubeconfig(path, current, tables["clusters"], tables["contexts"], tables["users"])


def load(path: str | os.PathLike | None = None) -> Kubeconfig:
    """Read and check a kubeconfig (``None``: :func:`default_path`)."""
    p = Path(path).expanduser() if path is not None else default_path()
    return parse(yamlsafe.read(p, "--kubeconfig"), p)


def resolve(path: str | os.PathLike | None = None, context: str | None = None) -> Resolved:
    return load(path).resolve(context)


def server_of(path: str | os.PathLike, context: str | None = None) -> str | None:
    """The server of a kubeconfig's context, or None if the file cannot be read (for display)."""
    try:
        return resolve(path, context).server
    except InputError:
        return None


@dataclass(frozen=True)
class SinkAuth:
    """How kube-apiserver's audit webhook trusts and authenticates to an https sink: the CA of the
    sink's serving cert, a bearer token (only ever written into the 0600 webhook kubeconfig), or no
    verification at all (``insecure``)."""

    ca_file: str | os.PathLike[str] | None = None
    token: str | None = field(default=None, repr=False)
    insecure: bool = False


NO_SINK_AUTH = SinkAuth()  # a plain http sink, or an https one whose CA the system trusts


def write_kubeconfig(path: Path, *, server: str, context: str, ca_file: Path | None = None,
                     client_cert: Path | None = None, client_key: Path | None = None,
                     token: str | None = None, insecure: bool = False) -> Path:
    """Write a one-cluster kubeconfig (mode 0600: it may hold a token)."""
    cluster: dict[str, str | bool] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = str(ca_file)
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user: dict[str, str] = {}
    if client_cert:
        user["client-certificate"] = str(client_cert)
        user["client-key"] = str(client_key)
    if token:
        user["token"] = token
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path
