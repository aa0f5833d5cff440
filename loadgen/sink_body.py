"""Reading and checking one webhook request body, bounded in size and time.

kube-apiserver's webhook backend (``k8s.io/apiserver/plugin/pkg/audit/webhook/webhook.go``)
retries any batch that gets an error or a non-2xx answer, so a body that can never be stored
must get a 4xx, never a 5xx: 413 above the size limit (before or after gzip decompression),
408 when the body does not arrive within ``body_timeout``, 415 for an unknown
``Content-Encoding``, 400 for everything malformed (not UTF-8 JSON, NaN, nesting past the
parser's depth, a lone surrogate that cannot be written back as UTF-8, a corrupt or truncated
gzip stream, not an ``audit.k8s.io`` ``EventList``).

Compressed bodies are inflated chunk by chunk with a cap on the output, so a gzip bomb costs at
most the limit in memory.
"""
from __future__ import annotations

import asyncio
import json
import zlib

from aiohttp import web

from audit_tune.loadgen.chain import encode_event


class BodyError(Exception):
    """A request body the sink refuses; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: web.Request, limit: int, timeout: float) -> tuple[bytes, int]:
    """The decoded body and the bytes received on the wire; raises :class:`BodyError`."""
    enc = request.headers.get("Content-Encoding", "identity").strip().lower()
    if enc not in ("", "identity", *_WBITS):
        raise BodyError(415, f"Content-Encoding {enc!r} is not supported (identity, gzip, deflate)")
    length = request.content_length
    if length is not None and length > limit:
        raise BodyError(413, f"body of {length} bytes exceeds {limit}")
    inflater = zlib.decompressobj(_WBITS[enc]) if enc in _WBITS else None
    parts: list[bytes] = []
    wire = size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                wire += len(chunk)
                if wire > limit:
                    raise BodyError(413, f"body exceeds {limit} bytes")
                if inflater is not None:
                    chunk = _inflate(inflater, chunk, limit - size)
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"body exceeds {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise BodyError(408, f"body not received within {timeout:g}s") from None
    if inflater is not None and not inflater.eof:
        raise BodyError(400, f"{enc} body is truncated")
    if inflater is not None and inflater.unused_data:
        raise BodyError(400, f"{enc} body has data after its end")
    return b"".join(parts), wire


def _inflate(inflater, chunk: bytes, room: int) -> bytes:
    try:
        out = inflater.decompress(chunk, room + 1)
    except zlib.error:
        raise BodyError(400, "corrupt compressed body") from None
    if len(out) > room or inflater.unconsumed_tail:
        raise BodyError(413, f"body exceeds {room} bytes once decompressed")
    return out


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_event_list(body: bytes) -> list[bytes]:
    """Each event of an ``audit.k8s.io/*`` ``EventList``, re-encoded for the store; raises :class:`BodyError`."""
    try:
        doc = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise BodyError(400, "body is nested too deeply") from None
    except ValueError:
        raise BodyError(400, "body is not JSON (UTF-8)") from None
    if not isinstance(doc, dict) or doc.get("kind") != "EventList":
        raise BodyError(400, "body is not an EventList (kind must be EventList)")
    if not str(doc.get("apiVersion", "")).startswith("audit.k8s.io/"):
        raise BodyError(400, f"apiVersion {str(doc.get('apiVersion'))[:80]!r} is not audit.k8s.io/*")
    items = doc.get("items")
    items = [] if items is None else items
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise BodyError(400, "items is not a list of audit events")
    out = []
    for i, ev in enumerate(items):
        try:
            out.append(encode_event(ev))
        except RecursionError:
            raise BodyError(400, f"items[{i}] is nested too deeply") from None
        except UnicodeEncodeError:  # a lone surrogate
            raise BodyError(400, f"items[{i}] holds a string that is not valid Unicode") from None
        except ValueError:  # a number past float range (1e999) reads as Infinity
            raise BodyError(400, f"items[{i}] holds a number out of range (strict JSON has no Infinity)") from None
    return out
