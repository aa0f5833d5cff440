"""Audit log input (analysis.auditlog, tune/auditlog_input.py): decoding, rotated and gzipped files,
exact arrival series and bursts, sizes, request mix, skipped lines, completeness, the sink store,
the CLI (--audit-log on snapshot, recommend, report, simulate) and the bundled real sample."""
from __future__ import annotations

import gzip
import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from audit_tune.analysis.auditlog import decode as dec
from audit_tune.analysis.auditlog import read_logs, sample_path, to_snapshot
from audit_tune.analysis.auditlog.reader import discover
from audit_tune.analysis.auditlog.series import Bins, bursts, stretches
from audit_tune.analysis.calibrate import calibrate
from audit_tune.basics.errors import InputError, NotEnoughData
from bench.bench_auditlog import make_line

T0 = 1_790_000_000.0


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write(path: Path, times: list[float], seed: int = 1, gz: bool = False) -> list[bytes]:
    rnd = random.Random(seed)
    lines = [make_line(t, i, rnd) for i, t in enumerate(times)]
    data = b"".join(x + b"\n" for x in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return lines


def _times(n: int, rate: float, start: float = T0) -> list[float]:
    return [start + i / rate for i in range(n)]


def test_parse_time_matches_datetime() -> None:
    for t in (T0, T0 + 0.000001, T0 + 59.999999, T0 + 86400 * 40 + 0.5):
        assert dec.parse_time(_ts(t)) == pytest.approx(t, abs=1e-6)
    assert dec.parse_time("2026-12-06T19:00:00.5+01:00") == pytest.approx(
        datetime(2026, 12, 6, 18, 0, 0, 500000, tzinfo=UTC).timestamp())
    assert dec.parse_time("yesterday") is None


def test_rotated_and_gzipped_files_are_read_in_time_order(tmp_path: Path) -> None:
    d = tmp_path / "apiserver-a"
    d.mkdir()
    # lumberjack names: backups carry their rotation time; the live file has the newest events
    _write(d / "audit-2026-01-01T00-00-00.000.log.gz", _times(3000, 100), gz=True)
    _write(d / "audit-2026-01-01T00-00-30.000.log", _times(2000, 100, T0 + 30))
    _write(d / "audit.log", _times(1000, 100, T0 + 50))
    r = read_logs([str(d)], jobs=2)
    inst = r.instances["apiserver-a"]
    assert inst.events == 6000 and len(inst.files) == 3
    assert inst.files[0].endswith(".log.gz") and inst.files[-1].endswith("audit.log")
    assert inst.bins.t0 == pytest.approx(T0) and inst.bins.t1 == pytest.approx(T0 + 60, abs=0.11)
    assert r.skip_messages() == []
    snap = to_snapshot(r, 10.0)
    ev = snap["instances"]["apiserver-a"]
    assert sum(v * 10.0 for v in ev["event_rate"]["v"]) == pytest.approx(6000)
    assert ev["events_increase"] == 6000
    # RR + RC per request in make_line: 3000 requests, by verb
    assert sum(ev["requests_by_verb"].values()) == pytest.approx(3000, abs=8)


def test_instance_names_from_spec_or_file(tmp_path: Path) -> None:
    _write(tmp_path / "kube-apiserver-audit.log", _times(10, 10))
    assert discover([str(tmp_path / "kube-apiserver-audit.log")])[0].instance == "kube-apiserver-audit"
    assert discover([f"10.0.0.1:6443={tmp_path / 'kube-apiserver-audit.log'}"])[0].instance == "10.0.0.1:6443"
    with pytest.raises(InputError, match="no such file"):
        discover([str(tmp_path / "nope.log")])


def test_bursts_and_peaks_are_exact(tmp_path: Path) -> None:
    # 50 ev/s for 120 s, plus 400 events inside one second at t=63 s: a 1 s burst
    base = _times(6000, 50)
    burst = [T0 + 63 + i / 400 for i in range(400)]
    _write(tmp_path / "a.log", sorted(base + burst))
    r = read_logs([f"a={tmp_path / 'a.log'}"], jobs=1)
    b = {x["window"]: x for x in bursts(r.instances["a"].bins, 30.0)}
    assert b[1.0]["peak_rate"] == pytest.approx(450, abs=1)
    assert b[10.0]["peak_rate"] == pytest.approx((500 + 400) / 10, abs=1)
    assert b[60.0]["peak_over_mean"] < b[1.0]["peak_over_mean"]
    snap = to_snapshot(r, 30.0)
    inst = snap["instances"]["a"]
    assert max(inst["event_rate_peak"]["v"]) == pytest.approx(450, abs=1)
    assert max(inst["event_rate"]["v"]) == pytest.approx((1500 + 400) / 30, abs=0.1)
    # the exact trace is kept (small log: all of it) and the calibrated model replays it at x1
    m = calibrate(snap, "a")
    assert m.peak_burst_rate == pytest.approx(450, abs=1)
    assert sum(len(t) for _, _, t in m.trace) == 6400
    exact = m.trace_between(0.0, m.duration)
    assert exact is not None and len(exact) == 6400
    sc = m.scenario(m_flags(), seed=1)
    assert sc.workload.arrivals.process == "trace" and len(sc.workload.arrivals.trace) == 6400
    assert m.scenario(m_flags(), seed=1, scale=2.0).workload.arrivals.process == "poisson"
    assert m.event_size == round(np.mean([len(x) for x in (tmp_path / "a.log").read_bytes().split(b"\n") if x]))


def m_flags():
    from audit_tune.sim.config import AuditFlags

    return AuditFlags()


def test_stretches_keep_the_busiest_windows_when_the_log_is_large() -> None:
    b = Bins()
    t = np.arange(0, 3600, 0.01) + T0  # 100 ev/s for an hour = 360k events
    spike = T0 + 2000 + np.arange(0, 1, 0.001)
    b.add(np.concatenate([t, spike]))
    rs = stretches(b, span=300.0, k=2, max_events=70_000)
    assert len(rs) == 2
    assert any(a <= T0 + 2000 < e for a, e in rs)
    assert all(e - a == pytest.approx(300.0) for a, e in rs)


def test_bad_lines_are_counted_once_per_file_with_reasons(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    good = _write(p, _times(200, 10))
    bad = [
        make_line(T0 + 19.0, 3, random.Random(3)),  # 0.9 s back: concurrent requests reorder, kept
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v2","stage":"ResponseComplete","stageTimestamp":"' + _ts(T0 + 5).encode() + b'"}',
        b'{"kind":"Pod","apiVersion":"v1"}',
        b"this is not json",
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","stageTimestamp":"\xff\xfe"}',
        make_line(T0 - 3600, 1, random.Random(2)),  # an hour back: a concatenated file
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","stageTimestamp":"soon"}',
    ]
    with open(p, "ab") as f:
        f.write(b"\n".join(bad) + b"\n" + good[1][:100])  # the last line is being written
    r = read_logs([str(p)], jobs=1)
    msgs = r.skip_messages()
    assert len(msgs) == 1
    sk = r.instances["audit"].skips[0]
    assert dict(sk.reasons) == {dec.UNKNOWN_VERSION: 1, dec.NOT_EVENT: 1, dec.NOT_JSON: 1, dec.NON_UTF8: 1,
                                dec.OUT_OF_ORDER: 1, dec.BAD_TIME: 1, dec.TRUNCATED: 1}
    assert r.instances["audit"].events == 201  # the 200 + the slightly reordered one
    assert "truncated last line (line 208)" in msgs[0]


def test_cli_snapshot_reports_skips_and_exit_codes(tmp_path: Path, tune_main, capsys) -> None:
    p = tmp_path / "audit.log"
    _write(p, _times(600, 10))
    with open(p, "ab") as f:
        f.write(b"garbage\n")
    out = tmp_path / "snap.json"
    assert tune_main(["snapshot", "--audit-log", f"api={p}", "-o", str(out), "--step", "5s", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped 1 of 601 lines: 1 not JSON (line 601)") == 1
    snap = json.loads(out.read_text())
    assert snap["audit_log"]["instances"]["api"]["sources"]["event_rate"] == "audit log"
    assert snap["audit_log"]["instances"]["api"]["sources"]["webhook"].startswith("absent")
    assert snap["audit_log"]["instances"]["api"]["completeness"]["complete"] is True
    # nothing usable: exit 1, one line, no traceback
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"not an audit log\n\xff\n")
    assert tune_main(["snapshot", "--audit-log", str(junk), "-o", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "no usable audit event" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    # too short to decide: exit 4
    short = tmp_path / "short.log"
    _write(short, _times(20, 10))
    assert tune_main(["snapshot", "--audit-log", str(short), "-o", str(tmp_path / "y.json"), "--step", "15s"]) == 4
    assert "too short" in capsys.readouterr().err


def test_batch_mode_log_and_store_may_miss_events(tmp_path: Path) -> None:
    from audit_tune.loadgen.store import EventStore

    p = tmp_path / "audit.log"
    lines = _write(p, _times(400, 10))
    r = read_logs([str(p)], jobs=1)
    snap = to_snapshot(r, 5.0, log_mode="batch")
    comp = snap["audit_log"]["instances"]["audit"]["completeness"]
    assert comp["complete"] is False and "buffered" in comp["lost_plugins"] and "headroom" in comp["note"]
    # with Prometheus' counters the gap is sized
    prom = {"source": {"window": {"start": T0 + 5, "end": T0 + 40, "step": 5.0}},
            "instances": {"10.0.0.1:6443": {"errors_increase": {"buffered": 40.0, "webhook": 0.0, "log": 0.0, "truncate": 0.0},
                                            "events_increase": 440.0, "webhook": None}}}
    snap = to_snapshot(r, 5.0, log_mode="batch", prom=prom, prom_url="http://prom")
    al = snap["audit_log"]["instances"]["audit"]
    assert al["completeness"]["missing_events"] == 40.0 and al["prometheus_instance"] == "10.0.0.1:6443"
    assert snap["instances"]["audit"]["errors_increase"]["buffered"] == 40.0
    assert al["sources"]["errors_increase"].startswith("prometheus")
    # tune sink's store: the events as received, sizes of the raw events
    store = tmp_path / "store.jsonl"
    st = EventStore(store, fsync="never")
    evs = [json.loads(x) for x in lines]
    for k in range(0, 400, 100):
        st.append_batch(evs[k:k + 100], k // 100)
    st.close()
    rs = read_logs([f"sink={store}"], jobs=1)
    assert rs.instances["sink"].events == 400 and rs.instances["sink"].fmt == "store"
    snap = to_snapshot(rs, 5.0)
    assert snap["audit_log"]["instances"]["sink"]["completeness"]["lost_plugins"] == ["buffered", "webhook", "truncate"]
    mean = np.mean([len(json.dumps(e, separators=(",", ":"), ensure_ascii=False)) for e in evs])
    assert snap["audit_log"]["instances"]["sink"]["sizes"]["mean_bytes"] == pytest.approx(mean, abs=0.1)


def test_legacy_format_lines_are_read(tmp_path: Path) -> None:
    p = tmp_path / "legacy.log"
    rows = []
    for i in range(300):
        t = _ts(T0 + i / 10).replace(".", ",") if False else _ts(T0 + i / 10)
        rows.append(f'{t} AUDIT: id="{i:08d}" stage="ResponseComplete" ip="127.0.0.1" method="list" '
                    f'user="admin" groups="\\"system:masters\\"" as="<self>" asgroups="<lookup>" '
                    f'user-agent="kubectl/v1.35" namespace="default" uri="/api/v1/namespaces/default/pods" response="200"')
    p.write_text("\n".join(rows) + "\n")
    r = read_logs([str(p)], jobs=1)
    assert r.instances["legacy"].events == 300 and r.instances["legacy"].fmt == "legacy"
    snap = to_snapshot(r, 5.0)
    assert any(m["item"] == "level_increase" for m in snap["missing"])
    assert snap["instances"]["legacy"]["requests_by_verb"] == {"list": 300.0}


def test_request_mix_feeds_policy_impact(tmp_path: Path) -> None:
    from audit_tune.analysis.policy_impact import RequestMix

    p = tmp_path / "audit.log"
    _write(p, _times(1000, 20))
    snap = to_snapshot(read_logs([f"api={p}"], jobs=1), 5.0)
    mix = RequestMix.from_snapshot(snap)
    im = mix.instances["api"]
    assert im.requests == pytest.approx(500, abs=8)
    assert all(e.user is not None and e.user.user.startswith("system:serviceaccount:") for e in im.entries)
    assert {e.namespace for e in im.entries} <= {f"ns-{k}" for k in range(7)}


def test_simulate_replays_the_log_exactly(tmp_path: Path, tune_main, capsys) -> None:
    p = tmp_path / "audit.log"
    _write(p, _times(3000, 100))
    code = tune_main(["simulate", "--audit-log", str(p), "-f", "json", "--no-progress",
                      "--audit-webhook-batch-throttle-qps=0.5", "--audit-webhook-batch-max-size=50",
                      "--audit-webhook-batch-buffer-size=500"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["events_total"] == 3000
    # 30 s of 100 ev/s, evenly spaced as logged, against 0.5 x 50 = 25 ev/s of drain, a throttle
    # bucket of 15 batches and a buffer of 500: 3000 - 750 - 750 - 500 = 1000 lost (one batch either way)
    assert d["errors"]["buffered"] + d["delivered"] == 3000
    assert abs(d["errors"]["buffered"] - 1000) <= 50


def test_bundled_sample_recommends_offline(tune_main, capsys) -> None:
    assert sample_path().exists() and sample_path().stat().st_size < 300_000
    code = tune_main(["recommend", "--audit-log", "sample", "-f", "json", "--no-progress", "--seeds", "2"])
    cap = capsys.readouterr()
    assert code in (0, 3), cap.err
    rep = json.loads(cap.out)
    assert rep["config"]["source"]["kind"] == "audit log"
    cal = rep["calibration"][0]
    assert cal["exact_trace_events"] > 1000
    b = {x["window"]: x for x in cal["observed_bursts"]}
    assert b[1.0]["peak_over_step"] > 2  # the sample's 1 s bursts stand out of their step
    assert cal["sources"]["event_size"].startswith("audit log")
    assert rep["recommended"] is not None


def test_table_shows_the_bursts(tune_main, capsys) -> None:
    code = tune_main(["recommend", "--audit-log", "sample", "--no-progress", "--seeds", "1"])
    out = capsys.readouterr().out
    assert code in (0, 3)
    assert "bursts in the audit log, sample: peak 100ms" in out


def test_not_enough_data_is_exit_4_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    _write(p, _times(10, 10))
    with pytest.raises(NotEnoughData):
        to_snapshot(read_logs([str(p)], jobs=1), 15.0)


def test_report_lists_the_bursts(tmp_path: Path, tune_main, capsys) -> None:
    code = tune_main(["report", "--audit-log", "sample", "--seeds", "1", "--no-progress", "--reports-dir", str(tmp_path)])
    capsys.readouterr()
    assert code in (0, 3)
    md = (tmp_path / "audit-log" / "report.md").read_text()
    assert "**Bursts (audit log)**: peak 100ms" in md


def test_progress_line_gives_rate_and_eta() -> None:
    from audit_tune.analysis.auditlog.scan import RateLine

    seen: list[str] = []
    line = RateLine(seen.append, every=0.0, after=0.0)
    line(25 * 2**20, 100 * 2**20, 50_000)
    assert len(seen) == 1 and "25 of 100 MiB (25%)" in seen[0] and "lines/s" in seen[0] and "ETA" in seen[0]


def test_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    import tracemalloc

    from audit_tune.analysis.auditlog.reader import LogFile
    from audit_tune.analysis.auditlog.scan import scan_file

    peaks = []
    for n in (20_000, 80_000):
        p = tmp_path / f"a{n}.log"
        _write(p, _times(n, 200))
        tracemalloc.start()
        res = scan_file(LogFile("a", str(p), p.stat().st_size))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert res.events == n
    # four times the lines (and bytes): the peak is the 4 MiB chunks and their lines, not the file
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_large_logs_keep_the_busiest_stretches_exactly(tmp_path: Path) -> None:
    # 20 ev/s for 10 min with a 1 s burst of 500 at 300 s; keep at most 2,000 events exactly
    base = _times(12_000, 20)
    burst = [T0 + 300.2 + i / 500 for i in range(500)]
    _write(tmp_path / "a.log", sorted(base + burst))
    r = read_logs([f"a={tmp_path / 'a.log'}"], jobs=1, trace_max_events=2_000)
    tr = r.instances["a"].trace
    assert tr and sum(len(t) for _, _, t in tr) <= 2_000
    a, b, t = next(x for x in tr if x[0] <= T0 + 300.5 < x[1])
    want = sum(1 for x in sorted(base + burst) if a <= x < b)
    assert len(t) == want and np.all(np.diff(t) >= 0)
    snap = to_snapshot(r, 15.0)
    assert snap["audit_log"]["instances"]["a"]["trace"][0]["whole_log"] is False


def test_block_timestamps_equal_datetime() -> None:
    from audit_tune.analysis.auditlog.block import stamps

    rnd = random.Random(7)
    ts = [rnd.uniform(-2e9, 4e9) for _ in range(20_000)]
    ts += [951782400.0, 951868799.999999, 0.0, 4107542399.999999, 1709164800.5]  # leap days, 1970, 2100-02-28
    txt = [_ts(t) for t in ts]
    got = stamps(txt)
    assert got is not None
    want = [datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in txt]
    assert got.tolist() == want  # bit for bit
    for bad in ("2026-02-29T00:00:00.000000Z", "2024-02-30T00:00:00.000000Z", "2024-13-01T00:00:00.000000Z",
                "2024-01-01T24:00:00.000000Z", "2024-01-01T00:00:60.000000Z", "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00.000000+00:00", "2024-01-01T00:00:00.0000000Z", "2024-01-0aT00:00:00.000000Z",
                "2024-01-01T00:00:00.00000\u00e9Z"):
        assert stamps([txt[0], bad]) is None, bad


def _same_result(a, b) -> None:
    assert (a.events, a.first, a.last, a.fmt) == (b.events, b.first, b.last, b.fmt)
    assert a.bins.start == b.bins.start and np.array_equal(a.bins.counts, b.bins.counts)
    assert a.sizes.by_key == b.sizes.by_key
    assert a.mix.raw == b.mix.raw and a.mix.groups == b.mix.groups and a.mix.folded == b.mix.folded
    assert (a.skips.lines, a.skips.used, a.skips.reasons, a.skips.examples) == \
        (b.skips.lines, b.skips.used, b.skips.reasons, b.skips.examples)
    assert (a.collected is None) == (b.collected is None)
    if a.collected is not None:
        assert np.array_equal(a.collected, b.collected)


def test_block_path_gives_the_line_by_line_result(tmp_path: Path, monkeypatch) -> None:
    from audit_tune.analysis.auditlog import reader, scan
    from audit_tune.analysis.auditlog.block import decode_block
    from audit_tune.analysis.auditlog.reader import LogFile
    from audit_tune.analysis.auditlog.scan import scan_file

    rnd = random.Random(5)
    rows = [make_line(T0 + i / 50, i, rnd) for i in range(3000)]
    assert decode_block(memoryview(b"".join(x + b"\n" for x in rows))) is not None  # clean lines: one call
    # every way a line can leave the block path, spread over the blocks
    rows[100] = re.sub(rb'"username":"[^"]*"', b'"username":"alice"', rows[100])  # a new user, in a clean block
    rows[100] = re.sub(rb'"groups":\[[^]]*\]', b'"groups":["devs"]', rows[100])
    rows[200] = rows[200].replace(b'"objectRef":{', b'"objectRefX":{')  # a non-resource request
    rows[210] = rows[210].replace(b'"requestURI":"/api', b'"requestURI":"/healthz?verbose=1&x=/api').replace(
        b'"objectRef":{', b'"objectRefX":{')
    rows[300] = rows[300] + b"\r"
    rows[400] = b""
    rows[500] = rows[500].replace(b'"level":"Metadata"', b'"level":"Weird"').replace(b'"level":"Request"', b'"level":"Weird"')
    rows[600] = rows[600].replace(b'"stage":"', b'"stage":"X').replace(b'"stage":"XRe', b'"stage":"Re')
    rows[700] = rows[700].replace(b'Z","stageTimestamp', b'Z","stageTimestampX')
    rows[900] = rows[900].replace(b'"stageTimestamp":"', b'"stageTimestamp":" ')
    rows[1000] = make_line(T0 - 3600, 1000, rnd)  # out of order
    rows[1100] = b'{"kind":"Pod","apiVersion":"v1"}'
    rows[1200] = b"not json"
    rows[1300] = b"  " + rows[1300]
    rows[1400] = rows[1400] + b" " + rows[1401]  # two events on one line
    rows[1500] = rows[1500].replace(b'"verb":"', b'"verb":"custom')
    rows[1600] = rows[1600].replace(b'"apiVersion":"audit.k8s.io/v1"', b'"apiVersion":"audit.k8s.io/v1beta1"')
    rows[1700] = b"\xff" + rows[1700]
    stamp = _ts(T0 + 1800 / 50).encode()
    rows[1800] = rows[1800].replace(stamp + b'"}', stamp.replace(b"Z", b"+00:00") + b'"}').replace(
        b'"stageTimestamp":"' + stamp, b'"stageTimestamp":"' + stamp.replace(b"Z", b"+00:00"))
    p = tmp_path / "mixed.log"
    p.write_bytes(b"".join(x + b"\n" for x in rows) + rows[5][:200])  # and a truncated last line
    monkeypatch.setattr(reader, "CHUNK", 16 << 10)  # many blocks: clean ones and ones with bad lines
    seen: list[bool] = []

    def counted(buf: memoryview):  # noqa: ANN202
        b = decode_block(buf)
        seen.append(b is not None)
        return b

    monkeypatch.setattr(scan, "decode_block", counted)
    f = LogFile("a", str(p), p.stat().st_size)
    fast, slow = scan_file(f, keep_upto=1e9), scan_file(f, keep_upto=1e9, fast=False)
    assert seen.count(True) > 100 and seen.count(False) >= 10  # both paths ran
    _same_result(fast, slow)
    assert fast.skips is not None and set(fast.skips.reasons) == {
        dec.NOT_EVENT, dec.NOT_JSON, dec.TRUNCATED, dec.NON_UTF8, dec.OUT_OF_ORDER, dec.BAD_TIME}
    assert "alice" in fast.mix.groups and fast.mix.groups["alice"] == ("devs",)
    assert any(k[3] == "/healthz" for k in fast.mix.raw) and any(k[4] == "Weird" for k in fast.mix.raw)
    # a clean file: the block path and the line-by-line one agree too
    q = tmp_path / "clean.log"
    _write(q, _times(5000, 100))
    g = LogFile("b", str(q), q.stat().st_size)
    _same_result(scan_file(g, collect=[(T0 + 3, T0 + 9)]), scan_file(g, collect=[(T0 + 3, T0 + 9)], fast=False))


def test_one_or_two_processes_give_the_same_snapshot(tmp_path: Path) -> None:
    for inst in ("a", "b"):
        d = tmp_path / inst
        d.mkdir()
        _write(d / "audit-2026-01-01T00-00-00.000.log.gz", _times(3000, 100), seed=2, gz=True)
        _write(d / "audit-2026-01-01T00-00-30.000.log", _times(4000, 100, T0 + 30), seed=3)
        _write(d / "audit.log", _times(2000, 50, T0 + 70), seed=4 if inst == "a" else 5)
    specs = [str(tmp_path / "a"), str(tmp_path / "b")]
    snaps = []
    for jobs in (1, 2):
        s = to_snapshot(read_logs(specs, jobs=jobs, trace_max_events=4000), 5.0)
        s.pop("recorded_at")
        s["audit_log"].pop("read_seconds")
        snaps.append(json.dumps(s, sort_keys=True))
    assert snaps[0] == snaps[1]
    assert json.loads(snaps[0])["audit_log"]["instances"]["a"]["events"] == 9000


def test_a_line_longer_than_the_buffer_is_read_whole(tmp_path: Path, monkeypatch) -> None:
    from audit_tune.analysis.auditlog import reader
    from audit_tune.analysis.auditlog.reader import LogFile
    from audit_tune.analysis.auditlog.scan import scan_file

    p = tmp_path / "audit.log"
    _write(p, _times(300, 10))
    f = LogFile("a", str(p), p.stat().st_size)
    whole = scan_file(f, keep_upto=1e9)
    monkeypatch.setattr(reader, "CHUNK", 256)  # every line (0.9-2 KB) is longer: the buffer grows
    small = scan_file(f, keep_upto=1e9)
    assert small.events == 300 and small.skips is not None and not small.skips.reasons
    _same_result(small, whole)


@pytest.mark.parametrize("gz", [False, True])
def test_a_line_past_the_bound_is_skipped_without_holding_it(tmp_path: Path, gz: bool) -> None:
    """One endless line (a log cut into garbage, or a gzip bomb: 200 MiB of one line, 200 kB on
    disk compressed) between good lines: it is skipped and counted, the lines around it are read,
    and memory stays at the bound, not the line (tracemalloc: bytearrays count)."""
    import tracemalloc

    from audit_tune.analysis.auditlog.reader import MAX_LINE, LogFile
    from audit_tune.analysis.auditlog.scan import scan_file

    rnd = random.Random(4)
    before = [make_line(t, i, rnd) for i, t in enumerate(_times(50, 10))]
    after = [make_line(t, 50 + i, rnd) for i, t in enumerate(_times(50, 10, T0 + 5.0))]
    huge = 200 << 20
    p = tmp_path / ("a.log.gz" if gz else "a.log")
    with (gzip.open(p, "wb", compresslevel=1) if gz else open(p, "wb")) as f:
        f.write(b"\n".join(before) + b"\n")
        block = b"x" * (1 << 20)
        for _ in range(huge // len(block)):
            f.write(block)
        f.write(b"\n" + b"\n".join(after) + b"\n")
    tracemalloc.start()
    res = scan_file(LogFile("a", str(p), p.stat().st_size))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.events == 100
    assert res.skips is not None and dict(res.skips.reasons) == {dec.TOO_LONG: 1}
    assert res.skips.examples[dec.TOO_LONG] == [51]
    assert peak < 2 * MAX_LINE < huge, peak


def test_an_endless_last_line_is_skipped(tmp_path: Path) -> None:
    from audit_tune.analysis.auditlog.reader import LogFile
    from audit_tune.analysis.auditlog.scan import scan_file

    p = tmp_path / "a.log"
    lines = _write(p, _times(20, 10))
    with open(p, "ab") as f:
        f.write(b"y" * (70 << 20))  # no newline at the end, and longer than the bound
    res = scan_file(LogFile("a", str(p), p.stat().st_size))
    assert res.events == len(lines)
    assert res.skips is not None and dict(res.skips.reasons) == {dec.TOO_LONG: 1}
