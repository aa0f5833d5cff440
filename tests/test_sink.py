"""The audit webhook sink, exercised with real HTTP POSTs on 127.0.0.1."""
from __future__ import annotations

import concurrent.futures as cf
import json
import time
from pathlib import Path

import pytest
import requests

from audit_tune.basics.errors import InputError
from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.faults import FaultConfig, FaultInjector, parse_latency, parse_outage
from audit_tune.loadgen.sink import Sink, SinkConfig, SinkProcess, webhook_kubeconfig
from audit_tune.loadgen.store import ChainError, EventStore, verify

pytestmark = pytest.mark.timeout(60)


def event(i: int, stage: str = "ResponseComplete", level: str = "Metadata", verb: str = "get") -> dict:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": f"id-{i}",
            "stage": stage, "verb": verb, "requestURI": f"/api/v1/namespaces/x/configmaps/c{i}"}


def batch(n: int, start: int = 0, **kw) -> dict:
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
            "items": [event(start + i, **kw) for i in range(n)]}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def sink(store: Path):
    s = Sink(SinkConfig(store=str(store)))
    s.start()
    yield s
    s.stop()


def post(url: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url + "/?timeout=30s", data=data, headers={"Content-Type": "application/json",
                                                                    **kw.pop("headers", {})}, timeout=10, **kw)


def fill(sink: Sink, store: Path) -> None:
    """Three batches: 4 RR + 4 RC, 3 RC (Request level), 5 RR."""
    assert post(sink.url, batch(4, 0, stage="RequestReceived")).status_code == 200
    assert post(sink.url, batch(4, 4)).status_code == 200
    assert post(sink.url, batch(3, 8, level="Request", verb="create")).status_code == 200
    assert post(sink.url, batch(5, 11, stage="RequestReceived")).status_code == 200


# ----------------------------------------------------------------------------- store and chain

def test_posts_are_stored_and_the_chain_verifies(sink: Sink, store: Path) -> None:
    fill(sink, store)
    st = sink.stats()
    assert (st["events_stored"], st["batches"], st["responses"]) == (16, 4, {"200": 4})
    sink.stop()
    s = verify(store)
    assert (s.events, s.batches) == (16, 4)
    assert s.by_stage == {"RequestReceived": 9, "ResponseComplete": 7}
    assert s.by_level == {"Metadata": 13, "Request": 3}
    assert s.head_checked
    first = json.loads(store.read_text().splitlines()[0])
    assert first["seq"] == 0 and first["prev"] == "0" * 64 and first["batch"] == 0
    assert first["event"]["auditID"] == "id-0" and isinstance(first["received"], float)


def test_ack_only_after_the_batch_is_in_the_store(sink: Sink, store: Path) -> None:
    total = 0
    for n in (1, 7, 3, 20):
        r = post(sink.url, batch(n, total))
        total += n
        assert r.status_code == 200
        # The 200 arrived: every event of the batch must already be written (and fsynced: policy always).
        assert len(store.read_bytes().splitlines()) == total


def _lines(store: Path) -> list[bytes]:
    return store.read_bytes().splitlines(keepends=True)


def test_altered_line_is_named(sink: Sink, store: Path) -> None:
    fill(sink, store)
    sink.stop()
    lines = _lines(store)
    lines[4] = lines[4].replace(b'"get"', b'"delete"')
    store.write_bytes(b"".join(lines))
    with pytest.raises(ChainError, match=r"line 6: prev hash does not match line 5 \(line 5 was altered"):
        verify(store)


def test_altered_last_line_is_caught_by_the_head(sink: Sink, store: Path) -> None:
    fill(sink, store)
    sink.stop()
    lines = _lines(store)
    lines[-1] = lines[-1].replace(b'"get"', b'"list"')
    store.write_bytes(b"".join(lines))
    with pytest.raises(ChainError, match="line 16: last anchored record does not match"):
        verify(store)


def test_deleted_and_reordered_records_are_detected(sink: Sink, store: Path) -> None:
    fill(sink, store)
    sink.stop()
    good = _lines(store)
    store.write_bytes(b"".join(good[:7] + good[8:]))
    with pytest.raises(ChainError, match="line 8"):
        verify(store)
    swapped = list(good)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    store.write_bytes(b"".join(swapped))
    with pytest.raises(ChainError, match="line 3"):
        verify(store)
    store.write_bytes(b"".join(good[1:]))
    with pytest.raises(ChainError, match="line 1: first record"):
        verify(store)
    store.write_bytes(b"".join(good[:-1]))  # tail deleted: only the head can tell
    with pytest.raises(ChainError, match="records 16 events but the store holds 11 whole ones"):
        verify(store)


