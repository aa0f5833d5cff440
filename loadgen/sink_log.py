"""One line per HTTP-level error of the sink's server, never a traceback.

aiohttp's request handler (``web_protocol.RequestHandler.log_exception``) logs a malformed
request (a bad ``Content-Length``, a header line past 8190 bytes, not HTTP at all) and a client
that disconnects mid-body with the exception's traceback attached. The sink hands it
:data:`HTTP_LOGGER` instead (the handler's public ``logger`` argument), whose only handler
writes the message and the exception's first line to stderr, bounded in length, and does not
pass records on to the root logger.
"""
from __future__ import annotations

import logging

from audit_tune.basics.output import log

__all__ = ["HTTP_LOGGER"]

MAX_LINE = 240


class _OneLine(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                e = record.exc_info[1]
                detail = str(getattr(e, "message", "") or e)
                first = " ".join(x.strip() for x in detail.splitlines()[:2] if x.strip())
                msg += f": {type(e).__name__}" + (f": {first}" if first else "")
            log(f"sink: {msg}"[:MAX_LINE].encode("ascii", "backslashreplace").decode())
        except Exception:  # noqa: BLE001 - logging must never take the server down
            pass


HTTP_LOGGER = logging.getLogger("audit_tune.sink.http")
HTTP_LOGGER.addHandler(_OneLine())
HTTP_LOGGER.setLevel(logging.INFO)
HTTP_LOGGER.propagate = False
