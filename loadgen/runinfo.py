"""What a load-test record says about the cluster it ran against: the audit-tune cluster's
``state.json`` (flags in force, sink URL) and the ``--audit-*`` flags echoed in the record."""
from __future__ import annotations

import json
from pathlib import Path

from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.loadgen.kubetarget import Target
from audit_tune.sim.config import asdict as flags_asdict
from audit_tune.sim.config import parse_flags


def cluster_state(target: Target) -> JsonObject:
    """The ``state.json`` of an audit-tune cluster whose kubeconfig the target came from (else {}):
    it knows the ``--audit-*`` flags in force and the sink URL."""
    if not target.kubeconfig:
        return {}
    p = Path(target.kubeconfig).parent / "state.json"
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(st, dict) or Path(str(st.get("kubeconfig", ""))).resolve() != Path(target.kubeconfig).resolve():
        return {}
    if str(st.get("server", "")).rstrip("/") != target.server.rstrip("/"):
        return {}
    st["_path"] = str(p)
    return st


def state_flags(state: JsonObject) -> tuple[str, ...]:
    """The ``--audit-*`` flags a cluster state records (none if it records none)."""
    flags: JsonValue = state.get("audit_flags") or []
    return tuple(str(f) for f in flags) if isinstance(flags, list) else ()


def flags_record(args: tuple[str, ...]) -> JsonObject | None:
    """The ``--audit-*`` flags as given and, when they parse, as parsed (else the parse error)."""
    if not args:
        return None
    out: JsonObject = {"args": list(args)}
    try:
        out["parsed"] = flags_asdict(parse_flags(list(args)))
    except Exception as e:  # noqa: BLE001 - the flags are echoed as given either way
        out["parse_error"] = str(e)
    return out
