"""The asyncio event loop the load generator, its workers and the fake API server run on."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (about 1.5x the requests per CPU second), else asyncio's.

    ``AUDIT_TUNE_NO_UVLOOP=1`` forces the standard loop.
    """
    if os.environ.get("AUDIT_TUNE_NO_UVLOOP") == "1":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
