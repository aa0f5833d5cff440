"""Where clusters keep their state: one folder per cluster name under
``${AUDIT_TUNE_STATE:-~/.cache/audit-tune/clusters}``, holding ``state.json``.

Both providers (:mod:`audit_tune.loadgen.local`, :mod:`audit_tune.loadgen.kind`) write there, so
``tune cluster status|down|list`` can find a cluster from another process. A state file is plain
JSON: read back as a :data:`~audit_tune.basics.jsondata.JsonObject`, or one ``ServiceError`` line
naming the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.basics.jsondata import JsonObject

STATE_FILE = "state.json"


class StoppedCluster(TypedDict):
    """What ``tune cluster down`` stopped: the cluster's name and its processes."""

    name: str
    stopped: list[str]


def default_state_root() -> Path:
    """``${AUDIT_TUNE_STATE:-~/.cache/audit-tune/clusters}``."""
    env = os.environ.get("AUDIT_TUNE_STATE")
    return Path(env) if env else Path.home() / ".cache" / "audit-tune" / "clusters"


def state_root_or_default(state_root: str | os.PathLike[str] | None) -> Path:
    return Path(state_root) if state_root else default_state_root()


def check_name(name: str) -> str:
    ok = name and len(name) <= 40 and all(c.isalnum() or c in "-_." for c in name) and name[0].isalnum()
    if not ok:
        raise InputError(f"--name {name!r}: use 1-40 letters, digits, '-', '_' or '.', starting with a letter or digit")
    return name


def read_state(d: Path) -> JsonObject | None:
    """The ``state.json`` of cluster folder ``d``, None when there is none."""
    try:
        st = json.loads((d / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as e:
        raise ServiceError(f"{d / STATE_FILE}: unreadable state ({type(e).__name__}); "
                           "remove the folder to forget it") from None
    if not isinstance(st, dict):
        raise ServiceError(f"{d / STATE_FILE}: not an audit-tune cluster state (a JSON object); "
                           "remove the folder to forget it")
    return st


def list_clusters(state_root: str | os.PathLike[str] | None = None) -> list[str]:
    root = state_root_or_default(state_root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / STATE_FILE).is_file())
