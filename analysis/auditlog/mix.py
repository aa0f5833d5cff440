"""The request mix seen in the log: requests by verb, resource, namespace and user.

Every event adds one to its key ``(verb, objectRef, user, path, level, stage)`` (``path`` only for
non-resource requests); one ``Counter`` update per batch. From those counts:

* events per (level, stage);
* requests per class, counted once: a request's ``ResponseComplete`` (or ``Panic``) event ends it,
  its ``RequestReceived`` (or, for requests refused by authentication, its only
  ``ResponseStarted``) starts it (``apiserver/pkg/endpoints/filters/audit.go``); per class the
  larger of the two counts is taken, so ``omitStages`` of either kind hides no request;
* ``audit-tune-request-mix/v1`` entries for ``tune policy impact`` and ``tune recommend --policy``
  (``analysis.policy_impact``), with the exact user and namespace the metrics cannot give. The
  scope follows the verb (get, update, patch, delete name one object; list, watch, create do not).

Distinct keys are capped at ``MAX_KEYS``; the least common are folded into ``(other)`` keys (one per
level and stage, so event counts stay exact) and counted in ``folded``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from audit_tune.analysis.auditlog.decode import ObjectRef
from audit_tune.basics.jsondata import JsonObject

MixKey = tuple[str, ObjectRef | None, str, str, str, str]  # verb, objectRef, user, path, level, stage
MAX_KEYS = 50_000
START_STAGES = frozenset({"RequestReceived", "ResponseStarted"})
END_STAGES = frozenset({"ResponseComplete", "Panic"})
NAMED_VERBS = frozenset({"get", "update", "patch", "delete"})
OTHER = "(other)"


@dataclass
class MixStats:
    raw: Counter[MixKey] = field(default_factory=Counter)  # events per key
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # username -> groups (first seen)
    folded: int = 0

    def _fold(self) -> None:
        if len(self.raw) <= MAX_KEYS:
            return
        keep = dict(self.raw.most_common(MAX_KEYS // 2))
        other: Counter[MixKey] = Counter()
        for k, n in self.raw.items():
            if k not in keep:
                other[(OTHER, None, "", "", k[4], k[5])] += n
                self.folded += n
        self.raw = Counter(keep)
        self.raw.update(other)

    def update_counts(self, counts: Counter[MixKey]) -> None:
        self.raw.update(counts)
        if len(self.raw) > 2 * MAX_KEYS:
            self._fold()

    def merge(self, o: MixStats) -> None:
        self.raw.update(o.raw)
        for k, v in o.groups.items():
            self.groups.setdefault(k, v)
        self.folded += o.folded
        self._fold()

    @property
    def levels(self) -> Counter:
        """Events per (level, stage)."""
        out: Counter = Counter()
        for k, n in self.raw.items():
            out[(k[4], k[5])] += n
        return out

    def _requests(self) -> Counter:
        starts: Counter = Counter()
        ends: Counter = Counter()
        for k, n in self.raw.items():
            (ends if k[5] in END_STAGES else starts)[k[:4] + (k[4],)] += n
        out: Counter = Counter()
        for k in set(starts) | set(ends):
            out[k] = max(starts.get(k, 0), ends.get(k, 0))
        return out

    def requests_by_verb(self) -> dict[str, float]:
        out: Counter = Counter()
        for k, n in self._requests().items():
            out[k[0]] += n
        return {k: float(v) for k, v in sorted(out.items())}

    def level_requests(self) -> dict[str, float]:
        """Requests per audit level."""
        out: Counter = Counter()
        for k, n in self._requests().items():
            out[k[4]] += n
        return {k: float(v) for k, v in out.items()}

    def entries(self) -> list[JsonObject]:
        """``audit-tune-request-mix/v1`` classes (``analysis.policy_impact.MixEntry``)."""
        per: Counter = Counter()
        for k, n in self._requests().items():
            per[k[:4]] += n
        out = []
        for (verb, ref, user, path), n in sorted(per.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            res = ref.resource if ref is not None else ""
            ns = ref.namespace if ref is not None else ""
            scope = ("resource" if verb in NAMED_VERBS else "namespace" if ns else "cluster") if res else ""
            d: dict[str, Any] = {"verb": verb, "group": ref.apiGroup if ref is not None else "", "resource": res,
                                 "subresource": (ref.subresource if res else path) if ref is not None else path,
                                 "scope": scope, "component": "apiserver" if res else "", "count": float(n),
                                 "starts": None}
            if user:
                d["user"] = {"key": user, "user": user, "groups": list(self.groups.get(user, ()))}
            if ns:
                d["namespace"] = ns
            out.append(d)
        return out
