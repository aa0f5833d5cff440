"""What an audit policy does to the audit load: events/s and bytes/s per apiserver, from the request mix.

The model (``docs/policy.md``, "Impact"):

* **Request mix.** ``apiserver_request_total`` counts completed requests per ``verb``, ``group``,
  ``resource``, ``subresource``, ``scope`` and ``component`` (:func:`add_request_mix` reads it from
  Prometheus into the snapshot's optional top-level ``request_mix`` key). Long-running requests
  (``WATCH``, ``CONNECT``) are counted when they *end*; ``apiserver_longrunning_requests`` (a gauge)
  read at both ends of the window gives how many *started*: ``starts = ends + gauge(end) - gauge(start)``.
* **Level.** Each class is turned into :class:`~analysis.policy.RequestAttributes` and evaluated with
  :func:`analysis.policy.decide`. The metrics carry no user, group, namespace or object name, so
  each class is evaluated for every user kind of :mod:`analysis.policy.catalog` and every namespace
  and object name the policy names (plus one it does not): the *best* and *worst* case bound the
  estimate; the *assumed* estimate uses one user kind (``assume_user``, default a service account)
  in a namespace and with a name no rule lists.
* **Stages.** :func:`analysis.policy.stages_emitted`: RequestReceived and ResponseStarted are
  emitted when a request starts, ResponseComplete when it ends; ``omitStages`` removes them.
* **Sizes.** Bytes per event by level and stage from :data:`sim.workload.DEFAULT_SIZES`, scaled by
  the ratio observed/predicted mean event size when the snapshot has the webhook's
  ``rest_client_request_size_bytes`` (for the policy in force).
* **Peak.** The average estimate times the observed burstiness: max ``event_rate_peak`` / mean
  ``event_rate`` of the snapshot (else the ``request_rate`` series' max/mean).

Requests the metrics do not show (``/version``, discovery ``/api``, ``/apis``, ``/metrics`` scrapes
other than the reading Prometheus' own, requests refused by authentication or authorization) are
not in the estimate.

Python API::

    mix = RequestMix.from_snapshot(snapshot_dict)          # NotEnoughData (exit 4) when absent
    est = estimate(policy, mix.instances["10.0.0.1:6443"])  # Estimate: per level/stage, ranges
    project_snapshot(snapshot_dict, new_policy, current_policy)  # for tune recommend --policy
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from audit_tune.analysis.policy.catalog import USER_KINDS, UserKind
from audit_tune.sim.policy.matcher import LONG_RUNNING_SUBRESOURCES, RequestAttributes, decide, stages_emitted
from audit_tune.sim.policy.model import LEVELS, STAGES, Policy
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.sim.workload import DEFAULT_SIZES

MIX_FORMAT = "audit-tune-request-mix/v1"
DEFAULT_ASSUME_USER = "serviceaccount"
OTHER = "audit-tune-unlisted"  # a namespace / object name that no rule lists
STAGE_INDEX = {s: i for i, s in enumerate(STAGES)}

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

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"verb": self.verb, "group": self.group, "resource": self.resource,
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
    def from_dict(cls, d: Any, where: str) -> "MixEntry":
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
            user = UserKind(str(u.get("key") or u["user"]), u["user"], tuple(str(g) for g in u.get("groups") or ()))
        return cls(verb=verb, count=count, starts=starts, user=user,
                   namespace=d.get("namespace"), name=d.get("name"), **strs)


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
    missing: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], where: str = "snapshot") -> "RequestMix":
        """Read the ``request_mix`` key; :class:`NotEnoughData` (exit 4), per item, when it is absent."""
        rm = snap.get("request_mix")
        if rm is None:
            items = []
            for name, inst in sorted((snap.get("instances") or {}).items()):
                verbs = (inst or {}).get("requests_by_verb")
                have = (f"it has requests_by_verb only ({', '.join(sorted(verbs))}), which does not say which "
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
        w = rm.get("window") or {}
        secs = _num(w.get("seconds"), f"{where}.request_mix.window.seconds")
        if secs <= 0:
            raise InputError(f"{where}.request_mix.window.seconds: must be > 0")
        insts = {}
        raw = rm.get("instances")
        if not isinstance(raw, dict):
            raise InputError(f"{where}.request_mix.instances: want an object keyed by instance")
        for name, d in raw.items():
            cl = (d or {}).get("classes")
            if not isinstance(cl, list):
                raise InputError(f"{where}.request_mix.instances.{name}.classes: want a list")
            isecs = d.get("seconds", secs)
            isecs = _num(isecs, f"{where}.request_mix.instances.{name}.seconds")
            if isecs <= 0:
                raise InputError(f"{where}.request_mix.instances.{name}.seconds: must be > 0")
            obs = d.get("observed")
            if obs is not None:
                if not isinstance(obs, dict):
                    raise InputError(f"{where}.request_mix.instances.{name}.observed: want {{events, levels}}")
                obs = {"events": _num(obs.get("events", 0.0), f"{where}.request_mix.instances.{name}.observed.events"),
                       "levels": {lv: _num((obs.get("levels") or {}).get(lv, 0.0),
                                           f"{where}.request_mix.instances.{name}.observed.levels.{lv}") for lv in LEVELS}}
            insts[str(name)] = InstanceMix([MixEntry.from_dict(c, f"{where}.request_mix.instances.{name}.classes[{i}]")
                                            for i, c in enumerate(cl)], isecs, obs)
        missing = [m for m in rm.get("missing") or [] if isinstance(m, dict)]
        return cls(insts, missing)


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise InputError(f"{where}: want a finite number, got {v!r}")
    return float(v)


# ------------------------------------------------------------------------------------------------
# Evaluation of one class
# ------------------------------------------------------------------------------------------------
def _policy_namespaces(policy: Policy) -> list[str]:
    out = {ns for r in policy.rules for ns in r.namespaces if ns}
    return sorted(out) + [OTHER]


def _policy_names(policy: Policy) -> list[str]:
    return sorted({n for r in policy.rules for gr in r.resources for n in gr.resource_names}) + [OTHER]


def candidate_attributes(entry: MixEntry, policy: Policy, users: Iterable[UserKind]) -> list[tuple[UserKind, RequestAttributes]]:
    """Every (user kind, request) the metric class may stand for under ``policy``."""
    out = []
    users = [entry.user] if entry.user is not None else list(users)
    for who in users:
        for verb in entry.audit_verbs():
            if not entry.is_resource_request:
                out.append((who, RequestAttributes(user=who.user, groups=who.groups, verb=verb, path=entry.path,
                                                   is_resource_request=False)))
                continue
            if entry.namespace is not None:
                namespaces = [entry.namespace]
            elif entry.scope == "cluster" or entry.resource in CLUSTER_SCOPED:
                namespaces = [""]
            else:
                namespaces = _policy_namespaces(policy)
            names = [entry.name] if entry.name is not None else (
                [""] if verb in ("list", "watch", "deletecollection") or (verb == "create" and not entry.subresource)
                else _policy_names(policy))
            for ns in namespaces:
                for nm in names:
                    out.append((who, RequestAttributes(
                        user=who.user, groups=who.groups, verb=verb, namespace=ns, resource=entry.resource,
                        subresource=entry.subresource, api_group=entry.group, name=nm, is_resource_request=True)))
    return out


def _assumed(entry: MixEntry, policy: Policy, assume: UserKind) -> RequestAttributes:
    who = entry.user or assume
    verb = entry.audit_verbs()[0]
    if not entry.is_resource_request:
        return RequestAttributes(user=who.user, groups=who.groups, verb=verb, path=entry.path, is_resource_request=False)
    if entry.namespace is not None:
        ns = entry.namespace
    elif entry.scope == "cluster" or entry.resource in CLUSTER_SCOPED:
        ns = ""
    else:
        ns = OTHER
    name = entry.name if entry.name is not None else (
        "" if verb in ("list", "watch", "deletecollection") or (verb == "create" and not entry.subresource) else OTHER)
    return RequestAttributes(user=who.user, groups=who.groups, verb=verb, namespace=ns, resource=entry.resource,
                             subresource=entry.subresource, api_group=entry.group, name=name, is_resource_request=True)


def _long_running(entry: MixEntry) -> bool:
    v = entry.verb.upper()
    return v in ("WATCH", "WATCHLIST", "PROXY") or entry.verb == "watch" or (
        entry.is_resource_request and entry.subresource in LONG_RUNNING_SUBRESOURCES) or (
        not entry.is_resource_request and entry.path.startswith("/debug/pprof/"))


@dataclass
class Outcome:
    """What one request class gives: requests per level, events per stage and bytes (window totals)."""

    levels: dict[str, float] = field(default_factory=lambda: {lv: 0.0 for lv in LEVELS})
    stages: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    by_level_stage: dict[tuple[str, str], float] = field(default_factory=dict)
    bytes: float = 0.0

    @property
    def events(self) -> float:
        return sum(self.stages.values())

    def add(self, other: "Outcome") -> None:
        for k, v in other.levels.items():
            self.levels[k] += v
        for k, v in other.stages.items():
            self.stages[k] += v
        for k, v in other.by_level_stage.items():
            self.by_level_stage[k] = self.by_level_stage.get(k, 0.0) + v
        self.bytes += other.bytes


def class_outcome(entry: MixEntry, level: str, omit: Iterable[str], sizes: Callable[[str, str], float]) -> Outcome:
    """Totals for ``entry`` at ``level``: RR/RS per start, RC per completion (``apiserver/pkg/endpoints/filters/audit.go``)."""
    lr = _long_running(entry)
    starts = entry.count if entry.starts is None else entry.starts
    o = Outcome()
    o.levels[level] += starts  # level_total is counted when the policy is evaluated, at the start
    for st in stages_emitted(level, frozenset(omit), lr):
        n = entry.count if st == "ResponseComplete" else starts
        o.stages[st] += n
        o.by_level_stage[(level, st)] = o.by_level_stage.get((level, st), 0.0) + n
        o.bytes += n * sizes(level, st)
    return o


def default_size(level: str, stage: str) -> float:
    return float(DEFAULT_SIZES.get(level, DEFAULT_SIZES["Metadata"])[STAGE_INDEX[stage]])


# ------------------------------------------------------------------------------------------------
# The estimate for one instance
# ------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """Window totals for one instance under one policy (divide by ``seconds`` for rates)."""

    policy: str
    seconds: float
    assumed: Outcome
    best_events: float
    worst_events: float
    best_bytes: float
    worst_bytes: float
    assume_user: str
    classes: list[dict[str, Any]]
    size_factor: float = 1.0

    def rate(self, x: float) -> float:
        return x / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self, peak_factor: float | None = None) -> dict[str, Any]:
        a = self.assumed
        d = {
            "policy": self.policy, "assume_user": self.assume_user, "window_seconds": self.seconds,
            "events_per_s": self.rate(a.events), "bytes_per_s": self.rate(a.bytes),
            "events_per_s_range": [self.rate(self.best_events), self.rate(self.worst_events)],
            "bytes_per_s_range": [self.rate(self.best_bytes), self.rate(self.worst_bytes)],
            "requests_per_s_by_level": {k: self.rate(v) for k, v in a.levels.items()},
            "events_per_s_by_stage": {k: self.rate(v) for k, v in a.stages.items() if k != "Panic"},
            "events_per_s_by_level": {lv: self.rate(sum(v for (l2, _), v in a.by_level_stage.items() if l2 == lv))
                                      for lv in LEVELS if lv != "None"},
            "mean_event_bytes": a.bytes / a.events if a.events > 0 else None,
            "size_factor": self.size_factor,
        }
        if peak_factor is not None:
            d["peak_factor"] = peak_factor
            d["events_per_s_peak"] = d["events_per_s"] * peak_factor
            d["bytes_per_s_peak"] = d["bytes_per_s"] * peak_factor
            d["events_per_s_peak_range"] = [x * peak_factor for x in d["events_per_s_range"]]
        return d


def user_kind(key: str) -> UserKind:
    for u in USER_KINDS:
        if u.key == key:
            return u
    raise InputError(f"--assume-user {key!r}: unknown user kind; use one of {', '.join(u.key for u in USER_KINDS)}")


def estimate(policy: Policy, mix: InstanceMix, assume_user: str | UserKind = DEFAULT_ASSUME_USER,
             users: tuple[UserKind, ...] = USER_KINDS, size_factor: float = 1.0,
             sizes: Callable[[str, str], float] = default_size) -> Estimate:
    """Evaluate every class of ``mix`` under ``policy``: the assumed estimate and the best/worst case."""
    assume = assume_user if isinstance(assume_user, UserKind) else user_kind(assume_user)

    def sz(level: str, stage: str) -> float:
        return sizes(level, stage) * size_factor

    total = Outcome()
    best_e = worst_e = best_b = worst_b = 0.0
    classes = []
    for e in mix.entries:
        if e.count <= 0 and not e.starts:
            continue
        attrs = _assumed(e, policy, assume)
        d = decide(policy, attrs)
        o = class_outcome(e, d.level, d.omit_stages, sz)
        total.add(o)
        outs = []
        for _, a in candidate_attributes(e, policy, users):
            dd = decide(policy, a)
            outs.append(class_outcome(e, dd.level, dd.omit_stages, sz))
        best_e += min(x.events for x in outs)
        worst_e += max(x.events for x in outs)
        best_b += min(x.bytes for x in outs)
        worst_b += max(x.bytes for x in outs)
        classes.append({"class": e.label, "scope": e.scope, "requests": e.count,
                        "rule_index": d.rule_index, "level": d.level,
                        "levels_possible": sorted({x for x in (max(oo.levels, key=lambda k: oo.levels[k]) for oo in outs)},
                                                  key=LEVELS.index),
                        "events": o.events, "events_range": [min(x.events for x in outs), max(x.events for x in outs)],
                        "bytes": o.bytes})
    classes.sort(key=lambda c: -c["events_range"][1])
    return Estimate(policy.source, mix.seconds, total, best_e, worst_e, best_b, worst_b, assume.key, classes, size_factor)


# ------------------------------------------------------------------------------------------------
# Observed values in a snapshot
# ------------------------------------------------------------------------------------------------
def _series_stats(s: Any) -> tuple[float, float] | None:
    v = (s or {}).get("v") if isinstance(s, dict) else None
    if not v:
        return None
    return sum(v) / len(v), max(v)


def peak_factor(inst: dict[str, Any]) -> tuple[float, str]:
    """Observed burstiness: max(event_rate_peak)/mean(event_rate), else request_rate max/mean, else 1."""
    ev = _series_stats(inst.get("event_rate"))
    pk = _series_stats(inst.get("event_rate_peak"))
    if ev and pk and ev[0] > 0:
        return max(pk[1], ev[1]) / ev[0], f"max event_rate_peak / mean event_rate ({(inst.get('event_rate_peak') or {}).get('window', '')} window)"
    rq = _series_stats(inst.get("request_rate"))
    if rq and rq[0] > 0:
        return rq[1] / rq[0], "max / mean request_rate (no event_rate_peak)"
    return 1.0, "1 (no rate series)"


def observed(inst: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Observed audit rates of one snapshot instance (over the snapshot window)."""
    ev = float(inst.get("events_increase") or 0.0)
    lv = inst.get("level_increase") or {}
    out: dict[str, Any] = {"events_per_s": ev / seconds if seconds > 0 else None,
                           "requests_per_s_by_level": {k: float(lv.get(k) or 0.0) / seconds for k in LEVELS}}
    wh = inst.get("webhook") or {}
    ssum, scount = float(wh.get("size_sum") or 0.0), float(wh.get("size_count") or 0.0)
    err = inst.get("errors_increase") or {}
    sent = ev - float(err.get("buffered") or 0.0) - float(err.get("truncate") or 0.0)
    if ssum > 0 and scount > 0 and sent > 0:
        from audit_tune.analysis.calibrate import ENVELOPE_BYTES

        out["mean_event_bytes"] = max(ssum - ENVELOPE_BYTES * scount, 1.0) / sent
        out["mean_event_bytes_source"] = "rest_client_request_size_bytes (webhook POST bodies) / events sent"
    return out


