"""The accounting's baseline and residual (``loadgen/quiet.py``)."""
from audit_tune.loadgen import quiet


def test_the_baseline_reads_the_sink_before_the_apiserver(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(quiet, "scrape_totals", lambda target: calls.append("apiserver") or {"event_total": 7.0,
                                                                                           "errors": {}})
    a0, s0 = quiet.read_baseline(object(), lambda: calls.append("sink") or {"events_stored": 5})
    assert calls == ["sink", "apiserver"]
    assert a0["event_total"] == 7.0 and s0["events_stored"] == 5


def test_an_event_stored_between_the_reads_cannot_count_as_lost():
    # counted before a0 (5 events), stored after s0 was read: delivered exceeds events_total
    a0, a1 = {"event_total": 5.0, "errors": {}}, {"event_total": 10.0, "errors": {}}
    s0, s1 = {"events_stored": 0}, {"events_stored": 6}
    acc = quiet.accounting(a0, a1, s0, s1)
    assert acc["residual"] == -1 and acc["lost"] == 0
    # an event counted but neither stored nor dropped is lost
    acc = quiet.accounting(a0, a1, s0, {"events_stored": 4})
    assert acc["residual"] == 1 and acc["lost"] == 1
