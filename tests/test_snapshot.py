"""``tune snapshot`` against the real Prometheus, on TSDB blocks backfilled with promtool from the
synthetic fixtures (analysis/fixtures.py). Prometheus/promtool missing -> these tests FAIL (the
``prometheus_installed`` fixture installs them or fails), they never skip."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from promfixtures import backfilled_prometheus, scenarios

from audit_tune.analysis.snapshot import FORMAT, Histogram, Snapshot
from audit_tune.cli.app import main

REL = 0.02


@pytest.fixture(scope="module")
def fixture_prom(prometheus_installed):
    with backfilled_prometheus() as (prom, truths):
        yield prom, truths


def _snap(fixture_prom, tmp_path: Path, name: str, *extra: str, capsys=None) -> tuple[int, Snapshot | None, object]:
    prom, truths = fixture_prom
    tr = truths[name]
    out = tmp_path / f"{name}.json"
    rc = main(["snapshot", "-p", prom.url, "-o", str(out), "--end", str(int(tr.end)),
               "--history", f"{int(tr.end - tr.start)}s", "--no-progress", *extra])
    return rc, (Snapshot.load(out) if rc == 0 else None), tr


@pytest.mark.parametrize("name", [n for n in scenarios() if n != "wild"])  # wild: test_prom_wild.py
def test_snapshot_matches_generator(fixture_prom, tmp_path, name):
    extra = ["--selector", 'job="apiserver"'] if name == "duplicate" else []
    rc, snap, tr = _snap(fixture_prom, tmp_path, name, *extra)
    assert rc == 0
    assert snap.format == FORMAT
    audited = {k for k, t in tr.instances.items() if t.audit}
    assert set(snap.instances) == audited
    assert snap.source.window.end == tr.end and snap.source.window.start == tr.start
    assert "@" not in snap.source.prometheus_url
    for key, t in tr.instances.items():
        if not t.audit:
            continue
        inst = snap.instances[key]
        assert inst.cluster == t.cluster
        # rates within 2% of what the generator used
        assert inst.event_rate.mean == pytest.approx(t.mean_rate, rel=REL)
        assert inst.events_increase == pytest.approx(t.events, rel=REL)
        full = t.data_from <= tr.start
        if full:
            assert inst.events_increase == pytest.approx(t.events, abs=1.0)   # exact, resets included
            # errors increase equal to the generated drops
            assert inst.errors_increase.buffered == pytest.approx(t.drops_buffered, abs=0.5)
            assert inst.errors_increase.webhook == pytest.approx(t.drops_webhook, abs=0.5)
            for lv, v in t.levels.items():
                assert inst.level_increase[lv] == pytest.approx(v, abs=0.5)
        assert inst.errors_increase.log == 0 and inst.errors_increase.truncate == 0
        # the peak series sees the highest per-scrape rate
        assert inst.event_rate_peak is not None
        assert inst.event_rate_peak.max == pytest.approx(t.peak_rate, rel=REL)
        assert inst.event_rate.max <= inst.event_rate_peak.max * 1.001
        if t.requests:
            assert inst.requests_by_verb is not None and full
            assert sum(inst.requests_by_verb.values()) == pytest.approx(t.requests, abs=1.0)
            assert inst.long_running_share == pytest.approx(t.requests_by_verb["WATCH"] / t.requests, abs=1e-9)
            assert inst.request_rate.mean == pytest.approx(t.requests / (tr.end - tr.start), rel=REL)
        else:
            assert inst.request_rate is None and inst.requests_by_verb is None
        if t.webhook_host:
            wh = inst.webhook
            assert wh is not None and wh.host == t.webhook_host
            assert wh.duration.count == pytest.approx(t.posts, rel=REL)
            assert wh.duration.mean == pytest.approx(t.latency_mean, rel=REL)
            assert wh.duration.le[-1] == math.inf and wh.duration.cum[-1] == pytest.approx(wh.duration.count, rel=1e-6)
            if full:
                for code, v in t.posts_by_code.items():
                    assert wh.requests_by_code.get(code, 0.0) == pytest.approx(v, abs=0.5)
        else:
            assert inst.webhook is None
            assert any(m.instance == key and m.item.startswith("rest_client") for m in snap.missing)


def test_drops_already_happening(fixture_prom, tmp_path):
    rc, snap, tr = _snap(fixture_prom, tmp_path, "drops")
    assert rc == 0
    hot = snap.instances["10.0.6.1:6443"]
    assert hot.errors_increase.buffered == tr.instances["10.0.6.1:6443"].drops_buffered > 100_000
    assert snap.instances["10.0.6.2:6443"].errors_increase.total == 0
    # the bursts are far above the steady rate and the drain capacity (4,000/s) in the peak series
    assert hot.event_rate_peak.max > 5000 > 4000 > 2 * hot.event_rate.mean
    assert hot.memory_bytes is not None and max(hot.memory_bytes.v) > 1.2e9 + 9000 * 6000
    assert hot.audit_filter_latency is not None and hot.audit_filter_latency.count > 0


def test_bursty_peaks_exceed_step_average(fixture_prom, tmp_path):
    rc, snap, tr = _snap(fixture_prom, tmp_path, "bursty", "--step", "60s")
    inst = snap.instances["10.0.3.1:6443"]
    assert snap.source.window.step == 60
    # 30 s bursts at 6,000/s: a 60 s rate averages them to ~3,150/s, the 5 s peak series keeps them
    assert inst.event_rate.max < 0.6 * inst.event_rate_peak.max
    assert inst.event_rate_peak.window == "5s"
    assert inst.event_rate_peak.max == pytest.approx(tr.instances["10.0.3.1:6443"].peak_rate, rel=REL)


def test_skewed_instances(fixture_prom, tmp_path):
    rc, snap, _ = _snap(fixture_prom, tmp_path, "skewed")
    r = {k: v.event_rate.mean for k, v in snap.instances.items()}
    assert r["10.0.4.1:6443"] == pytest.approx(3 * r["10.0.4.2:6443"], rel=0.02)


def test_webhook_slow_quantiles(fixture_prom, tmp_path):
    rc, snap, _ = _snap(fixture_prom, tmp_path, "webhook-slow")
    wh = snap.instances["10.0.5.1:6443"].webhook
    # lognormal median 0.8 s: the bucket-interpolated median lands in the (0.5, 1] bucket
    assert 0.5 < wh.p(0.5) <= 1.0
    assert wh.p(0.99) > 4
    assert 0 < wh.error_ratio < 0.01
    assert wh.size is not None and wh.size.count == wh.duration.count
    # an admission webhook also POSTs: the busiest host is taken, and that choice is explained
    assert wh.host == "audit-sink.example:8443"
    note = next(m for m in snap.missing if m.item == "webhook host")
    assert "kyverno-svc.kyverno.svc:443" in note.why and "--webhook-host" in note.fix
    rc, snap, _ = _snap(fixture_prom, tmp_path, "webhook-slow", "--webhook-host", "kyverno-svc.kyverno.svc:443")
    assert rc == 0 and snap.instances["10.0.5.1:6443"].webhook is None   # no latency histogram for that host
    assert any(m.item == "rest_client_request_duration_seconds" for m in snap.missing)


def test_missing_series_explained_per_item(fixture_prom, tmp_path, capsys):
    rc, snap, _ = _snap(fixture_prom, tmp_path, "missing")
    assert rc == 0
    err = capsys.readouterr().err
    by = {(m.instance, m.item): m for m in snap.missing}
    m = by[("10.0.7.1:6443", "apiserver_audit_event_total")]
    assert "no apiserver_audit_event_total for instance 10.0.7.1:6443 in the last 3h" in m.why
    assert "--audit-policy-file" in m.why and m.fix
    assert "10.0.7.1:6443" not in snap.instances
    i2 = snap.instances["10.0.7.2:6443"]
    assert i2.webhook is None and i2.audit_filter_latency is None and i2.memory_bytes is None
    for item in ("rest_client_request_duration_seconds", "apiserver_request_filter_duration_seconds",
                 "process_resident_memory_bytes"):
        assert ("10.0.7.2:6443", item) in by, item
    assert "--audit-webhook-config-file" in by[("10.0.7.2:6443", "rest_client_request_duration_seconds")].why
    i3 = snap.instances["10.0.7.3:6443"]
    assert i3.request_rate is None and ("10.0.7.3:6443", "apiserver_request_total") in by
    assert "covers only 1h of the 3h window" in by[("10.0.7.3:6443", "apiserver_audit_event_total")].why
    assert i3.webhook is not None and i3.webhook.size is not None
    # every explanation is on stderr too, one line each
    for mm in snap.missing:
        assert mm.why in err


def test_duplicate_scrape_jobs_explained(fixture_prom, tmp_path):
    rc, snap, tr = _snap(fixture_prom, tmp_path, "duplicate")
    assert rc == 0
    dup = [m for m in snap.missing if m.item == "duplicate scrape"]
    assert [m.instance for m in dup] == ["10.4.0.1:6443"]
    assert "2 jobs (apiserver, kubernetes-apiservers)" in dup[0].why and "--selector" in dup[0].fix
    t = tr.instances["10.4.0.1:6443"]
    assert snap.instances["10.4.0.1:6443"].event_rate.mean == pytest.approx(2 * t.mean_rate, rel=REL)
    rc, snap, _ = _snap(fixture_prom, tmp_path, "duplicate", "--selector", 'job="apiserver"')
    assert not [m for m in snap.missing if m.item == "duplicate scrape"]
    assert snap.source.selector == 'job="apiserver"'


def test_counter_reset_handled_and_noted(fixture_prom, tmp_path):
    rc, snap, tr = _snap(fixture_prom, tmp_path, "steady")
    inst = snap.instances["10.0.1.1:6443"]
    assert inst.events_increase == tr.instances["10.0.1.1:6443"].events
    assert min(inst.event_rate.v) > 0      # no negative or zero dip at the restart
    assert any("reset 1 time" in m.why for m in snap.missing)


def test_three_clusters(fixture_prom, tmp_path):
    rc, snap, tr = _snap(fixture_prom, tmp_path, "clusters")
    assert snap.source.cluster_label == "cluster"       # auto-detected
    assert snap.clusters() == {"prod-eu": ["10.1.0.1:6443", "10.1.0.2:6443"],
                               "prod-us": ["10.2.0.1:6443", "10.2.0.2:6443"],
                               "staging": ["10.3.0.1:6443", "10.3.0.2:6443"]}
    rc, snap, _ = _snap(fixture_prom, tmp_path, "clusters", "-l", "prod-us")
    assert rc == 0 and set(snap.instances) == {"10.2.0.1:6443", "10.2.0.2:6443"}
    assert snap.source.selector == 'cluster="prod-us"'
    rc, snap, _ = _snap(fixture_prom, tmp_path, "clusters", "--prometheus-label", "cluster", "--cluster", "staging",
                        "--instance", "10.3.0.2:6443")
    assert rc == 0 and list(snap.instances) == ["10.3.0.2:6443"]


def test_nothing_usable_exits_4(fixture_prom, tmp_path, capsys):
    rc, _, _ = _snap(fixture_prom, tmp_path, "clusters", "-l", "no-such-cluster")
    assert rc == 4
    err = capsys.readouterr().err
    assert err.count("tune: error:") == 1 and "no-such-cluster" in err and "Traceback" not in err
    rc, _, _ = _snap(fixture_prom, tmp_path, "missing", "--instance", "10.0.7.1:6443")
    assert rc == 4
    err = capsys.readouterr().err
    assert "no apiserver_audit_event_total for instance 10.0.7.1:6443" in err and "--audit-policy-file" in err
    assert not (tmp_path / "missing.json").exists()


def test_step_raised_to_stay_under_11000_points(fixture_prom, tmp_path, capsys):
    prom, truths = fixture_prom
    tr = truths["steady"]          # the earliest scenario: nothing else in the 60 days before it
    out = tmp_path / "long.json"
    rc = main(["snapshot", "-p", prom.url, "-o", str(out), "--end", str(int(tr.end)), "--history", "60d",
               "--step", "15s"])
    assert rc == 0
    snap = Snapshot.load(out)
    step, least = snap.source.window.step, 60 * 86400 / 10999
    assert step % tr.scrape == 0 and least <= step < least + tr.scrape   # a whole multiple of the scrape interval
    assert "11000 points" in capsys.readouterr().err
    inst = snap.instances["10.0.1.1:6443"]
    assert len(inst.event_rate) <= 11000
    assert any("covers only" in m.why and "of the 60d window" in m.why for m in snap.missing)


def test_roundtrip_and_sample(fixture_prom, tmp_path):
    rc, snap, _ = _snap(fixture_prom, tmp_path, "webhook-slow")
    p = tmp_path / "copy.json"
    snap.save(p)
    again = Snapshot.load(p)
    assert again.to_dict() == snap.to_dict()
    raw = json.loads(p.read_text())
    assert raw["instances"]["10.0.5.1:6443"]["webhook"]["duration_buckets"]["le"][-1] == "+Inf"


def test_bundled_sample_is_valid():
    from audit_tune.analysis.snapshot import sample_path

    snap = Snapshot.load(sample_path())
    assert snap.usable
    assert sum(i.errors_increase.buffered for i in snap.instances.values()) > 0


def test_histogram_quantile_matches_promql_semantics():
    h = Histogram([0.1, 0.5, 1.0, math.inf], [10, 50, 90, 100], 40.0, 100)
    assert h.quantile(0.5) == pytest.approx(0.5)
    assert h.quantile(0.3) == pytest.approx(0.1 + 0.4 * (30 - 10) / 40)
    assert h.quantile(0.99) == 1.0     # in the +Inf bucket: the highest finite bound
    assert Histogram().quantile(0.5) is None


def test_load_rejects_bad_files(tmp_path):
    from audit_tune.basics.errors import InputError

    p = tmp_path / "bad.json"
    p.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        Snapshot.load(p)
    p.write_text(json.dumps({"format": "other/v9"}))
    with pytest.raises(InputError, match="audit-tune-snapshot/v1"):
        Snapshot.load(p)
    good = {"format": FORMAT, "source": {"prometheus_url": "x", "window": {"start": 0, "end": 1, "step": 1}},
            "instances": {"a": {"event_rate": {"t": [0, 1], "v": [1]}}}, "missing": []}
    p.write_text(json.dumps(good))
    with pytest.raises(InputError, match=r"instances\.a\.event_rate: t has 2 points but v has 1"):
        Snapshot.load(p)
    with pytest.raises(InputError, match="no such file"):
        Snapshot.load(tmp_path / "nope.json")


def test_prometheus_sample_limit_splits_queries(prometheus_installed, tmp_path, capsys):
    """A Prometheus with a tiny --query.max-samples refuses whole-window queries; the snapshot splits
    them (window increases into chunks, range queries into halves) and gets the same numbers."""
    with backfilled_prometheus(["steady", "webhook-slow"], prom_args=("--query.max-samples=2000",)) as (prom, truths):
        for name in ("steady", "webhook-slow"):
            tr = truths[name]
            out = tmp_path / f"{name}.json"
            rc = main(["snapshot", "-p", prom.url, "-o", str(out), "--end", str(int(tr.end)),
                       "--history", f"{int(tr.end - tr.start)}s"])
            err = capsys.readouterr().err
            assert rc == 0, err
            assert "split into" in err
            snap = Snapshot.load(out)
            for key, t in tr.instances.items():
                inst = snap.instances[key]
                assert inst.events_increase == pytest.approx(t.events, rel=0.002)
                assert sum(inst.level_increase.values()) == pytest.approx(sum(t.levels.values()), rel=0.002)
                assert sum(inst.requests_by_verb.values()) == pytest.approx(t.requests, rel=0.002)
                assert inst.request_rate.mean == pytest.approx(t.requests / (tr.end - tr.start), rel=REL)
                assert len(inst.request_rate) == len(inst.event_rate)
                assert inst.webhook.duration.count == pytest.approx(t.posts, rel=0.002)
                assert inst.errors_increase.webhook == pytest.approx(t.drops_webhook, rel=0.01, abs=1)
