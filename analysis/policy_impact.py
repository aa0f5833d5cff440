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

Modules: :mod:`analysis.request_mix` (the mix), :mod:`analysis.mix_reading` (reading it),
:mod:`analysis.impact_model` (classes -> levels -> stages -> events), :mod:`analysis.impact_result`
(the typed result); this module builds the report and projects a snapshot for ``tune recommend --policy``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypedDict

from audit_tune import __version__
from audit_tune.analysis.calibrate import ENVELOPE_BYTES, snapshot_dict
from audit_tune.analysis.impact_model import (
    DEFAULT_ASSUME_USER,
    Estimate,
    Outcome,
    class_outcome,
    default_size,
    estimate,
    user_kind,
)
from audit_tune.analysis.impact_result import Change, Check, InstanceImpact, LevelCheck, PolicyImpact
from audit_tune.analysis.mix_reading import add_request_mix, mix_from_metrics
from audit_tune.analysis.policy import load_policy
from audit_tune.analysis.policy.catalog import USER_KINDS
from audit_tune.analysis.prom_client import PromClient
from audit_tune.analysis.prom_settings import PromSettings
from audit_tune.analysis.request_mix import InstanceMix, MixEntry, RequestMix
from audit_tune.analysis.snapshot import Snapshot
from audit_tune.basics import files, jsondata
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_float, as_list, as_object
from audit_tune.sim.policy.model import LEVELS, Policy

__all__ = ["DEFAULT_ASSUME_USER", "Estimate", "InstanceMix", "MixEntry", "Outcome", "PolicyImpact", "RequestMix",
           "add_request_mix", "class_outcome", "default_size", "estimate", "impact_report", "mix_from_metrics",
           "observed", "peak_factor", "project_for_recommend", "project_snapshot", "user_kind"]


class Observed(TypedDict, total=False):
    """What a snapshot instance shows of the audit load (:func:`observed`), or the audit counters read
    with the request mix (``source``)."""

    events_per_s: float | None
    requests_per_s_by_level: dict[str, float]
    mean_event_bytes: float
    mean_event_bytes_source: str
    source: str


def _series_stats(s: JsonValue) -> tuple[float, float] | None:
    v = s.get("v") if isinstance(s, dict) else None
    if not v:
        return None
    vals = [as_float(x, "series.v") for x in as_list(v, "series.v")]
    return sum(vals) / len(vals), max(vals)


def peak_factor(inst: JsonObject) -> tuple[float, str]:
    """Observed burstiness: max(event_rate_peak)/mean(event_rate), else request_rate max/mean, else 1."""
    ev = _series_stats(inst.get("event_rate"))
    pk = _series_stats(inst.get("event_rate_peak"))
    if ev and pk and ev[0] > 0:
        return max(pk[1], ev[1]) / ev[0], f"max event_rate_peak / mean event_rate ({as_object(inst.get('event_rate_peak') or {}, 'event_rate_peak').get('window', '')} window)"
    rq = _series_stats(inst.get("request_rate"))
    if rq and rq[0] > 0:
        return rq[1] / rq[0], "max / mean request_rate (no event_rate_peak)"
    return 1.0, "1 (no rate series)"


def observed(inst: JsonObject, seconds: float) -> Observed:
    """Observed audit rates of one snapshot instance (over the snapshot window)."""
    ev = as_float(inst.get("events_increase") or 0.0, "events_increase")
    lv = as_object(inst.get("level_increase") or {}, "level_increase")
    out: Observed = {"events_per_s": ev / seconds if seconds > 0 else None,
                     "requests_per_s_by_level": {k: as_float(lv.get(k) or 0.0, f"level_increase.{k}") / seconds
                                                 for k in LEVELS}}
    wh = as_object(inst.get("webhook") or {}, "webhook")
    ssum = as_float(wh.get("size_sum") or 0.0, "webhook.size_sum")
    scount = as_float(wh.get("size_count") or 0.0, "webhook.size_count")
    err = as_object(inst.get("errors_increase") or {}, "errors_increase")
    sent = (ev - as_float(err.get("buffered") or 0.0, "errors_increase.buffered")
            - as_float(err.get("truncate") or 0.0, "errors_increase.truncate"))
    if ssum > 0 and scount > 0 and sent > 0:
        out["mean_event_bytes"] = max(ssum - ENVELOPE_BYTES * scount, 1.0) / sent
        out["mean_event_bytes_source"] = "rest_client_request_size_bytes (webhook POST bodies) / events sent"
    return out


