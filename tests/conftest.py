"""Shared pytest fixtures, in sections by the part of the system they set up."""
from __future__ import annotations

# =====================================================================================
# Real stack (kube-apiserver, etcd, kindcheck, Prometheus).
# Binaries are BUILT by these fixtures (scripts/build-*.sh) when missing, so a fresh clone
# works; a failed build FAILS the tests (never skips them).
# =====================================================================================
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# Modules whose tests are pure computation (no servers, no clocks, no subprocess timing) and
# so may run in parallel (scripts/test-all.sh runs them with pytest-xdist). Every other module,
# including any new one, is marked ``serial`` and runs alone afterwards: real-stack, oracle,
# sink and load tests measure in-flight counts, latencies and timeouts that a loaded core moves.
PARALLEL_SAFE = frozenset({
    "test_architecture", "test_atomic", "test_auditlog", "test_calibrate", "test_collector", "test_config", "test_fast", "test_files", "test_fused", "test_heap", "test_jsondata",
    "test_quiet", "test_result", "test_stats", "test_pcg64", "test_shared", "test_simrunner", "test_taskpool",
    "test_fleet", "test_fluid", "test_fuzz", "test_guard", "test_kernels", "test_kubeconfig", "test_logbackend", "test_outage", "test_outage_runs", "test_outputs",
    "test_packaging", "test_policy", "test_properties", "test_selection", "test_workspace", "test_recommend", "test_reference", "test_restart_at_peak", "test_retry_after",
    "test_shutdown", "test_simulate_cli", "test_snapshot", "test_sweep", "test_units",
})


def pytest_configure(config):
    """The Ctrl-C tests send SIGINT to the CLI as a terminal does to its foreground job. A suite started
    in the background of a non-interactive shell (``bash -c 'bash .ci/run &'``) inherits SIGINT
    ignored (POSIX: such asynchronous commands ignore SIGINT and SIGQUIT); Python then leaves it
    ignored, and every child the tests start inherits that too, so the CLI under test never sees the
    signal (measured: ``tune sweep`` ran all 216 points to exit 0). Python's own handler here makes
    each child start with SIGINT at its default, as under a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = Path(str(item.fspath)).stem
        if module not in PARALLEL_SAFE or item.get_closest_marker("stack") or item.get_closest_marker("oracle"):
            item.add_marker(pytest.mark.serial)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """No test is ever skipped: everything a test needs is installed by scripts/test-all.sh, so a
    skip (a missing module, a stray ``importorskip``) is reported as a failure."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped, which this suite does not allow: {rep.longrepr}"


def _run_script(script: str, *args: str, timeout: float = 3600) -> None:
    r = subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                       timeout=timeout)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        pytest.fail(f"scripts/{script} {' '.join(args)} failed (exit {r.returncode}): {r.stderr[-2000:]}")


@pytest.fixture(scope="session")
def stack_binaries() -> dict[str, Path]:
    """kube-apiserver and etcd in the cache (built by scripts/build-stack.sh if missing)."""
    from audit_tune.loadgen.procs import cache_dir

    _run_script("build-stack.sh")
    b = cache_dir() / "bin"
    return {"kube-apiserver": b / "kube-apiserver", "etcd": b / "etcd"}


@pytest.fixture(scope="session")
def kindcheck_binary() -> Path:
    """The strict kind-config checker (built by scripts/build-kindcheck.sh if missing)."""
    from audit_tune.loadgen.procs import cache_dir

    _run_script("build-kindcheck.sh", "kindcheck")
    return cache_dir() / "bin" / "kindcheck"


@pytest.fixture(scope="session")
def prometheus_installed() -> str:
    """The Debian prometheus binary (installed by scripts/install-system.sh if missing)."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        _run_script("install-system.sh")
    p = shutil.which("prometheus")
    if not p:
        pytest.fail("prometheus still missing after scripts/install-system.sh")
    return p


class AuditReceiver:
    """A trivial audit webhook receiver on 127.0.0.1: stores every POST body, answers 200."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {"_invalid": body[:200].decode(errors="replace")}
                with outer._lock:
                    outer.posts.append(doc)
                    outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self) -> list[dict]:
        with self._lock:
            return [e for p in self.posts if p.get("kind") == "EventList" for e in p.get("items", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def audit_receiver():
    r = AuditReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def local_stack(stack_binaries, tmp_path_factory):
    """One LocalCluster for the session, webhook to an AuditReceiver, flushing every second."""
    from audit_tune.loadgen.local import LocalCluster
    from audit_tune.sim.config import parse_flags

    recv = AuditReceiver()
    flags = parse_flags(["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=50"])
    c = LocalCluster(f"session-{os.getpid()}", flags=flags, sink_url=recv.url,
                     state_root=tmp_path_factory.mktemp("clusters"))
    c.up()
    c.receiver = recv  # type: ignore[attr-defined]
    yield c
    c.down()
    recv.close()

# ===================== end of real-stack section =====================================


# =====================================================================================
# CLI entry point shared by command tests.
# =====================================================================================
@pytest.fixture
def tune_main():
    """``tune.cli.main``: run a command in-process, returning its exit code."""
    from audit_tune.cli.app import main

    return main
