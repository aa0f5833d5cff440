"""What the webhook client's counters say about receiver failures and Retry-After.

Two counters of the apiserver's REST client (k8s.io/client-go ``rest/request.go``, metrics
registered by ``k8s.io/component-base/metrics/prometheus/restclient``), for the webhook host:

* ``rest_client_requests_total{method="POST",code}``: every HTTP round trip, by the answer's code
  (``<error>`` = transport error): the snapshot's ``webhook.requests_by_code``;
* ``rest_client_request_retries_total{verb="POST",code}``: every round trip after the first inside
  one request (``rest/with_retry.go`` ``After``: "every attempt after the first (2..N) are counted"),
  by the retried round trip's code: ``webhook.retries_by_code``, ``None`` when Prometheus has no
  series (no retry happened, or the apiserver does not export the counter).

One webhook attempt (``plugin/pkg/audit/webhook/webhook.go`` with ``pkg/util/webhook`` backoff) is
one client request. The client retries inside it only when a 429 or 5xx answer carries a
``Retry-After`` header (``rest/with_retry.go`` ``IsNextRetry``/``checkWait``): it sleeps that many
seconds and POSTs again, up to ``maxRetries`` = 10, all within the client's 30 s timeout. So:

* attempts = round trips - retries, successful attempts = 2xx round trips (one each), failed
  attempts = the rest (:func:`attempts_by_code`, what the per-attempt failure probability needs);
* retries > 0 means the receiver sent Retry-After; with ``k`` retries per attempt whose first answer
  failed, a header of ``N`` s fits ``k N < 30 s <= (k + 1) N`` when the attempts ran into the
  timeout (the next sleep would pass the deadline), so the smallest whole ``N`` consistent is
  ``ceil(30 / (k + 1))``, and 1 s once ``k`` reaches the 10-retry cap (:func:`default_retry_after`). The smallest is the cautious choice: a
  shorter Retry-After ends an attempt sooner, so batches give up sooner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from audit_tune.basics.jsondata import JsonMapping, JsonValue
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, CLIENT_MAX_RETRIES

REQUESTS = "rest_client_requests_total"
RETRIES = "rest_client_request_retries_total"


def _obj(v: JsonValue) -> JsonMapping:
    return v if isinstance(v, dict) else {}


def _counts(v: JsonValue) -> dict[str, float]:
    return {str(k): float(n) for k, n in _obj(v).items() if isinstance(n, (int, float)) and not isinstance(n, bool)}


def _failed(code: str) -> bool:
    return not code.startswith("2")


def attempts_by_code(requests: dict[str, float], retries: dict[str, float] | None) -> dict[str, float]:
    """Webhook attempts by outcome from round trips and in-attempt retries: 2xx as counted (each
    success ends one attempt); the failed attempts (attempts - successes) shared among the failure
    codes of the attempts' first answers (round trips - retries, per code). Without retries the
    round trips are the attempts."""
    if not retries:
        return dict(requests)
    attempts = sum(requests.values()) - sum(retries.values())
    ok = {k: v for k, v in requests.items() if not _failed(k)}
    first = {k: max(0.0, v - retries.get(k, 0.0)) for k, v in requests.items() if _failed(k)}
    failed = max(0.0, attempts - sum(ok.values()))
    total_first = sum(first.values())
    if total_first <= 0 or failed <= 0:
        return ok
    return {**ok, **{k: failed * v / total_first for k, v in first.items() if v > 0}}


def _retries_per_failed_attempt(requests: dict[str, float], retries: dict[str, float]) -> float | None:
    """In-attempt retries per attempt whose first answer failed (one apiserver); None without retries."""
    total = sum(retries.values())
    if not total:
        return None
    first_failed = sum(max(0.0, v - retries.get(k, 0.0)) for k, v in requests.items() if _failed(k))
    return total / first_failed if first_failed > 0 else float(CLIENT_MAX_RETRIES)


def webhook_attempts(webhook: JsonValue) -> dict[str, float]:
    """:func:`attempts_by_code` of one apiserver's snapshot ``webhook`` entry."""
    wh = _obj(webhook)
    return attempts_by_code(_counts(wh.get("requests_by_code")),
                            None if wh.get("retries_by_code") is None else _counts(wh.get("retries_by_code")))


