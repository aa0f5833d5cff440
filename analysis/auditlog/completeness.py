"""Is the arrival trace complete? Which events can be missing from it, and how many.

Events dropped by a buffer never reach any backend (``apiserver/plugin/pkg/audit/buffered``):

* the **log backend in ``blocking`` mode** (kube-apiserver's default, ``--audit-log-mode``) writes
  every event synchronously in the request goroutine; only a failed write is lost
  (``apiserver_audit_error_total{plugin="log"}``). Its file is the complete arrival trace.
* a **log in ``batch`` mode**, or a **webhook receiver's store** (``tune sink``), misses what the
  buffer dropped (``plugin="buffered"``), and for a store also what the webhook gave up on
  (``plugin="webhook"``) and what ``truncate`` dropped.

With Prometheus the gap is sized from ``apiserver_audit_error_total`` over the same window; without
it the output says the trace may miss dropped events, and what that would change: a peak seen at
fraction ``f`` of the true one under-sizes the capacity by ``1/f``, which the headroom covers while
``f >= 1/headroom``.
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.basics.jsondata import JsonObject

MODES = ("blocking", "blocking-strict", "batch")


@dataclass(frozen=True)
class Completeness:
    source: str  # "log" | "store"
    mode: str  # log mode, or "webhook" for a store
    complete: bool
    lost_plugins: tuple[str, ...]
    missing_events: float | None  # sized from Prometheus, else None
    note: str

    def to_dict(self) -> JsonObject:
        return {"source": self.source, "mode": self.mode, "complete": self.complete,
                "lost_plugins": list(self.lost_plugins), "missing_events": self.missing_events, "note": self.note}


def assess(fmt: str, log_mode: str, events: float, errors: dict[str, float] | None) -> Completeness:
    """``fmt`` is the files' format (``store`` for a sink store); ``errors`` = Prometheus
    ``errors_increase`` of the instance, or None without Prometheus."""
    plugins: tuple[str, ...]
    if fmt == "store":
        src, mode, plugins = "store", "webhook", ("buffered", "webhook", "truncate")
    else:
        src, mode = "log", log_mode
        plugins = ("buffered", "log", "truncate") if log_mode == "batch" else ("log",)
    if errors is not None:
        miss = float(sum(errors.get(p, 0.0) for p in plugins))
        share = miss / (events + miss) if events + miss > 0 else 0.0
        note = (f"{miss:,.0f} events missing from the trace ({100 * share:.2f}%), sized from apiserver_audit_error_total"
                f"{{plugin=~\"{'|'.join(plugins)}\"}}" if miss else
                f"complete: apiserver_audit_error_total{{plugin=~\"{'|'.join(plugins)}\"}} did not grow in the window")
        return Completeness(src, mode, miss == 0, plugins, miss, note)
    if src == "log" and mode != "batch":
        return Completeness(src, mode, True, plugins, None,
                            f"complete: the log backend in {mode} mode writes every event (only failed writes, "
                            "plugin=\"log\", are lost)")
    what = "a webhook receiver's store" if src == "store" else "a batch-mode log"
    return Completeness(src, mode, False, plugins, None,
                        f"{what} misses events its buffer dropped, and no Prometheus was given to size them "
                        "(--prometheus-url): peaks may be under-stated; a peak seen at a fraction f of the true one "
                        "is still covered while f >= 1/headroom (50% at the default x2)")
