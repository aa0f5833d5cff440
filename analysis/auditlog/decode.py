"""Decode audit log lines into the few fields the calibration needs.

Three line formats are read:

* **json** (``--audit-log-format=json``, the default): one compact ``audit.k8s.io/v1`` ``Event``
  per line, as ``apiserver/plugin/pkg/audit/log/backend.go`` writes it (``runtime.Encode`` with the
  legacy codec, then a newline). Decoded with :mod:`msgspec` into a :class:`Event` ``Struct``
  that declares only the fields used here, so the rest of the line (request and response objects,
  annotations) is skipped by the C parser without building Python objects. Lines are decoded in
  batches (``[line,line,...]``), falling back to one line at a time to classify a batch's bad line.
* **store**: a line of ``tune sink``'s store (``loadgen/store.py``): ``{"seq",...,"event":{...}}``;
  the event is kept as raw bytes (its length is what the webhook sent for it) and decoded as above.
* **legacy** (``--audit-log-format=legacy``, ``EventString`` in ``apiserver/pkg/audit/format.go``):
  ``<RequestReceivedTimestamp> AUDIT: id="..." stage="..." ip="..." method="..." user="..." ...
  namespace=... uri="..." response="..."``. It carries no level and its time is when the request
  was received, not when the stage was emitted; its byte count is not the JSON size.

A line that cannot be used gets a reason (:data:`REASONS`); nothing raises.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

import msgspec

KNOWN_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
LEVELS = ("None", "Metadata", "Request", "RequestResponse")

NOT_EVENT = "not an audit event"
NOT_JSON = "not JSON"
TRUNCATED = "truncated last line"
TOO_LONG = "line over 64 MiB"
NON_UTF8 = "non-UTF-8 bytes"
OUT_OF_ORDER = "out-of-order timestamp"
UNKNOWN_VERSION = "unknown apiVersion"
BAD_TIME = "unreadable stageTimestamp"
REASONS = (NOT_EVENT, NOT_JSON, TRUNCATED, TOO_LONG, NON_UTF8, OUT_OF_ORDER, UNKNOWN_VERSION, BAD_TIME)


class ObjectRef(msgspec.Struct, frozen=True, gc=False):
    """Hashable: the request-mix class key holds it as is. The object's name is not read (it would
    make a class per object); whether a request names one follows from its verb."""

    resource: str = ""
    namespace: str = ""
    apiGroup: str = ""  # noqa: N815 - the JSON field name
    subresource: str = ""


class User(msgspec.Struct, frozen=True, gc=False):
    username: str = ""


NO_REF = ObjectRef()
NO_USER = User()


class Event(msgspec.Struct, frozen=True, gc=False):
    """The fields of ``audit.k8s.io/v1`` ``Event`` (``apiserver/pkg/apis/audit/v1/types.go``) used
    here. Absent nested objects decode to empty ones, so the hot loop needs no None checks; the
    user's groups are read only once per user (:func:`groups_of`), as decoding a list per line
    would halve the rate."""

    apiVersion: str = ""  # noqa: N815
    kind: str = ""
    level: str = ""
    stage: str = ""
    stageTimestamp: Annotated[datetime, msgspec.Meta(tz=True)] | None = None  # noqa: N815 - parsed in C
    verb: str = ""
    requestURI: str = ""  # noqa: N815
    user: User = NO_USER
    objectRef: ObjectRef = NO_REF  # noqa: N815


class _Lenient(msgspec.Struct, gc=False):
    kind: str = ""
    stageTimestamp: str = ""  # noqa: N815


class _Groups(msgspec.Struct, gc=False):
    groups: list[str] = []


class _WithGroups(msgspec.Struct, gc=False):
    user: _Groups | None = None


class StoreRecord(msgspec.Struct, gc=False):
    """One line of ``tune sink``'s store; ``event`` stays raw."""

    event: msgspec.Raw = msgspec.Raw(b"")
    received: float = 0.0


_EVENT = msgspec.json.Decoder(Event)
_RECORD = msgspec.json.Decoder(StoreRecord)
_WG = msgspec.json.Decoder(_WithGroups)
_LENIENT = msgspec.json.Decoder(_Lenient)
decode_event = _EVENT.decode


def groups_of(raw: bytes) -> tuple[str, ...]:
    """``user.groups`` of one event line (read once per distinct user)."""
    try:
        u = _WG.decode(raw).user
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()
    return tuple(u.groups) if u is not None else ()


_minute_cache: dict[str, float] = {}