def _window(snap: JsonObject) -> JsonObject:
    """The snapshot's ``source.window`` (``{}`` when absent)."""
    return as_object(as_object(snap.get("source") or {}, "snapshot.source").get("window") or {},
                     "snapshot.source.window")


def _snap_seconds(snap: JsonObject, im: InstanceMix) -> float:
    w = _window(snap)
    try:
        return as_float(w["end"], "window.end") - as_float(w["start"], "window.start")
    except (KeyError, InputError):
        return im.seconds


def _rel(est: float, obs: float | None) -> float | None:
    if obs is None or obs <= 0:
        return None
    return (est - obs) / obs


# ------------------------------------------------------------------------------------------------
# The whole report
# ------------------------------------------------------------------------------------------------
def impact_report(snap: JsonObject, policy: Policy, against: Policy | None = None,
                  assume_user: str = DEFAULT_ASSUME_USER, source: dict[str, object] | None = None) -> PolicyImpact:
    """Per instance: the estimate for ``policy`` (and ``against``), ranges, peak, and the check of the
    policy in force (``against`` if given, else ``policy``) against the observed counters."""
    mix = RequestMix.from_snapshot(snap, str((source or {}).get("snapshot", "snapshot")))
    window = _window(snap)
    out_inst: dict[str, InstanceImpact] = {}
    notes = [
        "apiserver_request_total has no user, group, namespace or object name: each class is evaluated for every "
        f"user kind of 'tune policy explain' ({', '.join(u.key for u in USER_KINDS)}) and every namespace/name the "
        "policy lists; 'range' is the best..worst case, the estimate assumes " + assume_user + " in an unlisted namespace",
        "not in apiserver_request_total, so not estimated: /version, discovery (/api, /apis), other scrapers' "
        "/metrics (this Prometheus' own scrapes are counted from 'up'), requests refused by authentication or "
        "authorization",
    ]
    missing = [f"{m.get('instance')}: {m.get('item')}: {m.get('why')}" for m in mix.missing]
    snap_instances = as_object(snap.get("instances") or {}, "snapshot.instances")
    for name in sorted(set(snap_instances) - set(mix.instances)):
        if not any(m.get("instance") == name for m in mix.missing):
            missing.append(f"{name}: in the snapshot but not in request_mix: no request mix for it")
    for name, im in sorted(mix.instances.items()):
        found = snap_instances.get(name)
        if found is None:
            missing.append(f"{name}: in request_mix but not in the snapshot's instances: no observed audit data")
        inst = as_object(found if found is not None else {}, f"snapshot.instances.{name}")
        if im.requests <= 0:
            missing.append(f"{name}: apiserver_request_total did not increase in the window: no request mix")
            continue
        in_force = against or policy
        base = estimate(in_force, im, assume_user)
        obs: Observed = observed(inst, _snap_seconds(snap, im)) if inst else {}
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
        change = None
        if against is not None:
            b = base.assumed.events
            change = Change(new.assumed.events / b if b > 0 else None,
                            new.assumed.bytes / base.assumed.bytes if base.assumed.bytes > 0 else None)
        check = None
        if obs:
            est_in_force = base.rates()
            ev_obs = obs.get("events_per_s")
            lo, hi = est_in_force.events_per_s_range
            check = Check(
                in_force.source, ev_obs, est_in_force.events_per_s, _rel(est_in_force.events_per_s, ev_obs),
                None if ev_obs is None else lo * 0.98 <= ev_obs <= hi * 1.02,
                est_in_force.events_per_s_range,
                {lv: LevelCheck(obs["requests_per_s_by_level"][lv], est_in_force.requests_per_s_by_level[lv],
                                _rel(est_in_force.requests_per_s_by_level[lv], obs["requests_per_s_by_level"][lv]))
                 for lv in LEVELS},
                None if against is not None else
                "assumes POLICY is the policy in force; give --against CURRENT_POLICY otherwise")
        out_inst[name] = InstanceImpact(im.requests / im.seconds, new.rates(pf), pf_src, size_note, new.classes,
                                        base.rates(pf) if against is not None else None, change, check)
    if not out_inst:
        raise NotEnoughData("request_mix: no instance with requests in the window: " + "; ".join(missing))
    return PolicyImpact(f"audit-tune {__version__}", policy.source, against.source if against is not None else None,
                        source or {}, window, assume_user, out_inst, notes, missing)


