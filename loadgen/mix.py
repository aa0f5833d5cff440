"""The request mix: which verb on which resource each scheduled request is, and the objects it sends.

``--mix create=1,get=4,list=1,update=1,patch=1,delete=1,watch=0`` gives relative weights over
:data:`VERBS`; ``--resources configmaps=3,secrets=1`` over :data:`RESOURCES`. Each request's verb,
resource and namespace are drawn (seeded) when it is scheduled, so the mix does not depend on
timing. Objects are ConfigMaps or Secrets labelled ``audit-tune.io/run=<run id>`` with one data
key padded so the JSON body is about ``--object-size`` bytes.

Audit events per request (spec §7): every verb gives RequestReceived + ResponseComplete, a watch
(long-running) also ResponseStarted, unless the policy omits stages or says level None.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from audit_tune.basics.errors import InputError

VERBS = ("create", "get", "list", "update", "patch", "delete", "watch")
RESOURCES = ("configmaps", "secrets")
RUN_LABEL = "audit-tune.io/run"
DEFAULT_MIX = "create=1,get=4,list=1,update=1,patch=1,delete=1"


def parse_weights(text: str, allowed: tuple[str, ...], what: str) -> np.ndarray:
    """``a=1,b=2`` (or ``a,b`` for equal weights) -> probability vector over ``allowed``."""
    w = np.zeros(len(allowed))
    for item in filter(None, (x.strip() for x in str(text).split(","))):
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if name not in allowed:
            raise InputError(f"{what} {text!r}: unknown {name!r}; use {', '.join(allowed)}")
        try:
            v = float(val) if eq else 1.0
        except ValueError:
            raise InputError(f"{what} {text!r}: weight {val!r} is not a number") from None
        if v < 0:
            raise InputError(f"{what} {text!r}: weight of {name} must be >= 0")
        w[allowed.index(name)] = v
    if w.sum() <= 0:
        raise InputError(f"{what} {text!r}: needs at least one positive weight")
    return w / w.sum()


@dataclass(frozen=True)
class Mix:
    verbs: tuple[float, ...]
    resources: tuple[float, ...]
    namespaces: int = 1

    @classmethod
    def parse(cls, mix: str = DEFAULT_MIX, resources: str = "configmaps,secrets", namespaces: int = 1) -> Mix:
        if namespaces < 1:
            raise InputError(f"--namespaces {namespaces}: must be >= 1")
        return cls(tuple(parse_weights(mix, VERBS, "--mix")), tuple(parse_weights(resources, RESOURCES, "--resources")),
                   namespaces)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verb, resource and namespace indices for ``n`` requests."""
        return (rng.choice(len(VERBS), size=n, p=self.verbs).astype(np.int8),
                rng.choice(len(RESOURCES), size=n, p=self.resources).astype(np.int8),
                rng.integers(0, self.namespaces, size=n).astype(np.int16))

    def to_dict(self) -> dict:
        return {"verbs": {v: round(p, 6) for v, p in zip(VERBS, self.verbs) if p},
                "resources": {r: round(p, 6) for r, p in zip(RESOURCES, self.resources) if p},
                "namespaces": self.namespaces}


def make_object(resource: str, name: str, namespace: str, run_id: str, size: int, gen: int = 0) -> bytes:
    """A ConfigMap or Secret body of about ``size`` bytes of JSON."""
    meta = {"name": name, "namespace": namespace, "labels": {RUN_LABEL: run_id}}
    kind = "ConfigMap" if resource == "configmaps" else "Secret"
    doc: dict = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    overhead = len(json.dumps(doc)) + 30
    pad = max(0, size - overhead)
    if resource == "configmaps":
        doc["data"] = {"payload": _pad(pad, gen)}
    else:
        raw = _pad(pad * 3 // 4, gen).encode()
        doc["data"] = {"payload": base64.b64encode(raw).decode()}
    return json.dumps(doc, separators=(",", ":")).encode()


def make_patch(gen: int) -> bytes:
    return json.dumps({"metadata": {"annotations": {"audit-tune.io/gen": str(gen)}}}).encode()


def _pad(n: int, gen: int) -> str:
    if n <= 0:
        return ""
    unit = f"{gen:x}-audit-tune-"
    return (unit * (n // len(unit) + 1))[:n]


def object_template(resource: str, namespace: str, run_id: str, size: int) -> tuple[bytes, bytes, bytes]:
    """The body of :func:`make_object` pre-encoded around its name and a generation annotation:
    ``a + name + b + gen + c`` is a whole object of about ``size`` bytes (no JSON encoding per request)."""
    meta = {"name": "@@NAME@@", "namespace": namespace, "labels": {RUN_LABEL: run_id},
            "annotations": {"audit-tune.io/gen": "@@GEN@@"}}
    kind = "ConfigMap" if resource == "configmaps" else "Secret"
    doc: dict = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    pad = max(0, size - len(json.dumps(doc)) - 30)
    if resource == "configmaps":
        doc["data"] = {"payload": _pad(pad, 0)}
    else:
        doc["data"] = {"payload": base64.b64encode(_pad(pad * 3 // 4, 0).encode()).decode()}
    text = json.dumps(doc, separators=(",", ":"))
    a, rest = text.split("@@NAME@@")
    b, c = rest.split("@@GEN@@")
    return a.encode(), b.encode(), c.encode()
