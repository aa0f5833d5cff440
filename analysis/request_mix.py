"""The request mix: ``apiserver_request_total`` per class (verb, group, resource, subresource, scope,
component) over a window, as the snapshot's optional ``request_mix`` key stores it (``docs/policy.md``,
"Impact"). Long-running requests (``WATCH``, ``CONNECT``) are counted when they *end*;
``apiserver_longrunning_requests`` read at both ends of the window gives how many *started*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from audit_tune.analysis.policy.catalog import UserKind
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.basics.jsondata import JsonMapping, JsonObject, JsonValue, as_list, as_object
from audit_tune.sim.policy.model import LEVELS

MIX_FORMAT = "audit-tune-request-mix/v1"


#: ``apiserver_request_total`` verb -> the audit (``RequestInfo``) verb(s) it may stand for.
METRIC_VERBS: dict[str, tuple[str, ...]] = {
    "GET": ("get",), "LIST": ("list",), "WATCH": ("watch",), "WATCHLIST": ("watch",), "POST": ("create",),
    "PUT": ("update",), "PATCH": ("patch",), "APPLY": ("patch",), "DELETE": ("delete",),
    "DELETECOLLECTION": ("deletecollection",),
    # exec/attach/portforward: POST (SPDY, "create") or GET (WebSocket, "get"); proxy: any method.
    "CONNECT": ("create", "get"),
}

#: Built-in cluster-scoped resources (their requests have no namespace even with scope "resource").
CLUSTER_SCOPED = frozenset("""
namespaces nodes persistentvolumes componentstatuses clusterroles clusterrolebindings customresourcedefinitions
apiservices storageclasses csidrivers csinodes volumeattachments volumeattributesclasses priorityclasses
runtimeclasses flowschemas prioritylevelconfigurations mutatingwebhookconfigurations
validatingwebhookconfigurations validatingadmissionpolicies validatingadmissionpolicybindings
mutatingadmissionpolicies mutatingadmissionpolicybindings certificatesigningrequests clustertrustbundles
ingressclasses ipaddresses servicecidrs deviceclasses resourceslices tokenreviews subjectaccessreviews
selfsubjectaccessreviews selfsubjectrulesreviews selfsubjectreviews storageversions storageversionmigrations
""".split())


# ------------------------------------------------------------------------------------------------
# The request mix
# ------------------------------------------------------------------------------------------------
class UserDoc(TypedDict):
    key: str
    user: str
    groups: list[str]


class MixEntryDoc(TypedDict):
    """:meth:`MixEntry.to_dict`: one class of the ``request_mix`` document."""

    verb: str
    group: str
    resource: str
    subresource: str
    scope: str
    component: str
    count: float
    starts: float | None
    user: NotRequired[UserDoc]
    namespace: NotRequired[str]
    name: NotRequired[str]


@dataclass(frozen=True)
class MixEntry:
    """One request class of ``apiserver_request_total`` and how many requests it had in the window.

    ``count`` = requests that *completed* (what the counter counts); ``starts`` = requests that
    started (long-running only; ``None`` = same as ``count``). ``user``, ``namespace`` and ``name``
    are unknown from the metrics (``None``); tests and callers who know them may set them.
    """

    verb: str
    resource: str = ""
    subresource: str = ""
    group: str = ""
    scope: str = ""
    component: str = ""
    count: float = 0.0
    starts: float | None = None
    user: UserKind | None = None
    namespace: str | None = None
    name: str | None = None

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)

    @property
    def path(self) -> str:
        """Non-resource path: the metric's ``subresource`` (``/healthz``, ``openapi/v3``)."""
        p = self.subresource or "/"
        return p if p.startswith("/") else "/" + p

    @property
    def label(self) -> str:
        if not self.is_resource_request:
            return f"{self.verb} {self.path}"
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {res}.{self.group}" if self.group else f"{self.verb} {res}"

    def audit_verbs(self) -> tuple[str, ...]:
        v = self.verb.upper()
        if v in METRIC_VERBS:
            if v == "CONNECT" and self.subresource == "proxy":
                return ("get", "create", "update", "patch", "delete")
            return METRIC_VERBS[v]
        return (self.verb.lower(),)  # already an audit verb

    def to_dict(self) -> MixEntryDoc:
        d: MixEntryDoc = {"verb": self.verb, "group": self.group, "resource": self.resource,
                             "subresource": self.subresource, "scope": self.scope, "component": self.component,
                             "count": self.count, "starts": self.starts}
        if self.user is not None:
            d["user"] = {"key": self.user.key, "user": self.user.user, "groups": list(self.user.groups)}
        if self.namespace is not None:
            d["namespace"] = self.namespace
        if self.name is not None:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: JsonValue, where: str) -> MixEntry:
        if not isinstance(d, dict):
            raise InputError(f"{where}: want an object with verb, resource, ..., count")
        verb = d.get("verb")
        if not isinstance(verb, str) or not verb:
            raise InputError(f"{where}.verb: want a verb such as GET or LIST")
        strs = {}
        for k in ("group", "resource", "subresource", "scope", "component"):
            v = d.get(k, "") or ""
            if not isinstance(v, str):
                raise InputError(f"{where}.{k}: want a string")
            strs[k] = v
        count = _num(d.get("count"), f"{where}.count")
        starts = d.get("starts")
        starts = None if starts is None else _num(starts, f"{where}.starts")
        user = None
        if d.get("user") is not None:
            u = d["user"]
            if not isinstance(u, dict) or not isinstance(u.get("user"), str):
                raise InputError(f"{where}.user: want {{key, user, groups}}")
            groups = u.get("groups") or []
            user = UserKind(str(u.get("key") or u["user"]), str(u["user"]),
                            tuple(str(g) for g in as_list(groups, f"{where}.user.groups")))
        ns, name = d.get("namespace"), d.get("name")
        return cls(verb=verb, count=count, starts=starts, user=user, namespace=None if ns is None else str(ns),
                   name=None if name is None else str(name), **strs)