# ------------------------------------------------------------------------------------------------
# For tune recommend --policy
# ------------------------------------------------------------------------------------------------
def project_snapshot(snapshot: Snapshot | JsonObject, policy: Policy, current_policy: Policy | None = None,
                     assume_user: str = DEFAULT_ASSUME_USER) -> JsonObject:
    """A copy of the snapshot as if ``policy`` were in force: event rates scaled per instance.

    The factor is ``estimate(policy) / estimate(current_policy)`` on the same request mix (model
    errors cancel), or, without ``current_policy``, ``estimate(policy) / observed events``. The
    ``event_rate`` and ``event_rate_peak`` series and ``events_increase`` are multiplied by it,
    ``level_increase`` becomes the predicted requests per level, and the webhook ``size_sum`` is scaled
    so that the per-event size follows the new levels. Observed drops (``errors_increase``) belong to
    the old load and are cleared. The result carries ``projection`` (per-instance factors and notes).
    """
    snap = copy.deepcopy(snapshot_dict(snapshot))
    mix = RequestMix.from_snapshot(snap)
    projected: JsonObject = {}
    proj: JsonObject = {"policy": policy.source,
                        "current_policy": current_policy.source if current_policy else None, "instances": projected}
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
        projected[name] = {"events_factor": r, "event_size_factor": per_event, "method": how}
    snap["projection"] = proj
    return snap


def project_for_recommend(snap: JsonObject, policy_path: str, *, snapshot_path: str | None = None,
                          prom: PromSettings | None = None, current_policy_path: str | None = None,
                          log: Callable[[str], None] = lambda m: None) -> JsonObject:
    """``tune recommend --policy``: attach the request mix (from the snapshot file's raw JSON, which
    ``Snapshot.load`` drops, or from Prometheus), then :func:`project_snapshot`."""
    new = load_policy(policy_path)
    cur = load_policy(current_policy_path) if current_policy_path else None
    for p in (new, cur):
        for w in (p.warnings if p else ()):
            log(f"warning: {w}")
    if "request_mix" not in snap:
        if snapshot_path:
            raw = as_object(jsondata.loads(files.read_text(snapshot_path, "--snapshot", "a snapshot (tune snapshot -o FILE)"),
                                           f"--snapshot {snapshot_path}"), f"--snapshot {snapshot_path}")
            if "request_mix" in raw:
                snap = {**snap, "request_mix": raw["request_mix"]}
        elif prom is not None and getattr(prom, "url", None):
            snap = add_request_mix(copy.deepcopy(snap), PromClient(prom))
    out = project_snapshot(snap, new, cur)
    projection = as_object(out["projection"], "projection")
    for name, pv in as_object(projection["instances"], "projection.instances").items():
        f = as_object(pv, f"projection.instances.{name}")
        log(f"--policy {policy_path}: instance {name}: audit events x{f['events_factor']:.3f} "
            f"({f['method']}), event size x{f['event_size_factor']:.3f}")
    return out
