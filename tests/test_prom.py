"""Prometheus client: settings/flags, auth actually sent (through a 127.0.0.1 proxy in front of the real
Prometheus), and bad answers (a 127.0.0.1 fake: 500, malformed JSON, hang, NaN/Inf, empty, wrong type)
turned into one-line errors with the right exit code. Secrets never show in any output."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from promfixtures import backfilled_prometheus

from audit_tune.analysis.prom import PromSettings, strip_userinfo
from audit_tune.basics.errors import InputError
from audit_tune.cli.app import main

TOKEN = "s3cr3t-t0ken-value-XYZ"
PASSWORD = "hunter2-password-QQQ"


class _Server:
    """A 127.0.0.1 HTTP server running ``handler(req) -> (status, body, headers)`` in threads."""

    def __init__(self, handle, tls=None):
        outer = self
        self.seen: list[dict[str, str]] = []

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                try:
                    status, body, headers = handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    return
                data = body if isinstance(body, bytes) else body.encode()
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_POST = do_GET  # noqa: N815

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        scheme = "http"
        if tls is not None:
            from audit_tune.loadgen.sink_tls import server_context

            self.httpd.socket = server_context(tls.server_cert, tls.server_key).wrap_socket(
                self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def real_prom(prometheus_installed):
    with backfilled_prometheus(["steady"]) as (prom, truths):
        yield prom, truths["steady"]


def _args(tr, url, tmp_path, *extra):
    return ["snapshot", "-p", url, "-o", str(tmp_path / "s.json"), "--end", str(int(tr.end)),
            "--history", f"{int(tr.end - tr.start)}s", "--no-progress", *extra]


def _proxy(upstream: str, check, tls=None):
    """Forwards to the real Prometheus when ``check(headers)`` is true, else 401."""
    sess = requests.Session()
    sess.trust_env = False

    def handle(h):
        hdrs = {k.lower(): v for k, v in h.headers.items()}
        if not check(hdrs):
            return 401, json.dumps({"status": "error", "error": f"unauthorized; you sent {hdrs.get('authorization')}"}), {}
        r = sess.get(upstream + h.path, timeout=30)
        return r.status_code, r.content, {}

    return _Server(handle, tls=tls)


def _no_secret(capsys, *secrets):
    cap = capsys.readouterr()
    for s in secrets:
        assert s not in cap.out and s not in cap.err, f"secret leaked: {s!r}"
    return cap


# ---------------------------------------------------------------------------------------------
# Auth against the real Prometheus through a checking proxy


def test_auth_header_sent(real_prom, tmp_path, capsys):
    prom, tr = real_prom
    px = _proxy(prom.url, lambda h: h.get("authorization") == f"Bearer {TOKEN}")
    try:
        assert main(_args(tr, px.url, tmp_path, "--prometheus-auth-header", f"Bearer {TOKEN}")) == 0
        _no_secret(capsys, TOKEN)
        assert main(_args(tr, px.url, tmp_path)) == 1
        cap = _no_secret(capsys, TOKEN)
        assert "HTTP 401" in cap.err and "--prometheus-auth-header" in cap.err
        assert main(_args(tr, px.url, tmp_path, "--prometheus-auth-header", "Bearer wrong-token-123")) == 1
        _no_secret(capsys, "wrong-token-123")
    finally:
        px.close()


def test_bearer_token_file_and_env(real_prom, tmp_path, capsys, monkeypatch):
    prom, tr = real_prom
    px = _proxy(prom.url, lambda h: h.get("authorization") == f"Bearer {TOKEN}")
    try:
        f = tmp_path / "token"
        f.write_text(TOKEN + "\n")
        assert main(_args(tr, px.url, tmp_path, "--prometheus-bearer-token-file", str(f))) == 0
        monkeypatch.setenv("PROMETHEUS_BEARER_TOKEN", TOKEN)
        assert main(_args(tr, px.url, tmp_path)) == 0
        assert all(s.get("authorization") == f"Bearer {TOKEN}" for s in px.seen)
        _no_secret(capsys, TOKEN)
    finally:
        px.close()


def test_basic_auth_and_custom_headers(real_prom, tmp_path, capsys):
    prom, tr = real_prom
    want = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    px = _proxy(prom.url, lambda h: h.get("authorization") == want and h.get("x-scope-orgid") == "tenant-1")
    try:
        pw = tmp_path / "pw"
        pw.write_text(PASSWORD)
        assert main(_args(tr, px.url, tmp_path, "--prometheus-user", "admin", "--prometheus-password-file", str(pw),
                          "-H", "X-Scope-OrgID: tenant-1")) == 0
        # user:password@ in the URL works too, and is stripped from the snapshot and every message
        u = urlsplit(px.url)
        url = f"http://admin:{PASSWORD}@{u.netloc}"
        assert main(_args(tr, url, tmp_path, "--prometheus-headers", "X-Scope-OrgID: tenant-1")) == 0
        snap = json.loads((tmp_path / "s.json").read_text())
        assert snap["source"]["prometheus_url"] == px.url
        assert PASSWORD not in (tmp_path / "s.json").read_text()
        _no_secret(capsys, PASSWORD, want)
    finally:
        px.close()


def test_tls_ca_file_and_insecure(real_prom, tmp_path, capsys):
    from audit_tune.loadgen.sink_tls import generate

    prom, tr = real_prom
    tls = generate(tmp_path / "tls", client=False)
    px = _proxy(prom.url, lambda h: True, tls=tls)
    try:
        assert px.url.startswith("https://")
        assert main(_args(tr, px.url, tmp_path, "--ca-file", str(tls.ca_cert))) == 0
        capsys.readouterr()
        assert main(_args(tr, px.url, tmp_path, "--prometheus-retries", "0")) == 1
        line = _one_line_error(capsys)
        assert "certificate verify failed" in line and "--ca-file" in line
        assert main(_args(tr, px.url, tmp_path, "--insecure-skip-tls-verify")) == 0
        # KRR's --prometheus-ssl-enabled: a URL without scheme means https
        assert main(_args(tr, px.url.removeprefix("https://"), tmp_path, "--prometheus-ssl-enabled",
                          "--ca-file", str(tls.ca_cert))) == 0
    finally:
        px.close()


# ---------------------------------------------------------------------------------------------
# Bad answers from a fake Prometheus


def _vector(value: str):
    return json.dumps({"status": "success", "data": {"resultType": "vector",
                                                     "result": [{"metric": {"instance": "a:6443"}, "value": [1, value]}]}})


@pytest.fixture
def fake():
    servers = []

    def make(handle):
        s = _Server(handle)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _run(url, tmp_path, *extra):
    return main(["snapshot", "-p", url, "-o", str(tmp_path / "s.json"), "--history", "1h", "--no-progress",
                 "--prometheus-retries", "1", *extra])


def _one_line_error(capsys, *secrets):
    cap = _no_secret(capsys, TOKEN, *secrets)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tune: error: "), cap.err
    assert "Traceback" not in cap.err
    return lines[0]


def test_http_500_retried_then_one_line(fake, tmp_path, capsys):
    s = fake(lambda h: (500, json.dumps({"status": "error", "error": f"boom, header was {h.headers.get('Authorization')}"}), {}))
    assert _run(s.url, tmp_path, "--prometheus-auth-header", f"Bearer {TOKEN}") == 1
    line = _one_line_error(capsys)
    assert "HTTP 500 after 2 attempts" in line
    assert len(s.seen) == 2           # one retry
    assert not (tmp_path / "s.json").exists()


def test_malformed_json(fake, tmp_path, capsys):
    s = fake(lambda h: (200, "{not json", {}))
    assert _run(s.url, tmp_path) == 1
    assert "malformed JSON" in _one_line_error(capsys)
    s = fake(lambda h: (200, "<html>login</html>", {"Content-Type": "text/html"}))
    assert _run(s.url, tmp_path) == 1
    assert "malformed JSON" in _one_line_error(capsys)
    s = fake(lambda h: (200, json.dumps({"status": "success"}), {}))
    assert _run(s.url, tmp_path) == 1
    assert "not a Prometheus API answer" in _one_line_error(capsys)


def test_hang_is_timeout_exit_2(fake, tmp_path, capsys):
    def hang(h):
        time.sleep(3)
        return 200, _vector("1"), {}

    s = fake(hang)
    t0 = time.monotonic()
    assert _run(s.url, tmp_path, "--prometheus-timeout", "0.3s") == 2
    assert time.monotonic() - t0 < 5
    line = _one_line_error(capsys)
    assert "did not answer" in line and "--prometheus-timeout" in line


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
def test_nan_inf_rejected(fake, tmp_path, capsys, value):
    s = fake(lambda h: (200, _vector(value), {}))
    assert _run(s.url, tmp_path) == 1
    assert "NaN/Inf" in _one_line_error(capsys)


def test_empty_results_exit_4(fake, tmp_path, capsys):
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
    s = fake(lambda h: (200, empty, {}))
    assert _run(s.url, tmp_path) == 4
    line = _one_line_error(capsys)
    assert "no kube-apiserver metrics" in line and "last 1h" in line


def test_wrong_result_type(fake, tmp_path, capsys):
    scalar = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}})
    s = fake(lambda h: (200, scalar, {}))
    assert _run(s.url, tmp_path) == 1
    assert "not an instant vector" in _one_line_error(capsys)
    matrix = json.dumps({"status": "success", "data": {"resultType": "matrix",
                                                       "result": [{"metric": {}, "values": [[1, "1"]]}]}})
    s = fake(lambda h: (200, matrix, {}))
    assert _run(s.url, tmp_path) == 1
    assert "not an instant vector" in _one_line_error(capsys)


def test_bad_query_400_names_the_query(fake, tmp_path, capsys):
    s = fake(lambda h: (400, json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}), {}))
    assert _run(s.url, tmp_path) == 1
    line = _one_line_error(capsys)
    assert "HTTP 400: parse error" in line


def test_unreachable(tmp_path, capsys):
    from audit_tune.loadgen.procs import free_port

    url = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    assert _run(url, tmp_path, "--prometheus-retries", "0") == 1
    line = _one_line_error(capsys, PASSWORD)
    assert "cannot connect" in line and "connection refused" in line and "--prometheus-url" in line


# ---------------------------------------------------------------------------------------------
# Settings


def test_settings_validation(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_BEARER_TOKEN", raising=False)
    with pytest.raises(InputError, match="--prometheus-url/-p: required"):
        PromSettings().validate()
    with pytest.raises(InputError, match="want http"):
        PromSettings(url="ftp://x").validate()
    with pytest.raises(InputError, match="'Name: value'"):
        PromSettings(url="http://x", headers=["nocolon"]).validate()
    with pytest.raises(InputError, match="go together"):
        PromSettings(url="http://x", user="u").validate()
    with pytest.raises(InputError, match="no such file"):
        PromSettings(url="http://x", bearer_token_file=str(tmp_path / "nope")).validate()
    tok = tmp_path / "t"
    tok.write_text(TOKEN)
    with pytest.raises(InputError, match="choose one") as ei:
        PromSettings(url="http://x", auth_header=f"Bearer {TOKEN}", bearer_token_file=str(tok)).validate()
    assert TOKEN not in str(ei.value)
    with pytest.raises(InputError, match="--ca-file"):
        PromSettings(url="https://x", ca_file=str(tmp_path / "ca.pem")).validate()
    with pytest.raises(InputError, match="--prometheus-timeout"):
        PromSettings(url="http://x", timeout="soon").validate()
    s = PromSettings(url="prom.example:9090", ssl_enabled=True).validate()
    assert s.url == "https://prom.example:9090" and s._verify is True
    assert PromSettings(url="https://x", insecure_skip_tls_verify=True).validate()._verify is False
    s = PromSettings(url=f"http://u:{PASSWORD}@x:9090/", auth_header=None).validate()
    assert s.url == "http://x:9090" and s._auth == ("u", PASSWORD)
    assert s.validate()._auth == ("u", PASSWORD)      # idempotent
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    assert s.mask(f"failed http://u:{PASSWORD}@x:9090/api") == "failed http://***@x:9090/api"
    assert PromSettings(url="http://x", cluster="prod").cluster_label == "cluster"
    assert PromSettings(url="http://x", label="k8s_cluster", cluster="prod").cluster_label == "k8s_cluster"
    assert strip_userinfo("https://a:b@h:1/p?q") == "https://h:1/p?q"


def test_flags_are_shared_and_krr_named():
    from typer.main import get_command

    from audit_tune.cli.app import app

    cmd = get_command(app).commands["snapshot"]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    for flag in ("--prometheus-url", "-p", "--prometheus", "--prometheus-auth-header", "-H", "--prometheus-headers",
                 "--prometheus-ssl-enabled", "--prometheus-label", "-l", "--prometheus-cluster-label",
                 "--prometheus-bearer-token-file", "--ca-file", "--insecure-skip-tls-verify", "--prometheus-user",
                 "--prometheus-password-file", "--history", "--step", "-o", "--cluster", "--instance"):
        assert flag in opts, flag
    insecure = next(p for p in cmd.params if "--insecure-skip-tls-verify" in p.opts)
    assert insecure.default is False


def test_bad_flag_values_are_one_line(tmp_path, capsys):
    assert main(["snapshot", "-p", "http://127.0.0.1:1", "-o", str(tmp_path / "s.json"), "--history", "forever"]) == 1
    assert "--history" in _one_line_error(capsys)
    assert main(["snapshot", "-p", "http://127.0.0.1:1", "-o", str(tmp_path / "s.json"), "--end", "yesterday"]) == 1
    assert "--end" in _one_line_error(capsys)
    assert main(["snapshot", "-o", str(tmp_path / "s.json")]) == 1
    assert "--prometheus-url" in _one_line_error(capsys)
    assert main(["snapshot", "-p", "http://127.0.0.1:1", "-o", str(tmp_path / "s.json"), "--no-progress",
                 "--selector", "job="]) == 1
    assert "--selector 'job=': want label matchers" in _one_line_error(capsys)


def test_window_queries_chunked_when_refused(real_prom, tmp_path, capsys):
    """Newer Prometheus versions count instant-query range samples against --query.max-samples; 2.42 does
    not, so a proxy refuses (422, Prometheus' own message) queries with a range over 2h and forwards the rest
    to the real Prometheus. The snapshot must split the window and still match the generator."""
    import re as _re

    from audit_tune.analysis.snapshot import Snapshot

    prom, tr = real_prom
    sess = requests.Session()
    sess.trust_env = False

    def handle(h):
        q = parse_qs(urlsplit(h.path).query).get("query", [""])[0]
        if any(int(m) > 7200 for m in _re.findall(r"\[(\d+)s\]", q)):
            return 422, json.dumps({"status": "error", "errorType": "execution",
                                    "error": "query processing would load too many samples into memory in query execution"}), {}
        r = sess.get(prom.url + h.path, timeout=30)
        return r.status_code, r.content, {}

    px = _Server(handle)
    try:
        assert main(_args(tr, px.url, tmp_path)[:-1]) == 0     # without --no-progress: the split is said
        assert "window queries split into 4 chunks" in capsys.readouterr().err
        snap = Snapshot.load(tmp_path / "s.json")
        inst, t = snap.instances["10.0.1.1:6443"], tr.instances["10.0.1.1:6443"]
        assert inst.events_increase == pytest.approx(t.events, rel=0.002)
        assert sum(inst.requests_by_verb.values()) == pytest.approx(t.requests, rel=0.002)
        assert inst.webhook.duration.count == pytest.approx(t.posts, rel=0.002)
        assert any("reset" in m.why for m in snap.missing)
    finally:
        px.close()