def _snap_seconds(snap: dict[str, Any], im: InstanceMix) -> float:
    w = (snap.get("source") or {}).get("window") or {}
    try:
        return float(w["end"]) - float(w["start"])
    except (KeyError, TypeError, ValueError):
        return im.seconds


def _rel(est: float, obs: float | None) -> float | None:
    if obs is None or obs <= 0:
        return None
    return (est - obs) / obs


# ------------------------------------------------------------------------------------------------
# The whole report
# ------------------------------------------------------------------------------------------------
def impact_report(snap: dict[str, Any], policy: Policy, against: Policy | None = None,
                  assume_user: str = DEFAULT_ASSUME_USER, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per instance: the estimate for ``policy`` (and ``against``), ranges, peak, and the check of the
    policy in force (``against`` if given, else ``policy``) against the observed counters."""
    from audit_tune import __version__

    mix = RequestMix.from_snapshot(snap, (source or {}).get("snapshot", "snapshot"))
    window = ((snap.get("source") or {}).get("window") or {})
    out_inst: dict[str, Any] = {}
    notes = [
        "apiserver_request_total has no user, group, namespace or object name: each class is evaluated for every "
        f"user kind of 'tune policy explain' ({', '.join(u.key for u in USER_KINDS)}) and every namespace/name the "
        "policy lists; 'range' is the best..worst case, the estimate assumes " + assume_user + " in an unlisted namespace",
        "not in apiserver_request_total, so not estimated: /version, discovery (/api, /apis), other scrapers' "
        "/metrics (this Prometheus' own scrapes are counted from 'up'), requests refused by authentication or "
        "authorization",
    ]
    missing = [f"{m.get('instance')}: {m.get('item')}: {m.get('why')}" for m in mix.missing]
    for name in sorted(set(snap.get("instances") or {}) - set(mix.instances)):
        if not any(m.get("instance") == name for m in mix.missing):
            missing.append(f"{name}: in the snapshot but not in request_mix: no request mix for it")
    for name, im in sorted(mix.instances.items()):
        inst = (snap.get("instances") or {}).get(name)
        if inst is None:
            missing.append(f"{name}: in request_mix but not in the snapshot's instances: no observed audit data")
            inst = {}
        if im.requests <= 0:
            missing.append(f"{name}: apiserver_request_total did not increase in the window: no request mix")
            continue
        in_force = against or policy
        base = estimate(in_force, im, assume_user)
        obs = observed(inst, _snap_seconds(snap, im)) if inst else {}
        if im.observed is not None:
            obs = {**obs, "events_per_s": im.observed["events"] / im.seconds,
                   "requests_per_s_by_level": {k: v / im.seconds for k, v in im.observed["levels"].items()},
                   "source": "audit counters read with the request mix (same interval)"}
        factor = 1.0
        size_note = "sim.workload.DEFAULT_SIZES (no webhook size histogram)"
        if obs.get("mean_event_bytes") and base.assumed.events > 0:
            pred_mean = base.assumed.bytes / base.assumed.events
            factor = obs["mean_event_bytes"] / pred_mean
            size_note = (f"DEFAULT_SIZES x {factor:.3f} = observed mean event {obs['mean_event_bytes']:.0f} B "
                         f"(rest_client_request_size_bytes) / predicted {pred_mean:.0f} B for the policy in force")
            base = estimate(in_force, im, assume_user, size_factor=factor)
        pf, pf_src = peak_factor(inst)
        new = estimate(policy, im, assume_user, size_factor=factor) if against is not None else base
        entry: dict[str, Any] = {
            "requests_per_s": im.requests / im.seconds,
            "estimate": new.to_dict(pf),
            "peak_source": pf_src, "event_size_source": size_note,
            "classes": new.classes,
        }
        if against is not None:
            entry["against"] = base.to_dict(pf)
            b = base.assumed.events
            entry["change"] = {"events_ratio": new.assumed.events / b if b > 0 else None,
                               "bytes_ratio": new.assumed.bytes / base.assumed.bytes if base.assumed.bytes > 0 else None}
        if obs:
            est_in_force = base.to_dict()
            ev_obs = obs.get("events_per_s")
            check = {
                "policy": in_force.source,
                "observed_events_per_s": ev_obs,
                "estimated_events_per_s": est_in_force["events_per_s"],
                "error": _rel(est_in_force["events_per_s"], ev_obs),
                "observed_within_range": (None if ev_obs is None else
                                          est_in_force["events_per_s_range"][0] * 0.98 <= ev_obs
                                          <= est_in_force["events_per_s_range"][1] * 1.02),
                "estimated_range": est_in_force["events_per_s_range"],
                "levels": {lv: {"observed_requests_per_s": obs["requests_per_s_by_level"][lv],
                                "estimated_requests_per_s": est_in_force["requests_per_s_by_level"][lv],
                                "error": _rel(est_in_force["requests_per_s_by_level"][lv],
                                              obs["requests_per_s_by_level"][lv])} for lv in LEVELS},
            }
            if against is None:
                check["note"] = "assumes POLICY is the policy in force; give --against CURRENT_POLICY otherwise"
            entry["check"] = check
        out_inst[name] = entry
    if not out_inst:
        raise NotEnoughData("request_mix: no instance with requests in the window: " + "; ".join(missing))
    return {
        "tool": f"audit-tune {__version__}", "policy": policy.source,
        "against": against.source if against is not None else None,
        "source": source or {}, "window": window, "assume_user": assume_user,
        "instances": out_inst, "notes": notes, "missing": missing,
    }


# ------------------------------------------------------------------------------------------------
# For tune recommend --policy
# ------------------------------------------------------------------------------------------------
def project_snapshot(snapshot: Any, policy: Policy, current_policy: Policy | None = None,
                     assume_user: str = DEFAULT_ASSUME_USER) -> dict[str, Any]:
    """A copy of the snapshot as if ``policy`` were in force: event rates scaled per instance.

    The factor is ``estimate(policy) / estimate(current_policy)`` on the same request mix (model
    errors cancel), or, without ``current_policy``, ``estimate(policy) / observed events``. The
    ``event_rate`` and ``event_rate_peak`` series and ``events_increase`` are multiplied by it,
    ``level_increase`` becomes the predicted requests per level, and the webhook ``size_sum`` is scaled
    so that the per-event size follows the new levels. Observed drops (``errors_increase``) belong to
    the old load and are cleared. The result carries ``projection`` (per-instance factors and notes).
    """
    from audit_tune.analysis.calibrate import snapshot_dict

    snap = copy.deepcopy(snapshot_dict(snapshot))
    mix = RequestMix.from_snapshot(snap)
    proj: dict[str, Any] = {"policy": policy.source,
                            "current_policy": current_policy.source if current_policy else None, "instances": {}}
    for name, inst in snap["instances"].items():
        im = mix.instances.get(name)
        if im is None or im.requests <= 0:
            raise NotEnoughData(f"request_mix: no requests for instance {name}: cannot project the policy's load")
        new = estimate(policy, im, assume_user)
        if current_policy is not None:
            cur = estimate(current_policy, im, assume_user)
            cur_events, cur_bytes, how = cur.assumed.events, cur.assumed.bytes, "estimate(new) / estimate(current)"
        else:
            if im.observed is not None:
                cur_events = im.observed["events"]
            else:
                cur_events = float(inst.get("events_increase") or 0.0) * im.seconds / max(_snap_seconds(snap, im), 1e-9)
            cur_bytes = None
            how = "estimate(new) / observed events"
        if cur_events <= 0:
            raise NotEnoughData(f"instance {name}: no audit events under the current policy to scale from")
        r = new.assumed.events / cur_events
        per_event = 1.0
        if cur_bytes and new.assumed.events > 0:
            per_event = (new.assumed.bytes / new.assumed.events) / (cur_bytes / cur_events)
        for key in ("event_rate", "event_rate_peak"):
            s = inst.get(key)
            if isinstance(s, dict) and isinstance(s.get("v"), list):
                s["v"] = [x * r for x in s["v"]]
        inst["events_increase"] = float(inst.get("events_increase") or 0.0) * r
        to_window = _snap_seconds(snap, im) / im.seconds
        inst["level_increase"] = {k: v * to_window for k, v in new.assumed.levels.items()}
        wh = inst.get("webhook")
        if isinstance(wh, dict) and wh.get("size_sum"):
            wh["size_sum"] = float(wh["size_sum"]) * r * per_event
        inst["errors_increase"] = {k: 0.0 for k in (inst.get("errors_increase") or {"buffered": 0})}
        proj["instances"][name] = {"events_factor": r, "event_size_factor": per_event, "method": how}
    snap["projection"] = proj
    return snap


# ------------------------------------------------------------------------------------------------
# Reading the mix from Prometheus
# ------------------------------------------------------------------------------------------------
_LABELS = ("verb", "group", "resource", "subresource", "scope", "component")


def add_request_mix(snapshot: dict[str, Any], client: Any, *, end: float | None = None,
                    history: float | None = None, selector: str | None = None) -> dict[str, Any]:
    """Query ``apiserver_request_total`` (and ``apiserver_longrunning_requests``) over the snapshot's
    window and store it under ``snapshot["request_mix"]`` (format ``audit-tune-request-mix/v1``,
    ``docs/policy.md``). ``client`` is an :class:`analysis.prom.PromClient`. Returns the snapshot.

    Counts are ``value(end) - value(start)`` per series, a series absent at the start counting from 0
    (kube-apiserver creates a series at its first increment, so ``increase()`` would miss what a
    series counted before its first scrape); ``increase()`` is used for series that reset (restarts).
    The start is moved to the first scrape of the instance when the window begins earlier. The audit
    counters are read the same way into ``observed``, so the check compares like with like.
    """
    src = snapshot.get("source") or {}
    w = src.get("window") or {}
    end = float(end if end is not None else w.get("end"))
    history = float(history if history is not None else (w.get("end") - w.get("start")))
    start = end - history
    sel = selector if selector is not None else (src.get("selector") or "")
    cl = src.get("cluster_label")
    S = "{" + sel + "}" if sel else ""
    G = "instance" + (f", {cl}" if cl else "")
    by = f"{G}, {', '.join(_LABELS)}"
    names = set((snapshot.get("instances") or {}).keys())

    def key(lbl: dict[str, str]) -> str:
        inst = lbl.get("instance", "")
        if cl and f"{lbl.get(cl, '')}/{inst}" in names:
            return f"{lbl.get(cl, '')}/{inst}"
        return inst

    # Effective start per instance: the first point of its event_rate series (Prometheus may have
    # started scraping after the window began).
    eff: dict[str, float] = {}
    for n, inst in (snapshot.get("instances") or {}).items():
        t = ((inst or {}).get("event_rate") or {}).get("t") or []
        step = float(w.get("step") or 0.0)
        eff[n] = max(start, float(t[0]) - step) if t else start

    def values(promql: str, at: float, what: str, labels: tuple[str, ...]) -> dict[str, dict[tuple[str, ...], float]]:
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for lbl, v in client.query(promql, at, what):
            k = tuple(lbl.get(x, "") for x in labels)
            d = out.setdefault(key(lbl), {})
            d[k] = d.get(k, 0.0) + v
        return out

    def deltas(metric: str, labels: tuple[str, ...], what: str) -> tuple[dict[str, dict[tuple[str, ...], float]], float]:
        byl = f"{G}" + (f", {', '.join(labels)}" if labels else "")
        res: dict[str, dict[tuple[str, ...], float]] = {}
        starts_at = sorted(set(eff.values()) or {start})
        at_end = values(f"sum by ({byl}) ({metric}{S})", end, what, labels)
        resets = values(f"sum by ({byl}) (resets({metric}{S}[{int(math.ceil(history))}s]))", end, what, labels)
        incr = values(f"sum by ({byl}) (increase({metric}{S}[{int(math.ceil(history))}s]))", end, what, labels)
        at_start: dict[float, dict[str, dict[tuple[str, ...], float]]] = {
            t0: values(f"sum by ({byl}) ({metric}{S})", t0, what, labels) for t0 in starts_at}
        for inst, series in at_end.items():
            t0 = eff.get(inst, start)
            s0 = at_start.get(t0, {}).get(inst, {})
            for k, v in series.items():
                if resets.get(inst, {}).get(k, 0.0) > 0:
                    res.setdefault(inst, {})[k] = incr.get(inst, {}).get(k, 0.0)
                else:
                    res.setdefault(inst, {})[k] = max(0.0, v - s0.get(k, 0.0))
        return res, len(starts_at)

    totals, _ = deltas("apiserver_request_total", _LABELS, "the request mix query (apiserver_request_total)")
    ev, _ = deltas("apiserver_audit_event_total", (), "the audit event query")
    lv, _ = deltas("apiserver_audit_level_total", ("level",), "the audit level query")
    # This Prometheus' own scrapes of /metrics are audited too but are not in apiserver_request_total.
    scrapes: dict[str, float] = {}
    for lbl, v in client.query(f"sum by ({G}) (count_over_time(up{S}[{int(math.ceil(history))}s]))", end,
                               "the scrape count query (up)"):
        scrapes[key(lbl)] = scrapes.get(key(lbl), 0.0) + v
    q_lr = f"sum by ({by}) (apiserver_longrunning_requests{S})"
    lr_end = values(q_lr, end, "the long-running requests query (apiserver_longrunning_requests)", _LABELS)
    lr_start_by_t = {t0: values(q_lr, t0, "the long-running requests query", _LABELS) for t0 in sorted(set(eff.values()) or {start})}
    missing = []
    instances: dict[str, Any] = {}
    for inst in sorted(set(totals) | names):
        t = totals.get(inst)
        if not t:
            missing.append({"instance": inst, "item": "apiserver_request_total",
                            "why": f"no apiserver_request_total for instance {inst} in the window: request mix unknown",
                            "fix": "scrape kube-apiserver's /metrics in full (metric_relabel_configs may drop it)"})
            continue
        t0 = eff.get(inst, start)
        lr_start = lr_start_by_t.get(t0, {})
        have_lr = inst in lr_end and inst in lr_start
        if not have_lr:
            missing.append({"instance": inst, "item": "apiserver_longrunning_requests",
                            "why": f"no apiserver_longrunning_requests at both ends of the window for instance {inst}: "
                                   "long-running requests that started are taken as those that ended",
                            "fix": "keep apiserver_longrunning_requests in the scrape"})
        classes = []
        for ck, v in sorted(t.items()):
            d = dict(zip(_LABELS, ck))
            starts = None
            if have_lr and d["verb"].upper() in ("WATCH", "CONNECT", "WATCHLIST"):
                starts = max(0.0, v + lr_end[inst].get(ck, 0.0) - lr_start[inst].get(ck, 0.0))
            if v > 0 or starts:
                classes.append({**d, "count": round(v, 6), "starts": None if starts is None else round(starts, 6)})
        if scrapes.get(inst):
            span = (end - t0) / history if history > 0 else 1.0
            classes.append({"verb": "GET", "group": "", "resource": "", "subresource": "/metrics", "scope": "",
                            "component": "", "count": round(scrapes[inst] * min(span, 1.0), 6), "starts": None,
                            "origin": "this Prometheus' scrapes (count_over_time(up)); not in apiserver_request_total"})
        entry: dict[str, Any] = {"seconds": end - t0, "classes": classes}
        if inst in ev:
            entry["observed"] = {"events": ev[inst].get((), 0.0),
                                 "levels": {lvl: lv.get(inst, {}).get((lvl,), 0.0) for lvl in LEVELS}}
        instances[inst] = entry
    snapshot["request_mix"] = {"format": MIX_FORMAT,
                               "window": {"start": start, "end": end, "seconds": history},
                               "query": f"sum by ({by}) (apiserver_request_total{S}) at the end minus at the start",
                               "instances": instances, "missing": missing}
    return snapshot


def mix_from_metrics(before: Any, after: Any, seconds: float) -> InstanceMix:
    """The request mix between two scrapes of one apiserver's ``/metrics`` (:mod:`loadgen.metrics_text`)."""
    def collect(m: Any, name: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for s in m.select(name):
            k = tuple(s.label(x) or "" for x in _LABELS)
            out[k] = out.get(k, 0.0) + float(s.value)
        return out

    t0, t1 = collect(before, "apiserver_request_total"), collect(after, "apiserver_request_total")
    g0, g1 = collect(before, "apiserver_longrunning_requests"), collect(after, "apiserver_longrunning_requests")
    entries = []
    for k in sorted(set(t1) | set(g1) | set(g0)):
        n = t1.get(k, 0.0) - t0.get(k, 0.0)
        d = dict(zip(_LABELS, k))
        starts = None
        if d["verb"].upper() in ("WATCH", "CONNECT", "WATCHLIST"):
            starts = n + g1.get(k, 0.0) - g0.get(k, 0.0)
        if n > 0 or (starts or 0) > 0:
            entries.append(MixEntry(count=n, starts=starts, **d))
    return InstanceMix(entries, seconds)




def project_for_recommend(snap: dict[str, Any], policy_path: str, *, snapshot_path: str | None = None,
                          prom: Any = None, current_policy_path: str | None = None,
                          log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """``tune recommend --policy``: attach the request mix (from the snapshot file's raw JSON, which
    ``Snapshot.load`` drops, or from Prometheus), then :func:`project_snapshot`."""
    import json
    from pathlib import Path

    from audit_tune.analysis.policy import load_policy

    new = load_policy(policy_path)
    cur = load_policy(current_policy_path) if current_policy_path else None
    for p in (new, cur):
        for w in (p.warnings if p else ()):
            log(f"warning: {w}")
    if "request_mix" not in snap:
        if snapshot_path:
            raw = json.loads(Path(snapshot_path).read_text())
            if "request_mix" in raw:
                snap = {**snap, "request_mix": raw["request_mix"]}
        elif prom is not None and getattr(prom, "url", None):
            from audit_tune.analysis.prom import PromClient

            snap = add_request_mix(copy.deepcopy(snap), PromClient(prom))
    out = project_snapshot(snap, new, cur)
    for name, p in out["projection"]["instances"].items():
        log(f"--policy {policy_path}: instance {name}: audit events x{p['events_factor']:.3f} "
            f"({p['method']}), event size x{p['event_size_factor']:.3f}")
    return out