@dataclass
class InstanceMix:
    """The request mix of one apiserver over ``seconds``; ``observed`` = audit counter deltas over the
    same interval (``{"events": n, "levels": {level: n}}``) when recorded with the mix."""

    entries: list[MixEntry]
    seconds: float
    observed: dict[str, Any] | None = None

    @property
    def requests(self) -> float:
        return sum(e.count for e in self.entries)


@dataclass
class RequestMix:
    instances: dict[str, InstanceMix]
    missing: list[JsonObject] = field(default_factory=list)

    @classmethod
    def from_snapshot(cls, snap: JsonMapping, where: str = "snapshot") -> RequestMix:
        """Read the ``request_mix`` key; :class:`NotEnoughData` (exit 4), per item, when it is absent."""
        rm = snap.get("request_mix")
        if rm is None:
            items = []
            for name, inst in sorted(as_object(snap.get("instances") or {}, f"{where}.instances").items()):
                verbs = as_object(inst or {}, f"{where}.instances.{name}").get("requests_by_verb")
                have = (f"it has requests_by_verb only ({', '.join(sorted(as_object(verbs, name)))}), which does not say which "
                        "resources" if verbs else "it has no apiserver_request_total data")
                items.append(f"instance {name}: no request mix ({have})")
            items = items or ["no instance at all"]
            raise NotEnoughData(f"{where}: no 'request_mix' (apiserver_request_total by verb, group, resource, "
                                f"subresource, scope): " + "; ".join(items) + ". Record one with 'tune policy impact "
                                "-p PROMETHEUS_URL --save-snapshot FILE' (or analysis.policy_impact.add_request_mix)")
        if not isinstance(rm, dict):
            raise InputError(f"{where}.request_mix: want an object (format {MIX_FORMAT})")
        if rm.get("format") != MIX_FORMAT:
            raise InputError(f"{where}.request_mix.format: {rm.get('format')!r} is not {MIX_FORMAT!r}")
        w = as_object(rm.get("window") or {}, f"{where}.request_mix.window")
        secs = _num(w.get("seconds"), f"{where}.request_mix.window.seconds")
        if secs <= 0:
            raise InputError(f"{where}.request_mix.window.seconds: must be > 0")
        insts: dict[str, InstanceMix] = {}
        raw = rm.get("instances")
        if not isinstance(raw, dict):
            raise InputError(f"{where}.request_mix.instances: want an object keyed by instance")
        for name, dv in raw.items():
            d = as_object(dv or {}, f"{where}.request_mix.instances.{name}")
            cl = d.get("classes")
            if not isinstance(cl, list):
                raise InputError(f"{where}.request_mix.instances.{name}.classes: want a list")
            isecs = d.get("seconds", secs)
            isecs = _num(isecs, f"{where}.request_mix.instances.{name}.seconds")
            if isecs <= 0:
                raise InputError(f"{where}.request_mix.instances.{name}.seconds: must be > 0")
            obs_doc = d.get("observed")
            obs: dict[str, Any] | None = None
            if obs_doc is not None:
                if not isinstance(obs_doc, dict):
                    raise InputError(f"{where}.request_mix.instances.{name}.observed: want {{events, levels}}")
                obs_levels = as_object(obs_doc.get("levels") or {}, f"{where}.request_mix.instances.{name}.observed.levels")
                obs = {"events": _num(obs_doc.get("events", 0.0), f"{where}.request_mix.instances.{name}.observed.events"),
                       "levels": {lv: _num(obs_levels.get(lv, 0.0),
                                           f"{where}.request_mix.instances.{name}.observed.levels.{lv}") for lv in LEVELS}}
            insts[str(name)] = InstanceMix([MixEntry.from_dict(c, f"{where}.request_mix.instances.{name}.classes[{i}]")
                                            for i, c in enumerate(cl)], isecs, obs)
        listed = rm.get("missing") or []
        missing = [m for m in (listed if isinstance(listed, list) else []) if isinstance(m, dict)]
        return cls(insts, missing)


def _num(v: JsonValue, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise InputError(f"{where}: want a finite number, got {v!r}")
    return float(v)
