"""Calibrate the simulator to one apiserver instance of an ``audit-tune-snapshot/v1`` snapshot.

What is built, per instance (see ``docs/recommend.md``):

* **Rate**: the observed ``event_rate`` curve (events/s, one value per ``step``) is replayed as a
  step :class:`~sim.workload.RateProfile` at its own resolution. Events become requests through
  the events-per-request ratio ``epr`` (``events_increase / requests audited`` from
  ``level_increase``, else from ``requests_by_verb`` (watches make 3 events), else 2.0 = RR + RC).
* **Sub-step bursts**: inside each step the rate is modulated per *burst window* ``w`` (the
  ``event_rate_peak`` window, 10 s) by i.i.d. lognormal multipliers
  ``X_k = exp(sigma Z_k - sigma^2/2)``, renormalised so each step keeps its observed mean. sigma is
  fitted so that the model's ratio ``max_k(10 s rate) / step rate`` (with Poisson counting noise)
  matches the observed ``event_rate_peak / event_rate``: the median ratio, raised to the 90th
  percentile's fit when the tail is heavier. Without ``event_rate_peak`` sigma comes from the spread
  of the step series around its rolling median (assumed scale-free; said in the output).
* **Audit log input** (the snapshot's ``audit_log`` key, ``analysis.auditlog``, docs/audit-log.md):
  the peak series is the log's busiest 1 s per step, the event size its mean line length, and the
  observed load (scale 1) of a stretch the stored trace covers is replayed from the logged arrival
  times exactly (:meth:`InstanceModel.trace_between`); other scales use the fitted model.
* **Event size**: webhook ``size_sum / size_count`` (one observation per POST attempt) divided by
  the mean events per POST; default 850 B (spec section 7) when the webhook histograms are absent.
* **Receiver**: webhook latency = empirical quantiles of ``rest_client_request_duration_seconds``
  (``Latency("empirical", ...)``); failure probability per attempt = (non-2xx + ``<error>``) /
  all attempts, less the share already explained by latencies at the 30 s client timeout.

:func:`validate` replays the observed window with the *current* flags and compares predicted
drops by plugin with the observed ``errors_increase``: the calibration error and a plain
confidence level come out of it.

One concept per module: ``model`` (the calibrated :class:`InstanceModel` and its scenarios), ``fit``
(reading a snapshot document into a model), ``validate`` (replaying the observed window) and
``synthetic`` (snapshots recorded from a known load).
"""
from audit_tune.analysis.calibrate.fit import (
    DEFAULT_EPR,
    DEFAULT_EVENT_SIZE,
    DEFAULT_LATENCY,
    ENVELOPE_BYTES,
    calibrate,
    data_problems,
    event_size,
    events_per_request,
    failure_rate,
    fit_burst,
    latency_from_histogram,
    load_snapshot,
    lognormal_quantile,
    missing_items,
    snapshot_dict,
)
from audit_tune.analysis.calibrate.model import LATENCY_POINTS, BurstFit, InstanceModel, with_sigma
from audit_tune.analysis.calibrate.synthetic import SyntheticWebhook, synthetic_snapshot
from audit_tune.analysis.calibrate.validate import (
    MAX_VALIDATION_EVENTS,
    Mapper,
    PartResult,
    ReplayPart,
    Validation,
    replay_part,
    replay_parts,
    replay_ranges,
    validate,
    validate_many,
)

__all__ = [
    "DEFAULT_EPR", "DEFAULT_EVENT_SIZE", "DEFAULT_LATENCY", "ENVELOPE_BYTES", "LATENCY_POINTS",
    "MAX_VALIDATION_EVENTS", "BurstFit", "InstanceModel", "Mapper", "PartResult", "ReplayPart", "SyntheticWebhook", "Validation",
    "calibrate",
    "data_problems", "event_size", "events_per_request", "failure_rate", "fit_burst", "latency_from_histogram",
    "load_snapshot", "lognormal_quantile", "missing_items", "replay_part", "replay_parts", "replay_ranges", "snapshot_dict",
    "synthetic_snapshot", "validate", "validate_many", "with_sigma",
]
