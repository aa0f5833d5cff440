"""Prometheus as found in the wild: the real Prometheus on backfilled fixture series with jittered
scrape timestamps, gaps, a counter reset, data ending before --end, a history longer than the data
and a second job scraping the same apiserver (tests/promfixtures.py, scenario "wild"); and a
127.0.0.1 fake for what a real Prometheus does not do on demand (drip-feeding answers, redirects,
huge answers)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from promfixtures import backfilled_prometheus

from audit_tune.analysis import prom_client, prom_http
from audit_tune.analysis.prom import choose_step
from audit_tune.analysis.snapshot import Snapshot
from audit_tune.cli.app import main

INSTANT = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()


@pytest.fixture(scope="module")
def wild(prometheus_installed):
    with backfilled_prometheus(["wild"]) as (prom, truths):
        yield prom, truths["wild"]


def _snapshot(prom, tr, tmp_path, *extra, end=None, history=None):
    out = tmp_path / "s.json"
    rc = main(["snapshot", "-p", prom.url, "-o", str(out), "--end", str(int(end or tr.end)),
               "--history", history or f"{int(tr.end - tr.start)}s", "--no-progress", *extra])
    return rc, (Snapshot.load(out) if rc == 0 else None)


def test_history_longer_than_the_data_and_end_after_it(wild, tmp_path, capsys):
    """--history 2x the data and --end an hour after the last sample: the scrape interval is still
    measured from the data (15s, despite millisecond jitter), the step is a valid whole multiple
    of it, and Prometheus accepts every query."""
    prom, tr = wild
    rc, snap = _snapshot(prom, tr, tmp_path, end=tr.end + 3600, history=f"{int(2 * (tr.end - tr.start))}s")
    err = capsys.readouterr().err
    assert rc == 0, err
    step = snap.source.window.step
    assert step % 15 == 0 and step >= 15, step
    assert "HTTP 400" not in err
    one = snap.instances["10.5.0.1:6443"]
    t1 = tr.instances["10.5.0.1:6443"]
    assert one.events_increase == pytest.approx(t1.events, rel=0.02)   # across the counter reset
    assert one.event_rate_peak is not None and one.event_rate_peak.window == "15s"
    notes = " ".join(m.why for m in snap.missing)
    assert "covers only" in notes and "reset 1 time" in notes and "scraped by 2 jobs" in notes


def test_jitter_gap_reset_and_second_job(wild, tmp_path, capsys):
    prom, tr = wild
    rc, snap = _snapshot(prom, tr, tmp_path, "--step", "1m")
    assert rc == 0, capsys.readouterr().err
    assert snap.source.window.step == 60
    two, t2 = snap.instances["10.5.0.2:6443"], tr.instances["10.5.0.2:6443"]
    assert two.events_increase == pytest.approx(t2.events, rel=0.03)    # the gap is inside the counter
    rc, sel = _snapshot(prom, tr, tmp_path, "--selector", 'job="apiserver"')
    three, t3 = sel.instances["10.5.0.3:6443"], tr.instances["10.5.0.3:6443"]
    assert three.events_increase == pytest.approx(t3.events, rel=0.02)
    assert not any(m.item == "duplicate scrape" for m in sel.missing)


def test_step_is_a_whole_multiple_of_the_scrape_interval():
    said: list[str] = []
    assert choose_step(15, 15, 6 * 3600, said.append) == 15
    assert choose_step(10, 15, 6 * 3600, said.append) == 15 and "scrape interval" in said[-1]
    s = choose_step(15, 15, 7 * 86400, said.append)        # 11,000 points at most
    assert s % 15 == 0 and 7 * 86400 / s < 11000
    s = choose_step(1, 0.25, 3600, said.append)
    assert s == 1 and prom_client.prom_duration(s) == "1s"
    assert prom_client.prom_duration(24.983) == "24983ms" and prom_client.prom_duration(0.0001) == "1ms"


# ---------------------------------------------------------------------------------------------
# A fake for what a real Prometheus does not do on demand


class _Fake:
    def __init__(self, handler):
        self.hits: list[tuple[str, dict[str, str]]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                try:
                    handler(self)
                except (BrokenPipeError, ConnectionResetError):
                    outer.broken = True

            def log_message(self, *a):
                pass

        self.broken = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(h, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def _cli(url, tmp_path, *extra):
    return ["snapshot", "-p", url, "-o", str(tmp_path / "s.json"), "--history", "1h", "--end", "1780000000",
            "--no-progress", "--prometheus-retries", "0", *extra]


def test_timeout_is_a_whole_request_deadline(tmp_path, capsys):
    """A server that drips one byte a second is cut at the deadline: it gets a broken pipe long
    before it has sent its 120 bytes, and the command exits 2 with one line."""
    sent = []
    stop = threading.Event()

    def drip(h):
        h.send_response(200)
        h.send_header("Content-Length", "120")
        h.end_headers()
        h.wfile.flush()
        for _ in range(120):
            if stop.wait(1.0):
                return
            h.wfile.write(b" ")
            h.wfile.flush()
            sent.append(1)

    fake = _Fake(drip)
    try:
        rc = main(_cli(fake.url, tmp_path, "--prometheus-timeout", "3s"))
        err = capsys.readouterr().err
        n_at_exit = len(sent)
    finally:
        stop.set()
        fake.close()
    assert rc == 2 and err.count("\n") == 1 and "--prometheus-timeout 3s" in err, err
    assert n_at_exit <= 5
    assert not (tmp_path / "s.json").exists()


def test_same_origin_redirect_followed_and_said(tmp_path, capsys):
    def handler(h):
        if h.path.startswith("/prom/"):
            _reply(h, INSTANT)
        else:
            _reply(h, b"", 307, {"Location": "/prom" + h.path})

    fake = _Fake(handler)
    try:
        rc = main(_cli(fake.url, tmp_path, "-H", "X-Scope-OrgID: tenant-7"))
        err = capsys.readouterr().err
    finally:
        fake.close()
    assert rc == 4          # no apiserver data, but every query went through the redirect
    assert "redirected /api/v1/query to /prom/api/v1/query (same origin)" in err
    assert err.count("redirected") == 1
    assert all(hdr.get("x-scope-orgid") == "tenant-7" for _, hdr in fake.hits)


def test_cross_origin_redirect_refused_and_headers_stay_home(tmp_path, capsys):
    other = _Fake(lambda h: _reply(h, INSTANT))
    home = _Fake(lambda h: _reply(h, b"", 302, {"Location": other.url + h.path}))
    try:
        rc = main(_cli(home.url, tmp_path, "-H", "X-Scope-OrgID: tenant-7", "--prometheus-auth-header",
                       "Bearer sekr1t-token"))
        err = capsys.readouterr().err
    finally:
        home.close()
        other.close()
    assert rc == 1 and err.count("\n") == 1 and "another origin" in err and "refused" in err
    assert other.hits == [] and "sekr1t" not in err


def test_answers_capped_in_bytes_and_series(tmp_path, capsys, monkeypatch):
    many = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"instance": f"10.0.0.{i}:6443"}, "value": [1, "1"]} for i in range(prom_client.MAX_SERIES + 1)]}}
    body = json.dumps(many).encode()
    fake = _Fake(lambda h: _reply(h, body))
    try:
        rc = main(_cli(fake.url, tmp_path))
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and "series (more than 10,000)" in err, err
        monkeypatch.setattr(prom_http, "MAX_ANSWER_BYTES", 4096)
        rc = main(_cli(fake.url, tmp_path))
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and "answered with more than 4,096 bytes" in err
    finally:
        fake.close()


def test_tls_off_notice_on_every_command(tmp_path, capsys):
    from audit_tune.loadgen import sink_tls

    tls = sink_tls.generate(tmp_path / "pki")
    fake = _Fake(lambda h: _reply(h, INSTANT))
    fake.httpd.socket = sink_tls.server_context(tls.server_cert, tls.server_key).wrap_socket(
        fake.httpd.socket, server_side=True)
    url = fake.url.replace("http://", "https://")
    try:
        for args in (["snapshot", "-o", str(tmp_path / "s.json")], ["recommend"], ["report", "--reports-dir", str(tmp_path / "r")]):
            rc = main([*args, "-p", url, "--insecure-skip-tls-verify", "--history", "1h", "--no-progress"])
            err = capsys.readouterr().err
            assert rc == 4, err
            assert "TLS certificate verification of prometheus" in err and "is off" in err, (args, err)
    finally:
        fake.close()