def test_verify_cli_one_line_error_exit_1_and_counts(sink: Sink, store: Path, capsys) -> None:
    from audit_tune.cli.app import main

    fill(sink, store)
    sink.stop()
    assert main(["sink", "verify", str(store), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["events"] == 16 and out["batches"] == 4 and out["by_stage"]["RequestReceived"] == 9
    assert main(["sink", "verify", str(store)]) == 0
    assert "events   16" in capsys.readouterr().out
    lines = _lines(store)
    store.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert main(["sink", "verify", str(store)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tune: error: ") and "line 3" in err and "\n" not in err and "Traceback" not in err


def test_store_continues_the_chain_across_restarts(store: Path) -> None:
    for start in (0, 5):
        with Sink(SinkConfig(store=str(store))) as s:
            assert post(s.url, batch(5, start)).status_code == 200
    s2 = verify(store)
    assert (s2.events, s2.batches) == (10, 2)


def test_fsync_policies(tmp_path: Path) -> None:
    for policy in ("always", "interval", "never"):
        st = EventStore(tmp_path / f"{policy}.jsonl", fsync=policy, fsync_interval=0.0)
        st.append_batch([event(0), event(1)], st.next_batch_id())
        st.close()
        assert verify(tmp_path / f"{policy}.jsonl").events == 2
    with pytest.raises(InputError, match="--fsync"):
        EventStore(tmp_path / "x.jsonl", fsync="sometimes")


# ----------------------------------------------------------------------------- protocol

def test_bad_bodies_get_400(sink: Sink) -> None:
    assert post(sink.url, b"{not json").status_code == 400
    assert post(sink.url, {"kind": "Pod", "apiVersion": "v1"}).status_code == 400
    assert post(sink.url, {"kind": "EventList", "apiVersion": "v1", "items": []}).status_code == 400
    assert post(sink.url, {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": {}}).status_code == 400
    assert sink.stats()["events_stored"] == 0


def test_any_path_is_accepted(sink: Sink) -> None:
    r = requests.post(sink.url + "/audit/webhook?timeout=30s", json=batch(2), timeout=10)
    assert r.status_code == 200 and r.json() == {"stored": 2}


def test_metrics_endpoint_shows_counts(sink: Sink) -> None:
    post(sink.url, batch(3))
    post(sink.url, batch(2))
    post(sink.url, b"nope")
    m = mt.parse(requests.get(sink.url + "/metrics", timeout=10).text)
    assert m.total("audit_sink_events_received_total") == 5
    assert m.total("audit_sink_events_stored_total") == 5
    assert m.total("audit_sink_batches_received_total") == 2
    assert m.total("audit_sink_requests_total") == 3
    assert m.total("audit_sink_request_bytes_total") > 0
    assert m.by_label("audit_sink_responses_total", "code") == {"200": 2, "400": 1}
    assert m.total("audit_sink_request_duration_seconds_count") == 3
    assert m.select("audit_sink_request_duration_seconds_bucket", le="+Inf")[0].value == 3
    assert m.total("audit_sink_inflight_requests") == 0
    assert m.types["audit_sink_request_duration_seconds"] == "histogram"


def test_max_body_bytes_gives_413(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(max_body_bytes="2KiB"))
    with Sink(cfg) as s:
        assert post(s.url, batch(2)).status_code == 200
        r = post(s.url, batch(40))
        assert r.status_code == 413
        assert s.stats()["events_stored"] == 2


def test_bearer_token_auth(store: Path) -> None:
    cfg = SinkConfig(store=str(store), token="s3cret-token")
    assert "s3cret" not in repr(cfg) and "s3cret" not in json.dumps(cfg.to_dict())
    with Sink(cfg) as s:
        assert post(s.url, batch(1)).status_code == 401
        assert post(s.url, batch(1), headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(s.url, batch(1), headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert s.stats()["events_stored"] == 1


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    cfg = SinkConfig(store=str(tmp_path / "ev.jsonl"), tls_generate=str(tmp_path / "tls"), client_cert_auth=True)
    with Sink(cfg) as s:
        assert s.url.startswith("https://127.0.0.1:")
        tls = tmp_path / "tls"
        r = requests.post(s.url, json=batch(2), verify=str(tls / "ca.crt"),
                          cert=(str(tls / "client.crt"), str(tls / "client.key")), timeout=10)
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.RequestException):
            requests.post(s.url, json=batch(2), verify=str(tls / "ca.crt"), timeout=10)
        assert s.stats()["events_stored"] == 2
        kc = webhook_kubeconfig(s.url, ca_cert=str(tls / "ca.crt"), client_cert=str(tls / "client.crt"),
                                client_key=str(tls / "client.key"))
        assert f"server: {s.url}" in kc and "client-certificate:" in kc


# ----------------------------------------------------------------------------- faults

def test_outage_window_returns_the_configured_status(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(outages=["0s-2500ms:500"]))
    with Sink(cfg) as s:
        assert post(s.url, batch(1)).status_code == 500
        time.sleep(max(0.0, 2.7 - s.stats()["uptime_s"]))
        assert post(s.url, batch(1)).status_code == 200
        assert s.stats()["responses"] == {"500": 1, "200": 1}


def test_refuse_outage_closes_the_port_then_reopens(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(outages=["200ms-2500ms:refuse"]))
    with Sink(cfg) as s:
        time.sleep(0.8)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(s.url, json=batch(1), timeout=5, headers={"Connection": "close"})
        time.sleep(max(0.0, 2.6 - s.stats()["uptime_s"]))
        deadline = time.monotonic() + 5  # listening again soon after the window (the loop may lag on a loaded machine)
        while True:
            try:
                assert requests.post(s.url, json=batch(1), timeout=5).status_code == 200
                break
            except requests.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the port did not reopen after the refuse window"
                time.sleep(0.1)


def test_hang_outage_answers_nothing(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(outages=["0s-600ms:hang"]))
    with Sink(cfg) as s:
        t = time.monotonic()
        with pytest.raises(requests.exceptions.ConnectionError):
            post(s.url, batch(1))
        assert time.monotonic() - t >= 0.4
        assert s.stats()["events_stored"] == 0


def test_latency_and_per_inflight_latency(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(latency="200ms", latency_per_inflight="100ms"))
    with Sink(cfg) as s:
        t = time.monotonic()
        assert post(s.url, batch(1)).status_code == 200
        assert 0.19 <= time.monotonic() - t < 1.0
        with cf.ThreadPoolExecutor(3) as ex:
            list(ex.map(lambda _: post(s.url, batch(1)), range(3)))
        lat = s.latency_samples()
        assert len(lat) == 4 and lat.max() >= 0.29  # a request that saw others in flight waited longer


def test_error_rate_is_seeded(store: Path, tmp_path: Path) -> None:
    def codes(path: Path) -> list[int]:
        cfg = SinkConfig(store=str(path), faults=FaultConfig.from_flags(error_rate=0.5, error_status=503, seed=7))
        with Sink(cfg) as s:
            return [post(s.url, batch(1)).status_code for _ in range(30)]

    a, b = codes(store), codes(tmp_path / "b.jsonl")
    assert a == b and set(a) == {200, 503}
    assert verify(store).events == a.count(200)


def test_max_concurrency_gives_429(store: Path) -> None:
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(latency="400ms", max_concurrency=1))
    with Sink(cfg) as s:
        with cf.ThreadPoolExecutor(2) as ex:
            codes = sorted(ex.map(lambda _: post(s.url, batch(1)).status_code, range(2)))
        assert codes == [200, 429]


def test_fault_parsing() -> None:
    ln = parse_latency("lognormal:median=100ms,p99=1s")
    assert ln.kind == "lognormal" and ln.p["median"] == pytest.approx(0.1)
    import numpy as np

    inj = FaultInjector(FaultConfig(latency=ln, seed=3))
    xs = np.array([inj.decide(100.0, 1, 10).delay for _ in range(20000)])
    assert np.median(xs) == pytest.approx(0.1, rel=0.05)
    assert np.percentile(xs, 99) == pytest.approx(1.0, rel=0.15)
    assert parse_latency("200ms").sample(np.random.default_rng()) == pytest.approx(0.2)
    assert parse_outage("10s-40s").mode == "503" and parse_outage("1m-2m:refuse").end == 120
    for bad in ("lognormal:p99=1s", "gamma:k=1", "uniform:min=2s,max=1s", "fast"):
        with pytest.raises(InputError):
            parse_latency(bad)
    for bad in ("40s-10s", "1s-2s:explode", "soon"):
        with pytest.raises(InputError):
            parse_outage(bad)
    with pytest.raises(InputError, match="--error-rate"):
        FaultConfig(error_rate=1.5)
    with pytest.raises(InputError, match="loopback"):
        SinkConfig(host="0.0.0.0")


def test_sink_in_a_subprocess(tmp_path: Path) -> None:
    cfg = SinkConfig(store=str(tmp_path / "ev.jsonl"), token="tok-abc",
                     faults=FaultConfig.from_flags(latency="uniform:min=1ms,max=5ms", outages=["100s-200s:hang"]))
    with SinkProcess(cfg) as p:
        assert post(p.url, batch(3), headers={"Authorization": "Bearer tok-abc"}).status_code == 200
        st = p.stats(samples=True)
        assert st["events_stored"] == 3 and len(st["latency_samples_s"]) == 1
    assert p.proc is not None and p.proc.returncode is not None
    assert verify(tmp_path / "ev.jsonl").events == 3


# ----------------------------------------------------------------------------- per-request header deadline

def _read_response(s, buf: bytes = b"") -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with Content-Length from socket ``s``; returns (response, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, f"closed before a response: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = int([h.split(b":", 1)[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
    while len(rest) < n:
        rest += s.recv(4096)
    return head + b"\r\n\r\n" + rest[:n], rest[n:]


def test_a_slow_header_on_a_later_keep_alive_request_is_closed_by_the_header_deadline(store: Path) -> None:
    import socket
    with Sink(SinkConfig(store=str(store), header_timeout=1.0, idle_timeout=30.0)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            resp, _ = _read_response(c)
            assert resp.startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # idle longer than the header deadline: idle is not a slow header
            c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 10:  # one header line every 0.2 s, never finished
                try:
                    c.sendall(b"X-Drip: a\r\n")
                    c.settimeout(0.2)
                    if c.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed and time.monotonic() - t0 < 5, "a dripped header kept the connection open"


def test_pipelined_and_http10_requests_are_answered_in_order(store: Path) -> None:
    import socket
    with Sink(SinkConfig(store=str(store), header_timeout=1.0)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        bodies = [json.dumps(batch(2, 10 * i)).encode() for i in range(3)]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            c.sendall(b"".join(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                               for b in bodies))
            left = b""
            for _ in bodies:
                resp, left = _read_response(c, left)
                assert resp.startswith(b"HTTP/1.1 200") and b'"stored": 2' in resp
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            b10 = json.dumps(batch(1, 99)).encode()
            c.sendall(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(b10), b10))
            got = b""
            while chunk := c.recv(4096):
                got += chunk
            assert got.startswith(b"HTTP/1.0 200") or got.startswith(b"HTTP/1.1 200")
    assert [e["auditID"] for e in (json.loads(x)["event"] for x in store.read_bytes().splitlines())] == \
        [f"id-{i}" for i in (0, 1, 10, 11, 20, 21, 99)]


def test_a_tls_handshake_never_finished_is_closed_by_the_header_deadline(tmp_path: Path) -> None:
    import socket
    with Sink(SinkConfig(store=str(tmp_path / "ev.jsonl"), tls_generate=str(tmp_path / "tls"), header_timeout=1.0)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            t0 = time.monotonic()
            c.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then silence
            assert c.recv(100) == b""
            assert time.monotonic() - t0 < 8


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(store: Path) -> None:
    def chunks(n: int):
        yield b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
        for i in range(n):
            yield json.dumps(event(i)).encode() + b","
        yield json.dumps(event(n)).encode() + b"]}"

    with Sink(SinkConfig(store=str(store), max_body_bytes=100_000)) as s:
        r = requests.post(s.url, data=chunks(5000), timeout=20)  # Transfer-Encoding: chunked, ~700 KB
        assert r.status_code == 413
        r = requests.post(s.url, data=chunks(2), timeout=20)
        assert r.status_code == 200 and r.json()["stored"] == 3
    assert verify(store).events == 3


def test_the_port_reopens_after_a_refuse_window_even_if_it_was_briefly_taken(store: Path) -> None:
    import socket
    cfg = SinkConfig(store=str(store), faults=FaultConfig.from_flags(outages=["200ms-1500ms:refuse"]))
    with Sink(cfg) as s:
        port = int(s.url.rsplit(":", 1)[1])
        time.sleep(max(0.0, 0.7 - s.stats()["uptime_s"]))
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        time.sleep(max(0.0, 2.5 - s.stats()["uptime_s"]))  # the window ends while the port is taken
        blocker.close()
        deadline = time.monotonic() + 8
        while True:
            try:
                assert requests.post(s.url, json=batch(1), timeout=5).status_code == 200
                break
            except requests.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the sink never listened again"
                time.sleep(0.2)
