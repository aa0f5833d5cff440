"""The sink's store as verification reads it: only what the sink acknowledged."""
from __future__ import annotations

import json
from pathlib import Path

from audit_tune.loadgen.chain import Chain, encode_event, record_line
from audit_tune.loadgen.store import EventStore, head_path
from audit_tune.loadgen.verify_inputs import read_store


def _events(tag: str, n: int) -> list[dict]:
    return [{"auditID": f"{tag}-{i}", "level": "Metadata", "stage": "ResponseComplete",
             "stageTimestamp": "2026-12-06T10:00:00.000000Z"} for i in range(n)]


def _store(tmp_path: Path) -> Path:
    p = tmp_path / "events.jsonl"
    st = EventStore(p)
    st.append_batch(_events("a", 3))
    st.append_batch(_events("b", 2))
    st.close()
    return p


def test_reads_every_acknowledged_event(tmp_path: Path) -> None:
    sv = read_store(_store(tmp_path))
    assert sv.events == 5
    assert sv.count_by_level_stage == {("Metadata", "ResponseComplete"): 5}


def test_a_batch_past_the_head_and_a_torn_line_are_not_counted(tmp_path: Path) -> None:
    p = _store(tmp_path)
    old_head = head_path(p).read_bytes()
    st = EventStore(p)
    st.append_batch(_events("late", 4))  # written, then the head goes back: never acknowledged
    st.close()
    head_path(p).write_bytes(old_head)
    lines = p.read_bytes().splitlines()
    prev = Chain().digest(lines[-1])
    with open(p, "ab") as f:
        f.write(record_line(10, prev, 1.0, json.loads(lines[-1])["batch"] + 1, 1, encode_event({"auditID": "x"}))[:30])
    assert read_store(p).events == 5


def test_a_symlinked_store_reads_the_target_and_its_head(tmp_path: Path) -> None:
    p = _store(tmp_path)
    link = tmp_path / "elsewhere" / "link.jsonl"
    link.parent.mkdir()
    link.symlink_to(p)
    assert read_store(link).events == 5
