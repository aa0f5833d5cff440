"""The fast path: a block of clean ``json``-format lines decoded at once.

kube-apiserver's log backend writes one compact ``Event`` per line (``runtime.Encode``, then a
newline; ``apiserver/plugin/pkg/audit/log/backend.go``), and its ``stageTimestamp`` is a
``metav1.MicroTime``, always ``2006-01-02T15:04:05.000000Z`` in UTC (``RFC3339Micro`` in
``apimachinery/pkg/apis/meta/v1/micro_time.go``). For a block of such lines:

* the whole block is decoded in one call (``msgspec.json.Decoder.decode_lines``) into
  :class:`CleanEvent`, whose enum fields are ``Literal`` types: a line with an unknown
  ``apiVersion``, ``kind``, ``level``, ``stage`` or ``verb``, or no ``stageTimestamp``, fails the
  block;
* the byte length of each line comes from the newline positions (numpy over the buffer), so no
  per-line ``bytes`` object is made;
* the timestamps are parsed together from their fixed-width text (:func:`stamps`).

Anything unusual (a blank line, ``\\r``, a line not of the form ``{...}``, a decode or
validation error, a timestamp in another form) returns None, and the caller reads the block
line by line (``decode.decode_events``), which classifies every bad line. A block that passes
gives exactly what the line-by-line path gives for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

import msgspec
import numpy as np

from audit_tune.analysis.auditlog.decode import NO_REF, NO_USER, ObjectRef, User

_NL, _OPEN, _CLOSE = 10, ord("{"), ord("}")
STAMP_LEN = 27  # 2026-12-06T19:22:47.441804Z
_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (26, "Z"))
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25])
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


# The verbs kube-apiserver records (``apiserver/pkg/endpoints/request/requestinfo.go``): those of
# resource requests, and the lowercased HTTP method of non-resource ones. As Literal values they are
# the same string objects on every line (their hashes cached for the request-mix ``Counter``); any
# other verb sends its block to the line-by-line path, which counts it as it is.
Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy",
               "post", "put", "head", "options", "connect", "trace"]


class CleanEvent(msgspec.Struct, frozen=True, gc=False):
    """``decode.Event`` with its enums as ``Literal`` types: decoding fails on anything the
    line-by-line path would skip or treat one by one. ``user`` and ``objectRef`` are the same types
    as ``decode.Event``'s, so request-mix keys from either path are equal."""

    apiVersion: Literal["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]  # noqa: N815 - the JSON field name
    kind: Literal["Event"]
    stage: Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
    stageTimestamp: str  # noqa: N815
    level: Literal["", "None", "Metadata", "Request", "RequestResponse"] = ""
    verb: Verb | Literal[""] = ""
    requestURI: str = ""  # noqa: N815
    user: User = NO_USER
    objectRef: ObjectRef = NO_REF  # noqa: N815


_CLEAN = msgspec.json.Decoder(CleanEvent)
_STAMP = attrgetter("stageTimestamp")


@dataclass(frozen=True)
class Block:
    """A decoded block: events, each line's byte length (without its newline), where each line
    starts in the block, and the unix ``stageTimestamp`` of each event."""

    events: list[CleanEvent]
    sizes: np.ndarray  # int64
    starts: np.ndarray  # int64
    times: np.ndarray  # float64


def decode_block(buf: memoryview) -> Block | None:
    """``buf``: whole lines, each ending with a newline. None unless every line is a clean event."""
    a = np.frombuffer(buf, dtype=np.uint8)
    if not len(a) or a[-1] != _NL:
        return None
    ends = np.flatnonzero(a == _NL)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    # every line is {...}: no blank line, no \r, and (with the count below) one value per line
    if not (np.all(a[starts] == _OPEN) and np.all(a[ends - 1] == _CLOSE)):
        return None
    try:
        evs = _CLEAN.decode_lines(buf)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(evs) != len(ends):
        return None
    t = stamps(list(map(_STAMP, evs)))
    if t is None:
        return None
    return Block(evs, ends - starts, starts, t)


def stamps(texts: list[str]) -> np.ndarray | None:
    """Unix seconds of ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` timestamps, computed together; None if any
    is in another form or out of range. Equal to ``datetime.timestamp()`` of each (the integer
    microseconds over 10^6, rounded once)."""
    try:
        s = np.array(texts, dtype=f"S{STAMP_LEN + 1}")
    except UnicodeEncodeError:
        return None
    u = s.view(np.uint8).reshape(len(texts), STAMP_LEN + 1)
    if len(texts) == 0 or u[:, STAMP_LEN].any():  # longer than the form
        return None
    for pos, ch in _SEPARATORS:
        if not np.all(u[:, pos] == ord(ch)):
            return None
    d = u[:, _DIGITS] - np.uint8(48)
    if np.any(d > 9):
        return None
    d = d.astype(np.int64)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    day = d[:, 6] * 10 + d[:, 7]
    hour = d[:, 8] * 10 + d[:, 9]
    minute = d[:, 10] * 10 + d[:, 11]
    second = d[:, 12] * 10 + d[:, 13]
    micro = d[:, 14:20] @ np.array([100000, 10000, 1000, 100, 10, 1], dtype=np.int64)
    if np.any((month < 1) | (month > 12) | (year < 1) | (hour > 23) | (minute > 59) | (second > 59)):
        return None
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    if np.any((day < 1) | (day > _MONTH_DAYS[month] + (leap & (month == 2)))):
        return None
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "days_from_civil")
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    us = (days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000 + micro
    return us.astype(np.float64) / 1e6