def parse_time(s: str) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (``2026-12-06T19:00:00.123456Z``); None if unreadable.
    The minute prefix is cached, so the common UTC form costs one float() per line."""
    if len(s) >= 20 and s[-1] == "Z" and s[16] == ":":
        base = _minute_cache.get(s[:16])
        if base is None:
            try:
                base = datetime.fromisoformat(s[:16] + ":00+00:00").timestamp()
            except ValueError:
                return None
            if len(_minute_cache) > 100_000:
                _minute_cache.clear()
            _minute_cache[s[:16]] = base
        try:
            return base + float(s[17:-1])
        except ValueError:
            return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def sniff(first: bytes) -> str:
    """The format of a file from its first non-blank line: ``store``, ``json`` or ``legacy``."""
    s = first.lstrip()
    if s.startswith(b'{"seq"'):
        return "store"
    if s.startswith(b"{"):
        return "json"
    return "legacy"


def classify(line: bytes, last: bool, fmt: str) -> str:
    """Why ``line`` could not be decoded as a whole."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return NON_UTF8
    try:
        (_RECORD if fmt == "store" else _EVENT).decode(line)
    except msgspec.ValidationError:
        try:
            if _LENIENT.decode(line).stageTimestamp:
                return BAD_TIME
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        return NOT_EVENT
    except msgspec.DecodeError:
        return TRUNCATED if last else NOT_JSON
    return NOT_EVENT


def decode_events(lines: list[bytes], fmt: str) -> tuple[list[Event | None], list[int], list[str | None]]:
    """Decode a batch of non-blank lines: (events, bytes each event is on the wire, skip reasons).
    ``events[i]`` is None when line ``i`` cannot be decoded, with ``reasons[i] == "?"`` (the caller
    classifies it with :func:`classify`). For a store the raw bytes are the event's, not the line's."""
    if fmt == "store":
        return _decode_store(lines)
    try:
        evs: list[Event | None] = list(map(decode_event, lines))
        return evs, [len(x) for x in lines], [None] * len(lines)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    out: list[Event | None] = []
    why: list[str | None] = []
    for x in lines:
        try:
            out.append(decode_event(x))
            why.append(None)
        except (msgspec.DecodeError, msgspec.ValidationError):
            out.append(None)
            why.append("?")
    return out, [len(x) for x in lines], why


def _decode_store(lines: list[bytes]) -> tuple[list[Event | None], list[int], list[str | None]]:
    evs: list[Event | None] = []
    sizes: list[int] = []
    why: list[str | None] = []
    for x in lines:
        try:
            r = _RECORD.decode(x)
        except (msgspec.DecodeError, msgspec.ValidationError):
            evs.append(None)
            sizes.append(0)
            why.append("?")
            continue
        if not r.event:
            evs.append(None)
            sizes.append(0)
            why.append(NOT_EVENT)
            continue
        raw = bytes(r.event)
        try:
            evs.append(decode_event(raw))
            why.append(None)
        except (msgspec.DecodeError, msgspec.ValidationError):
            evs.append(None)
            why.append(NOT_EVENT)
        sizes.append(len(raw))
    return evs, sizes, why


# ---- legacy format -------------------------------------------------------------------------
_LEGACY = re.compile(rb'^(\S+) AUDIT: id="([^"]*)" stage="([^"]*)" ip="[^"]*" method="([^"]*)" user="((?:[^"\\]|\\.)*)"'
                     rb'.*? namespace=(\S*) uri="((?:[^"\\]|\\.)*)"')


def decode_legacy(lines: Iterable[bytes]) -> tuple[list[Event | None], list[int], list[str | None]]:
    """Legacy lines as :class:`Event` (level unknown, ``stageTimestamp`` = the request-received
    time the line starts with); the byte counts are 0 (the line is not the JSON the webhook sends)."""
    evs: list[Event | None] = []
    why: list[str | None] = []
    n = 0
    for x in lines:
        n += 1
        try:
            x.decode("utf-8")
        except UnicodeDecodeError:
            evs.append(None)
            why.append(NON_UTF8)
            continue
        m = _LEGACY.match(x)
        if m is None:
            evs.append(None)
            why.append("?")
            continue
        ts, _id, stage, method, user, ns, uri = (g.decode() for g in m.groups())
        t = parse_time(ts)
        if t is None:
            evs.append(None)
            why.append(BAD_TIME)
            continue
        ns = ns.strip('"')
        ns = "" if ns == "<none>" else ns
        evs.append(Event(apiVersion="audit.k8s.io/v1", kind="Event", level="", stage=stage,
                         stageTimestamp=datetime.fromtimestamp(t, UTC),
                         verb=method, requestURI=uri, user=User("" if user == "<none>" else user),
                         objectRef=ObjectRef(namespace=ns) if ns else NO_REF))
        why.append(None)
    return evs, [0] * n, why
