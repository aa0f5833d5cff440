"""The sink's store under the faults it exists to survive: SIGKILL under load, a full disk, a second
writer, hostile bodies, and key files. Real processes, a real tmpfs, real HTTP on 127.0.0.1."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from audit_tune.basics.errors import InputError
from audit_tune.loadgen.chain import Chain, ChainError, encode_event, record_line
from audit_tune.loadgen.keyfiles import private_dir, write_private
from audit_tune.loadgen.sink import Sink, SinkConfig
from audit_tune.loadgen.store import EventStore, head_path, verify

TUNE = str(Path(sys.executable).with_name("tune"))


def events(prefix: str, n: int, pad: int = 0) -> list[dict]:
    return [{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
             "verb": "get", "auditID": f"{prefix}-{i}", "requestURI": "/api/v1/pods" + "x" * pad} for i in range(n)]


def body(evs: list[dict]) -> bytes:
    return json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": evs}).encode()


def stored_ids(store: Path) -> list[str]:
    return [json.loads(line)["event"]["auditID"] for line in store.read_bytes().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProc:
    """``tune sink serve`` as a real child process."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([TUNE, "sink", "serve", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"sink did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.info = json.loads(line)
        self.url = self.info["url"]

    def kill(self) -> str:
        self.proc.send_signal(signal.SIGKILL)
        _, err = self.proc.communicate(timeout=20)
        return err

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


# ----------------------------------------------------------------------------- crash consistency

ZYGOTE = """
import json, os, signal, sys
from audit_tune.loadgen.sink import SinkConfig, serve
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
for line in sys.stdin:
    cfg = SinkConfig.from_json(line)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            serve(cfg, lambda server: os.write(w, json.dumps({"url": server.url}).encode()))
        except Exception as e:
            os.write(w, json.dumps({"error": str(e)}).encode())
        os._exit(0)
    os.close(w)
    print(json.dumps({"pid": pid, "child": json.loads(os.read(r, 65536) or b"{}")}), flush=True)
    os.close(r)
"""


