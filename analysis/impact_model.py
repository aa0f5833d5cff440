"""The audit load one request class makes under a policy (``docs/policy.md``, "Impact").

Each class of the request mix is turned into :class:`~sim.policy.matcher.RequestAttributes` and
evaluated with :func:`sim.policy.matcher.decide`. The metrics carry no user, group, namespace or
object name, so each class is evaluated for every user kind of :mod:`analysis.policy.catalog` and
every namespace and object name the policy names (plus one it does not): the best and worst case
bound the estimate; the assumed estimate uses one user kind in a namespace and with a name no rule
lists. Stages: RequestReceived and ResponseStarted are emitted when a request starts,
ResponseComplete when it ends (``apiserver/pkg/endpoints/filters/audit.go``); sizes by level and
stage from :data:`sim.workload.DEFAULT_SIZES`, times a size factor.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from audit_tune.analysis.impact_result import ClassRow, Peak, RateEstimate
from audit_tune.analysis.policy.catalog import USER_KINDS, UserKind
from audit_tune.analysis.request_mix import CLUSTER_SCOPED, InstanceMix, MixEntry
from audit_tune.basics.errors import InputError
from audit_tune.sim.policy.matcher import LONG_RUNNING_SUBRESOURCES, RequestAttributes, decide, stages_emitted
from audit_tune.sim.policy.model import LEVELS, STAGES, Policy
from audit_tune.sim.workload import DEFAULT_SIZES

DEFAULT_ASSUME_USER = "serviceaccount"
OTHER = "audit-tune-unlisted"  # a namespace / object name that no rule lists
STAGE_INDEX = {s: i for i, s in enumerate(STAGES)}


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


def assumed_attributes(entry: MixEntry, policy: Policy, assume: UserKind) -> RequestAttributes:
    """The request the point estimate assumes for ``entry``: its recorded user, else ``assume``, in a
    namespace and with an object name no rule of ``policy`` lists."""
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

    def add(self, other: Outcome) -> None:
        for k, v in other.levels.items():
            self.levels[k] += v
        for k, v in other.stages.items():
            self.stages[k] += v
        for ls, v in other.by_level_stage.items():
            self.by_level_stage[ls] = self.by_level_stage.get(ls, 0.0) + v
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
    classes: list[ClassRow]
    size_factor: float = 1.0

    def rate(self, x: float) -> float:
        return x / self.seconds if self.seconds > 0 else 0.0

    def rates(self, peak_factor: float | None = None) -> RateEstimate:
        """The totals as rates; with ``peak_factor``, also at the observed burstiness."""
        a = self.assumed
        events, byts = self.rate(a.events), self.rate(a.bytes)
        events_range = [self.rate(self.best_events), self.rate(self.worst_events)]
        peak = None if peak_factor is None else Peak(peak_factor, events * peak_factor, byts * peak_factor,
                                                     [x * peak_factor for x in events_range])
        return RateEstimate(
            self.policy, self.assume_user, self.seconds, events, byts, events_range,
            [self.rate(self.best_bytes), self.rate(self.worst_bytes)],
            {k: self.rate(v) for k, v in a.levels.items()},
            {k: self.rate(v) for k, v in a.stages.items() if k != "Panic"},
            {lv: self.rate(sum(v for (l2, _), v in a.by_level_stage.items() if l2 == lv)) for lv in LEVELS if lv != "None"},
            a.bytes / a.events if a.events > 0 else None, self.size_factor, peak)

    def to_dict(self, peak_factor: float | None = None) -> dict[str, object]:
        return self.rates(peak_factor).to_dict()


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
    classes: list[ClassRow] = []
    for e in mix.entries:
        if e.count <= 0 and not e.starts:
            continue
        attrs = assumed_attributes(e, policy, assume)
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
        possible = sorted({max(oo.levels, key=lambda k: oo.levels[k]) for oo in outs}, key=LEVELS.index)
        classes.append(ClassRow(e.label, e.scope, e.count, d.rule_index, d.level, possible, o.events,
                                [min(x.events for x in outs), max(x.events for x in outs)], o.bytes))
    classes.sort(key=lambda c: -c.events_range[1])
    return Estimate(policy.source, mix.seconds, total, best_e, worst_e, best_b, worst_b, assume.key, classes, size_factor)
