"""Audit log files as an input: kube-apiserver's log backend output (or ``tune sink``'s store),
read into the same ``audit-tune-snapshot/v1`` document the Prometheus path writes.

One concept per module: ``reader`` (files, folders, rotation, gzip, blocks of lines), ``decode``
(msgspec Structs for the few Event fields used, line by line), ``block`` (a block of clean lines
decoded at once, the fast path), ``series`` (100 ms arrival bins, per-step rates, 1 s peaks,
bursts, busiest stretches), ``sizes`` (bytes per event by level and stage), ``mix`` (requests by
verb, resource, namespace, user), ``skips`` (unusable lines, per file and reason),
``completeness`` (which events a trace may miss), ``scan`` (one pass per file, in parallel) and
``build`` (the snapshot). See ``docs/audit-log.md``.

API::

    read = read_logs(["apiserver-0=/var/log/kubernetes/audit/"])  # jobs: the cores available
    snap = to_snapshot(read, step=15.0)                  # dict, audit-tune-snapshot/v1 + audit_log
"""
from pathlib import Path

from audit_tune.analysis.auditlog.build import LogRead, read_logs, to_snapshot, trace_from_dict

SAMPLE_NAME = "sample-audit.jsonl.gz"


def sample_path() -> Path:
    """The bundled real audit log sample (``analysis/data/sample-audit.jsonl.gz``, docs/audit-log.md)."""
    return Path(__file__).resolve().parent.parent / "data" / SAMPLE_NAME


__all__ = ["SAMPLE_NAME", "LogRead", "read_logs", "sample_path", "to_snapshot", "trace_from_dict"]