class Zygote:
    """Starts the real sink server (``loadgen.sink.serve``, what ``tune sink serve`` runs) in a fresh
    process on demand, forked from one that has already imported everything, so a restart costs
    milliseconds instead of an interpreter start on a loaded machine."""

    def __init__(self, stderr: Path) -> None:
        self._err = open(stderr, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True)

    def start(self, cfg: SinkConfig) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(cfg.to_json() + "\n")
        self.proc.stdin.flush()
        info = json.loads(self.proc.stdout.readline())
        assert "url" in info["child"], f"restart failed: {info['child']}"
        return info["pid"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._err.close()


@pytest.mark.timeout(300)
def test_sigkill_under_concurrent_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    store, port, kills = tmp_path / "ev.jsonl", free_port(), 60
    rng = random.Random(13)
    acked: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()
    url = f"http://127.0.0.1:{port}/?timeout=30s"

    def client(cid: int) -> None:
        r = random.Random(cid)
        k = 0
        with requests.Session() as s:
            while not stop.is_set():
                evs = events(f"c{cid}-b{k}", r.randint(1, 25), pad=r.randint(0, 400))
                k += 1
                try:
                    resp = s.post(url, data=body(evs), timeout=10)
                except requests.RequestException:
                    time.sleep(0.005)
                    continue
                if resp.status_code == 200:
                    with lock:
                        acked.update(e["auditID"] for e in evs)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    zygote = Zygote(tmp_path / "sink.err")
    cfg = SinkConfig(store=str(store), port=port)
    try:
        for _ in range(kills):
            pid = zygote.start(cfg)  # each restart must succeed
            time.sleep(rng.uniform(0.01, 0.3))
            os.kill(pid, signal.SIGKILL)
            while True:  # until the kernel has released the store's lock and port
                try:
                    os.kill(pid, 0)
                    time.sleep(0.005)
                except ProcessLookupError:
                    break
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        zygote.close()
    p = ServeProc("--store", str(store), "--port", str(port))  # the CLI itself, once more
    err = p.stop()
    log = (tmp_path / "sink.err").read_text() + err
    assert "Traceback" not in log
    notes = [ln for ln in log.splitlines() if "re-anchored" in ln or ": cut " in ln]
    v = subprocess.run([TUNE, "sink", "verify", str(store), "-f", "json"], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    summary = json.loads(v.stdout)
    ids = stored_ids(store)
    assert len(acked) > 500
    assert acked <= set(ids), f"{len(acked - set(ids))} acknowledged events missing"
    batches = [json.loads(line)["batch"] for line in store.read_bytes().splitlines()]
    assert all(a <= b for a, b in zip(batches, batches[1:]))  # ids never repeat across restarts
    print(f"\ncrash test: {kills} SIGKILLs, {len(acked)} acknowledged events all present among "
          f"{summary['events']} stored in {summary['batches']} batches; {len(notes)} recoveries "
          f"({sum('re-anchored' in n for n in notes)} re-anchored, {sum(': cut ' in n for n in notes)} cut back)")


def _store_with(tmp_path: Path, batches: int = 3, key: bytes | None = None) -> Path:
    p = tmp_path / "ev.jsonl"
    st = EventStore(p, key=key)
    for b in range(batches):
        st.append_batch(events(f"b{b}", 3))
    st.close()
    return p


def test_whole_batch_past_the_head_is_a_crash_and_is_reanchored(tmp_path: Path) -> None:
    p = _store_with(tmp_path, 2)
    old_head = head_path(p).read_bytes()
    st = EventStore(p)
    st.append_batch(events("late", 4))
    st.close()
    head_path(p).write_bytes(old_head)  # a kill between fsyncing the file and renaming the head
    assert verify(p).unanchored_events == 4  # verify: a crash leftover, not tampering
    st = EventStore(p)
    assert any("re-anchored the head past 4 events in 1 whole batches" in n for n in st.recovered)
    assert st.append_batch(events("next", 1)) == 1
    st.close()
    s = verify(p)
    assert (s.events, s.batches, s.unanchored_events) == (11, 4, 0)


def test_torn_record_and_cut_batch_are_cut_back(tmp_path: Path) -> None:
    p = _store_with(tmp_path, 2)
    good = p.read_bytes()
    chain, lines = Chain(), good.splitlines()
    last = json.loads(lines[-1])
    prev = chain.digest(lines[-1])
    extra = record_line(6, prev, 1.0, last["batch"] + 1, 3, encode_event({"auditID": "x"}))
    with open(p, "ab") as f:
        f.write(extra + b"\n" + b'{"seq":7,"prev":"ab')  # 1 of 3 records, then a torn line
    s = verify(p)
    assert s.events == 6 and s.unanchored_events == 1 and s.torn_bytes > 0
    st = EventStore(p)
    assert any(n.startswith("cut ") for n in st.recovered)
    st.close()
    assert p.read_bytes() == good


def _kill_mid_write(p: ServeProc, store: Path, deadline: float = 60.0) -> bool:
    """SIGKILL the sink the moment the store's last byte is not a newline, i.e. while a write() is
    copying a batch into the file (Linux stops a write at a page boundary on a fatal signal and
    keeps the part already copied). True if the file was left torn."""
    fd = os.open(store, os.O_RDONLY)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < deadline:
            n = os.fstat(fd).st_size
            if n and os.pread(fd, 1, n - 1) != b"\n":
                break
        p.kill()
        n = os.fstat(fd).st_size
        return n > 0 and os.pread(fd, 1, n - 1) != b"\n"
    finally:
        os.close(fd)


@pytest.mark.timeout(300)
def test_a_real_torn_record_from_a_sigkill_mid_write_is_cut_back(tmp_path: Path) -> None:
    """A real partial append: the real sink is killed while a ~9 MiB batch is being written."""
    store = tmp_path / "ev.jsonl"
    acked: list[str] = []
    torn_rounds = 0
    for round_ in range(6):
        p = ServeProc("--store", str(store))
        for i in range(2):
            evs = events(f"r{round_}-small{i}", 3)
            assert requests.post(p.url, data=body(evs), timeout=30).status_code == 200
            acked += [e["auditID"] for e in evs]
        big = body(events(f"r{round_}-big", 3, pad=3 * 1024 * 1024))
        threading.Thread(target=_post_quietly, args=(p.url, big), daemon=True).start()
        torn = _kill_mid_write(p, store)
        torn_rounds += torn
        assert store.read_bytes().endswith(b"\n") != torn
        p = ServeProc("--store", str(store))  # restarts on the torn store
        err = p.stop()
        assert "Traceback" not in err
        if torn:
            assert "torn line" in err and "never acknowledged" in err, err
        assert store.read_bytes().endswith(b"\n")
        s = verify(store)
        assert s.torn_bytes == 0 and s.unanchored_events == 0
        assert set(acked) <= set(stored_ids(store))
        if torn_rounds >= 3:
            break
    assert torn_rounds >= 3, f"only {torn_rounds} torn writes produced in {round_ + 1} kills"


def _post_quietly(url: str, data: bytes) -> None:
    try:
        requests.post(url, data=data, timeout=60)
    except requests.RequestException:
        pass


def test_tampering_is_refused_by_serve_and_verify(tmp_path: Path) -> None:
    p = _store_with(tmp_path, 3)
    lines = p.read_bytes().splitlines(keepends=True)
    p.write_bytes(b"".join(lines[:-3]))  # last batch cut off: the head still names it
    with pytest.raises(ChainError, match="records were removed"):
        verify(p)
    with pytest.raises(ChainError, match="refusing to serve"):
        EventStore(p)
    head_path(p).unlink()  # ... and the head deleted as well
    with pytest.raises(ChainError, match="--allow-unanchored"):
        verify(p)
    assert verify(p, allow_unanchored=True).events == 6
    v = subprocess.run([TUNE, "sink", "verify", str(p)], capture_output=True, text=True)
    assert v.returncode == 1 and "--allow-unanchored" in v.stderr and v.stderr.count("\n") == 1
    v = subprocess.run([TUNE, "sink", "verify", str(p), "--allow-unanchored", "-f", "json"], capture_output=True,
                       text=True)
    assert v.returncode == 0 and json.loads(v.stdout)["head_checked"] is False
    r = subprocess.run([TUNE, "sink", "serve", "--store", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_keyed_chain_detects_a_consistent_rewrite(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    keyfile = write_private(keydir / "chain.key", os.urandom(32).hex())
    (tmp_path / "s").mkdir()
    p = tmp_path / "s" / "ev.jsonl"
    r = subprocess.run([TUNE, "sink", "serve", "--store", str(p), "--chain-key-file", str(keyfile),
                        "--duration", "2s"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from audit_tune.loadgen.chain import load_key

    key = load_key(keyfile)
    st = EventStore(p, key=key)
    st.append_batch(events("k", 3))
    st.close()
    assert verify(p, key=key).chain == "hmac-sha256"
    # Rewrite the whole store consistently without the key: a plain chain would verify it.
    recs = [json.loads(line) for line in p.read_bytes().splitlines()]
    recs[1]["event"]["verb"] = "delete"
    st2 = EventStore(tmp_path / "forged.jsonl")
    st2.append_batch([r["event"] for r in recs])
    st2.close()
    forged = tmp_path / "forged.jsonl"
    assert verify(forged).events == 3  # unkeyed: a consistent rewrite verifies (documented limit)
    os.replace(forged, p)
    head = json.loads(head_path(tmp_path / "forged.jsonl").read_text())
    head["alg"] = "hmac-sha256"
    head_path(p).write_text(json.dumps(head))
    with pytest.raises(ChainError):
        verify(p, key=key)
    v = subprocess.run([TUNE, "sink", "verify", str(p)], capture_output=True, text=True)
    assert v.returncode == 1 and "--chain-key-file" in v.stderr
    (keydir / "loose.key").write_text("k" * 32)
    os.chmod(keydir / "loose.key", 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_key(keydir / "loose.key")


def test_batch_ids_are_unique_across_restarts(tmp_path: Path) -> None:
    store = tmp_path / "ev.jsonl"
    for round_ in range(3):
        with Sink(SinkConfig(store=str(store))) as s:
            def post(i: int, round_: int = round_) -> int:
                return requests.post(s.url, data=body(events(f"r{round_}-{i}", 2)), timeout=10).status_code

            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(6) as ex:
                assert set(ex.map(post, range(30))) == {200}
    recs = [json.loads(line) for line in store.read_bytes().splitlines()]
    by_batch: dict[int, set[str]] = {}
    for r in recs:
        by_batch.setdefault(r["batch"], set()).add(r["event"]["auditID"].rsplit("-", 1)[0])
    assert len(by_batch) == 90 and all(len(v) == 1 for v in by_batch.values())
    assert verify(store).batches == 90


# ----------------------------------------------------------------------------- disk full

@pytest.mark.timeout(120)
def test_disk_full_answers_503_rolls_back_and_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 160 * 1024)
        store = mnt / "ev.jsonl"
        acked: set[str] = set()
        codes: list[int] = []
        with Sink(SinkConfig(store=str(store))) as s:
            for i in range(400):
                evs = events(f"d{i}", 7, pad=1500)
                r = requests.post(s.url, data=body(evs), timeout=10)
                codes.append(r.status_code)
                if r.status_code == 200:
                    acked.update(e["auditID"] for e in evs)
                else:
                    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
                    if codes.count(503) >= 3:
                        break
            assert codes.count(503) >= 3 and codes[-3:] == [503] * 3  # keeps answering 503 while full
            size = store.stat().st_size
            head = json.loads(head_path(store).read_text())
            assert size == head["offset"]  # rolled back: no torn record past the head
            assert verify(store).unanchored_events == 0
            filler.unlink()  # ~160 KiB free again
            huge = events("huge", 10, pad=40_000)  # ~400 KiB: part of it fits, then ENOSPC mid-batch
            r = requests.post(s.url, data=body(huge), timeout=10)
            assert r.status_code == 503 and "Retry-After" in r.headers
            assert store.stat().st_size == size  # the part that fitted was rolled back
            evs = events("after", 7, pad=1500)
            r = requests.post(s.url, data=body(evs), timeout=10)
            assert r.status_code == 200
            acked.update(e["auditID"] for e in evs)
        assert verify(store).events == len(acked) and set(stored_ids(store)) == acked
        print(f"\ndisk full: {codes.count(200)} batches acknowledged, then {codes.count(503)} answered 503 "
              f"(Retry-After) at {size} bytes stored, none torn; 200 again once space was freed; "
              f"{len(acked)} events verified")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ----------------------------------------------------------------------------- one writer

def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "ev.jsonl"
    p = ServeProc("--store", str(store))
    try:
        r = subprocess.run([TUNE, "sink", "serve", "--store", str(store)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert r.stderr.strip().count("\n") == 0 and "another sink is writing to it" in r.stderr
        assert requests.post(p.url, data=body(events("one", 2)), timeout=10).status_code == 200
    finally:
        p.stop()
    assert verify(store).events == 2


# ----------------------------------------------------------------------------- hostile bodies

@pytest.mark.timeout(120)
def test_limits_and_malformed_bodies_get_4xx_never_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "ev.jsonl"
    p = ServeProc("--store", str(store), "--header-timeout", "1s", "--body-timeout", "1s", "--idle-timeout", "1s")
    u = p.url + "/?timeout=30s"
    try:
        big = body(events("big", 1, pad=13 * 1024 * 1024))
        assert requests.post(u, data=big, timeout=30).status_code == 413  # default limit 12 MiB
        bomb = gzip.compress(b" " * (64 * 1024 * 1024))  # 64 MiB of spaces, ~64 KiB on the wire
        assert len(bomb) < 200_000
        assert requests.post(u, data=bomb, headers={"Content-Encoding": "gzip"}, timeout=30).status_code == 413
        ok = gzip.compress(body(events("gz", 2)))
        assert requests.post(u, data=ok, headers={"Content-Encoding": "gzip"}, timeout=10).status_code == 200
        bad = {
            "corrupt gzip": (b"\x1f\x8b\x08\x00garbage-not-deflate", {"Content-Encoding": "gzip"}),
            "truncated gzip": (ok[: len(ok) // 2], {"Content-Encoding": "gzip"}),
            "lone surrogate": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":"\\ud800"}]}', {}),
            "deep nesting": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b"[" * 100_000, {}),
            "NaN": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":NaN}]}', {}),
            "1e999": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":1e999}]}', {}),
            "gzip then garbage": (ok + b"garbage", {"Content-Encoding": "gzip"}),
            "not UTF-8": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":"\xff"}]}', {}),
            "not an EventList": (b'{"kind":"Pod","apiVersion":"v1"}', {}),
            "items not a list": (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}', {}),
            "raw zlib as gzip": (zlib.compress(b"{}"), {"Content-Encoding": "gzip"}),
        }
        for name, (data, headers) in bad.items():
            r = requests.post(u, data=data, headers=headers, timeout=10)
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert name != "1e999" or "out of range" in r.json()["error"]
        deep = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":' + b"[" * 900 + b"]" * 900 + b"}]}"
        assert requests.post(u, data=deep, timeout=10).status_code == 200  # storable, and verify must read it back
        r = requests.post(u, data=b"{}", headers={"Content-Encoding": "br"}, timeout=10)
        assert r.status_code == 415
        with socket.create_connection(("127.0.0.1", int(p.url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            assert s.recv(100) == b""  # closed by the header timeout, well before the 10 s socket timeout
        with socket.create_connection(("127.0.0.1", int(p.url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            assert s.recv(200).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", int(p.url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive, then silence
            got = b""
            while not got.endswith(b"ok"):
                got += s.recv(1000)
            assert s.recv(100) == b""  # closed by the idle timeout, well before the 10 s socket timeout
    finally:
        err = p.stop()
    assert "Traceback" not in err and "Error" not in err.replace("error:", "")
    assert verify(store).events == 3


@pytest.mark.timeout(120)
def test_malformed_http_and_a_client_gone_mid_body_log_one_line_and_store_nothing(tmp_path: Path) -> None:
    store = tmp_path / "ev.jsonl"
    p = ServeProc("--store", str(store))
    port = int(p.url.rsplit(":", 1)[1])
    half = body(events("gone", 50))
    try:
        for raw in (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
                    b"NOT HTTP AT ALL\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(raw)
                assert s.recv(100).split(b" ")[1] == b"400"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # gone half-way through a body
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(half) + half[: len(half) // 2])
            time.sleep(0.3)
        assert requests.post(p.url, data=body(events("after", 2)), timeout=10).status_code == 200
    finally:
        err = p.stop()
    assert "Traceback" not in err, err
    assert all(len(line) < 300 for line in err.splitlines()), err
    assert stored_ids(store) == ["after-0", "after-1"]


@pytest.mark.timeout(120)
def test_sigterm_with_batches_in_flight_acknowledges_only_what_is_stored(tmp_path: Path) -> None:
    store = tmp_path / "ev.jsonl"
    p = ServeProc("--store", str(store))
    codes: dict[int, object] = {}

    def post(i: int) -> None:
        try:
            codes[i] = requests.post(p.url, data=body(events(f"t{i}", 5, pad=512 * 1024)), timeout=60).status_code
        except requests.RequestException as e:
            codes[i] = type(e).__name__

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    err = p.stop()
    for t in threads:
        t.join()
    assert p.proc.returncode == 0 and "Traceback" not in err, err
    acked = {f"t{i}" for i, c in codes.items() if c == 200}
    stored = {a.rsplit("-", 1)[0] for a in stored_ids(store)}
    assert acked <= stored and set(codes.values()) <= {200, "ConnectionError"}, codes
    s = verify(store)
    assert s.unanchored_events == 0 and s.events == 5 * len(stored)
    p = ServeProc("--store", str(store))  # and it starts again on what SIGTERM left
    assert requests.post(p.url, data=body(events("again", 1)), timeout=10).status_code == 200
    p.stop()


# ----------------------------------------------------------------------------- key files

def test_private_dir_refuses_shared_folders_and_symlinks(tmp_path: Path) -> None:
    d = private_dir(tmp_path / "new" / "tls")
    assert (os.stat(d).st_mode & 0o777) == 0o700 and d.is_absolute()
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with pytest.raises(InputError, match="mode 0755"):
        private_dir(loose)
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(InputError, match="symlink"):
        private_dir(link)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(InputError, match="not you"):
        private_dir(other)


def test_tls_generate_never_writes_through_planted_files(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tls / "server.key").symlink_to(victim)
    (tls / "client.key").write_text("old")
    os.chmod(tls / "client.key", 0o644)
    p = ServeProc("--tls-generate", "tls", "--client-cert-auth", "--write-kubeconfig", "wh.kubeconfig",
                  cwd=tmp_path)
    try:
        assert p.url.startswith("https://")
    finally:
        p.stop()
    assert victim.read_text() == "precious"
    for name in ("server.key", "client.key", "ca.crt"):
        st = os.lstat(tls / name)
        assert not (tls / name).is_symlink()
        assert (st.st_mode & 0o777) == (0o644 if name.endswith(".crt") else 0o600)
    import yaml

    kc = yaml.safe_load((tmp_path / "wh.kubeconfig").read_text())
    assert (os.stat(tmp_path / "wh.kubeconfig").st_mode & 0o777) == 0o600
    paths = [kc["clusters"][0]["cluster"]["certificate-authority"], kc["users"][0]["user"]["client-certificate"],
             kc["users"][0]["user"]["client-key"]]
    assert all(os.path.isabs(x) and os.path.exists(x) for x in paths)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    r = subprocess.run([TUNE, "sink", "serve", "--tls-generate", str(shared)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "private folder" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not any(shared.iterdir())
    h = subprocess.run([TUNE, "sink", "serve", "--help"], capture_output=True, text=True)
    assert "/tmp" not in h.stdout


def test_a_store_in_the_earlier_format_is_continued(tmp_path: Path) -> None:
    """Records without ``n`` and a head of only ``{"seq","hash"}`` (the format before batch sizes)."""
    import hashlib

    p, prev, lines = tmp_path / "ev.jsonl", "0" * 64, []
    for seq, b in enumerate([0, 0, 1, 3, 3]):
        line = json.dumps({"seq": seq, "prev": prev, "received": 1.0, "batch": b, "event": {"auditID": f"o{seq}"}},
                          separators=(",", ":")).encode()
        lines.append(line + b"\n")
        prev = hashlib.sha256(line).hexdigest()
    p.write_bytes(b"".join(lines))
    head_path(p).write_text(json.dumps({"seq": 4, "hash": prev}))
    assert (verify(p).events, verify(p).batches) == (5, 3)
    st = EventStore(p)
    st.append_batch(events("new", 2))
    st.close()
    assert [json.loads(x)["batch"] for x in p.read_bytes().splitlines()] == [0, 0, 1, 3, 3, 4, 4]
    assert verify(p).events == 7


def test_kubeconfig_into_the_new_tls_folder_and_the_token_is_never_printed(tmp_path: Path) -> None:
    token = "tok-" + os.urandom(8).hex()
    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    os.chmod(tf, 0o600)
    p = ServeProc("--store", "ev.jsonl", "--tls-generate", "tls", "--token-file", str(tf),
                  "--write-kubeconfig", "tls/wh.kubeconfig", cwd=tmp_path)
    try:
        assert p.url.startswith("https://127.0.0.1:")  # loopback by default
        r = requests.post(p.url, data=body(events("k", 1)), verify=str(tmp_path / "tls" / "ca.crt"), timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        err = p.stop()
    assert token not in err and token not in json.dumps(p.info)
    assert (os.stat(tmp_path / "tls").st_mode & 0o777) == 0o700
    kc = tmp_path / "tls" / "wh.kubeconfig"
    assert (os.stat(kc).st_mode & 0o777) == 0o600 and token in kc.read_text()


def test_a_store_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "ev.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(fifo)
    for target in (fifo, link):
        r = subprocess.run([TUNE, "sink", "serve", "--store", str(target)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "not a regular file" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / (target.name + ".lock")).exists() and not (tmp_path / (target.name + ".head")).exists()
    real = tmp_path / "real.jsonl"
    (tmp_path / "good.jsonl").symlink_to(real)  # a symlink to a regular file (or to none yet) is followed
    st = EventStore(tmp_path / "good.jsonl")
    st.append_batch(events("l", 2))
    st.close()
    assert stored_ids(real) == ["l-0", "l-1"] and verify(tmp_path / "good.jsonl").events == 2


CRASH_CHILD = """
import sys
from audit_tune.loadgen.store import EventStore
st = EventStore(sys.argv[1])
for i in range(4):
    st.append_batch([{"auditID": f"b{i}-{j}"} for j in range(3)])
    print(f"b{i}", flush=True)
"""


@pytest.mark.timeout(300)
def test_a_sigkill_at_every_step_of_the_write_order_recovers(tmp_path: Path) -> None:
    """strace delivers a real SIGKILL on entry to the k-th fsync or rename of a writer storing 4
    batches, so the kill lands before each step of the write order on demand: before the data
    fsync (data written), before the head temp file's fsync, before its rename (a stale
    ``.head.tmp`` left), before the folder fsync (head renamed, not acknowledged)."""
    points = [("fsync", k) for k in range(1, 11)] + [("rename", k) for k in range(1, 5)]
    calls = {"fsync": "fsync", "rename": "rename,renameat,renameat2"}
    kinds: dict[str, int] = {}
    for call, k in points:
        d = tmp_path / f"{call}{k}"
        d.mkdir()
        store = d / "ev.jsonl"
        r = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={calls[call]}",
                            "-e", f"inject={calls[call]}:signal=SIGKILL:when={k}", sys.executable, "-c", CRASH_CHILD,
                            str(store)], capture_output=True, text=True, timeout=120)
        acked = r.stdout.split()
        assert r.returncode == 128 + signal.SIGKILL or r.returncode == -signal.SIGKILL, (call, k, r.returncode, r.stderr)
        assert len(acked) < 4 and "Traceback" not in r.stderr
        st = EventStore(store)  # restarts on whatever the kill left
        for n in st.recovered:
            kinds[n.split()[0]] = kinds.get(n.split()[0], 0) + 1
        st.append_batch(events("after", 1))
        st.close()
        s = verify(store)
        assert s.unanchored_events == 0 and s.torn_bytes == 0
        ids = stored_ids(store)
        assert {f"{b}-{j}" for b in acked for j in range(3)} <= set(ids), (call, k)
        assert ids[-1] == "after-0"
    assert kinds.get("re-anchored", 0) >= 3, kinds  # whole batches past the head arose from real kills
    print(f"\ncrash points: {len(points)} kills, recoveries {kinds}")


def test_a_store_on_a_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], check=True)
    try:
        for cmd in (["serve", "--store", str(mnt / "ev.jsonl")], ["verify", str(mnt / "ev.jsonl")]):
            r = subprocess.run([TUNE, "sink", *cmd], capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert "Read-only file system" in subprocess.run([TUNE, "sink", "serve", "--store", str(mnt / "ev.jsonl")],
                                                          capture_output=True, text=True, timeout=60).stderr
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_token_file_that_cannot_be_a_bearer_token_is_one_line_and_not_echoed(tmp_path: Path) -> None:
    cases = {"binary": b"\xff\xfesecretA", "inner whitespace": b"secretB part\nmore", "control": b"secretC\x00x",
             "huge": b"secretD" * 200_000}
    for name, raw in cases.items():
        tf = tmp_path / name.replace(" ", "_")
        tf.write_bytes(raw)
        r = subprocess.run([TUNE, "sink", "serve", "--token-file", str(tf)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert "--token-file" in r.stderr and "secret" not in r.stderr, (name, r.stderr)


def test_a_symlink_to_a_store_in_use_is_the_same_store(tmp_path: Path) -> None:
    real = tmp_path / "ev.jsonl"
    other = tmp_path / "elsewhere"
    other.mkdir()
    link = other / "alias.jsonl"
    link.symlink_to(real)
    first = EventStore(real)
    try:
        with pytest.raises(InputError, match="another sink is writing"):
            EventStore(link)  # the lock is the real file's, whatever name reaches it
        first.append_batch(events("a", 2))
    finally:
        first.close()
    st = EventStore(link)
    st.append_batch(events("b", 1))
    st.close()
    assert verify(link).events == 3 and verify(real).events == 3
    assert not (other / "alias.jsonl.head").exists()