@dataclass(frozen=True)
class RetryEvidence:
    """The webhook round trips and in-attempt retries by code, summed over a snapshot's apiservers;
    ``retries_per_failed_attempt`` is the most of any apiserver that exports the retries counter."""

    requests_by_code: dict[str, float]
    retries_by_code: dict[str, float] | None  # None: no retry series for any apiserver
    sources: dict[str, str]
    retries_per_failed_attempt: float | None = None

    @property
    def failed_requests(self) -> dict[str, float]:
        return {k: v for k, v in self.requests_by_code.items() if v and _failed(k)}

    @property
    def retries(self) -> float:
        return sum((self.retries_by_code or {}).values())


def evidence(snap: JsonMapping) -> RetryEvidence:
    """The snapshot's webhook counters (``instances.*.webhook``), summed."""
    req: dict[str, float] = {}
    ret: dict[str, float] | None = None
    per: list[float] = []
    for inst in _obj(snap.get("instances")).values():
        wh = _obj(_obj(inst).get("webhook"))
        codes = _counts(wh.get("requests_by_code"))
        for k, v in codes.items():
            req[k] = req.get(k, 0.0) + v
        if wh.get("retries_by_code") is not None:
            ret = ret if ret is not None else {}
            mine = _counts(wh.get("retries_by_code"))
            for k, v in mine.items():
                ret[k] = ret.get(k, 0.0) + v
            k_inst = _retries_per_failed_attempt(codes, mine)
            if k_inst is not None:
                per.append(k_inst)
    sources = {"requests_by_code": f"{REQUESTS}{{method=\"POST\",host=<webhook>}} by code, increase over the window",
               "retries_by_code": (f"{RETRIES}{{verb=\"POST\",host=<webhook>}} by code, increase over the window"
                                   if ret is not None else f"no {RETRIES} series for the webhook host: no "
                                   "Retry-After retries, or the apiserver does not export the counter")}
    return RetryEvidence(req, ret, sources, max(per) if per else None)


def default_kind(ev: RetryEvidence) -> tuple[str, str]:
    """The outage kind the data shows: the most frequent failed webhook round trip code
    (429 -> ``429``, 5xx -> ``503``, ``<error>`` -> ``refuse``); ``refuse`` when none failed."""
    failed = ev.failed_requests
    if not failed:
        return "refuse", "no failed webhook attempts in the snapshot"
    code, _ = max(failed.items(), key=lambda kv: kv[1])
    seen = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(failed.items()))
    kind = "429" if code == "429" else "refuse" if code == "<error>" else "503"
    why = f"failed webhook attempts by code in the snapshot ({REQUESTS}: {seen}); most are {code}"
    if ev.retries:
        retried = ", ".join(f"{k}: {v:.0f}" for k, v in sorted((ev.retries_by_code or {}).items()))
        why += f"; {ev.retries:.0f} in-attempt retries ({RETRIES}: {retried}), so the answers carried Retry-After"
    return kind, why


def default_retry_after(ev: RetryEvidence) -> tuple[int | None, str]:
    """The Retry-After (whole seconds) the outage scenarios' 429/503 answers carry by default, and why."""
    k = ev.retries_per_failed_attempt
    if k is None:
        return None, ("no Retry-After: " + ("the data shows no in-attempt retries" if ev.retries_by_code is not None
                                            else ev.sources["retries_by_code"]))
    n = 1 if k >= CLIENT_MAX_RETRIES else max(1, int(math.ceil(ATTEMPT_TIMEOUT / (k + 1) - 1e-9)))
    return n, (f"Retry-After {n}s: {ev.retries:.0f} in-attempt retries ({RETRIES}), {k:.2g} per attempt whose "
               f"first answer failed; the smallest whole Retry-After with that many retries in the "
               f"{ATTEMPT_TIMEOUT:g} s client timeout")
