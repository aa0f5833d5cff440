"""The local provider against the real binaries: etcd 3.6 + kube-apiserver 1.37 on 127.0.0.1.

Needs the binaries from scripts/build-stack.sh (built by the ``stack_binaries`` fixture).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.loadgen.local import LocalCluster, audit_args
from audit_tune.loadgen.procs import Proc
from audit_tune.sim.config import AuditFlags, parse_flags

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_local_stack_audits_to_webhook_and_down_leaves_nothing(stack_binaries, audit_receiver, tmp_path):
    flags = parse_flags(["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=10",
                         "--audit-webhook-batch-throttle-qps=20"])
    c = LocalCluster("t-local", flags=flags, sink_url=audit_receiver.url, state_root=tmp_path)
    t0 = time.monotonic()
    c.up()
    try:
        startup = time.monotonic() - t0
        assert startup < 60, startup
        assert c.server.startswith("https://127.0.0.1:")
        assert c.metrics_url == c.server + "/metrics"
        # the candidate flags reached kube-apiserver verbatim
        for f in ("--audit-webhook-batch-max-size=10", "--audit-webhook-batch-max-wait=1s",
                  "--audit-webhook-batch-throttle-qps=20", f"--audit-webhook-config-file={c.webhook_kubeconfig}"):
            assert f in c.apiserver_args
        assert any(a.startswith("--audit-policy-file=") and a.endswith("default.yaml") for a in c.apiserver_args)
        # kubeconfig for the client-cert user
        kc = yaml.safe_load(c.kubeconfig.read_text())
        assert kc["clusters"][0]["cluster"]["server"] == c.server
        assert kc["current-context"] == "audit-tune-t-local"
        assert oct(c.kubeconfig.stat().st_mode & 0o777) == "0o600"
        wh = yaml.safe_load(c.webhook_kubeconfig.read_text())
        assert wh["clusters"][0]["cluster"]["server"] == audit_receiver.url

        # create a config map with the client cert via requests
        import requests

        r = requests.post(f"{c.server}/api/v1/namespaces/default/configmaps",
                          json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-tune-probe"},
                                "data": {"k": "v"}},
                          cert=(str(c.client_cert), str(c.client_key)), verify=str(c.ca_file), timeout=10)
        assert r.status_code == 201, r.text

        with c.session() as s:
            total = _wait(lambda: _metric(s.get(c.metrics_url, timeout=10).text, "apiserver_audit_event_total"),
                          what="apiserver_audit_event_total > 0")
            assert total > 0

        def got_configmap_create():
            return [e for e in audit_receiver.events()
                    if e.get("verb") == "create" and (e.get("objectRef") or {}).get("resource") == "configmaps"
                    and (e.get("objectRef") or {}).get("name") == "audit-tune-probe"]

        evs = _wait(got_configmap_create, 30, "the configmap create event at the receiver")
        assert evs[0]["user"]["username"] == "audit-tune-loadgen"
        assert "system:masters" in evs[0]["user"]["groups"]
        assert evs[0]["stage"] == "ResponseComplete"  # default policy omits RequestReceived
        assert all(p.get("kind") == "EventList" and p.get("apiVersion") == "audit.k8s.io/v1"
                   for p in audit_receiver.posts)
        assert max(len(p["items"]) for p in audit_receiver.posts) <= 10  # --audit-webhook-batch-max-size=10
        assert all(path.startswith("/audit") for path in audit_receiver.paths)

        # state file lets another process find it
        st = json.loads(c.state_file.read_text())
        assert st["server"] == c.server and st["provider"] == "local"
        assert {p["name"] for p in st["processes"]} == {"etcd", "kube-apiserver"}
        other = LocalCluster.load("t-local", state_root=tmp_path)
        status = other.status()
        assert status["running"] is True and status["readyz"] == "ok"
        procs = list(c.processes)
        data_dir = c.data_dir
    finally:
        c.down()
    assert all(not p.alive() for p in procs)
    assert not c.state_dir.exists()
    assert data_dir is not None and not data_dir.exists()


def test_no_sink_means_no_webhook_flag_and_policy_choice(stack_binaries, tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    c = LocalCluster("t-nosink", policy=pol, state_root=tmp_path / "st",
                     flags=parse_flags(["--audit-log-path=" + str(tmp_path / "audit.log"), "--audit-log-maxsize=0"]))
    with c:
        assert not any(a.startswith("--audit-webhook-config-file") for a in c.apiserver_args)
        assert f"--audit-policy-file={pol.resolve()}" in c.apiserver_args
        with c.session() as s:
            s.get(f"{c.server}/api/v1/namespaces", timeout=10).raise_for_status()
        _wait(lambda: (tmp_path / "audit.log").exists() and (tmp_path / "audit.log").stat().st_size > 0,
              what="audit log written")
    assert not c.state_dir.exists()


def test_given_webhook_kubeconfig_is_used_as_is(stack_binaries, audit_receiver, tmp_path):
    """--audit-webhook-config-file among the audit flags (or webhook_kubeconfig=) is passed through."""
    from audit_tune.loadgen.local import write_kubeconfig

    wh = write_kubeconfig(tmp_path / "wh.kubeconfig", server=audit_receiver.url, context="sink")
    flags = parse_flags([f"--audit-webhook-config-file={wh}", "--audit-webhook-batch-max-wait=1s"])
    with LocalCluster("t-givenwh", flags=flags, state_root=tmp_path / "st") as c:
        assert c.webhook_kubeconfig == wh.resolve() and c.sink_url == audit_receiver.url
        assert f"--audit-webhook-config-file={wh.resolve()}" in c.apiserver_args
        with c.session() as s:
            s.get(f"{c.server}/api/v1/namespaces/default/pods", timeout=10).raise_for_status()
        _wait(lambda: audit_receiver.events(), 30, "events at the receiver")
    assert wh.exists()  # not ours: down() leaves it alone
    with pytest.raises(InputError, match="give one of them"):
        LocalCluster("x", flags=flags, sink_url=audit_receiver.url, state_root=tmp_path)


def test_audit_args_skip_managed_flags():
    args = audit_args(AuditFlags())
    assert "--audit-webhook-batch-max-size=400" in args
    assert not any(a.startswith(("--audit-policy-file", "--audit-webhook-config-file", "--audit-log-")) for a in args)
    with_log = audit_args(parse_flags(["--audit-log-path=/tmp/a.log", "--audit-log-mode=batch"]))
    assert "--audit-log-path=/tmp/a.log" in with_log and "--audit-log-mode=batch" in with_log


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="--name"):
        LocalCluster("bad name!", state_root=tmp_path)
    with pytest.raises(InputError, match="--policy"):
        LocalCluster("x", policy=tmp_path / "missing.yaml", state_root=tmp_path)
    with pytest.raises(InputError, match="--sink-url"):
        LocalCluster("x", sink_url="ftp://h", state_root=tmp_path)
    with pytest.raises(ServiceError, match="no cluster named"):
        LocalCluster.load("nope", state_root=tmp_path)


def _tune(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit_tune.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_cli_up_status_down_detached(stack_binaries, prometheus_installed, tmp_path):
    env = {**os.environ, "AUDIT_TUNE_STATE": str(tmp_path)}
    r = _tune("cluster", "up", "--name", "t-cli", "--audit-webhook-batch-max-size=7",
              "--audit-webhook-batch-throttle-qps", "3", "--apiserver-arg=--max-requests-inflight=800",
              "-f", "json", env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    try:
        assert info["running"] is True and info["readyz"] == "ok"
        assert info["prometheus_url"].startswith("http://127.0.0.1:")
        assert "--audit-webhook-batch-max-size=7" in info["audit_flags"]
        assert "--audit-webhook-batch-throttle-qps=3" in info["audit_flags"]
        assert Path(info["kubeconfig"]).is_file()
        assert "--max-requests-inflight=800" in info["apiserver_args"]
        # the processes outlive `tune cluster up`
        st = json.loads((tmp_path / "t-cli" / "state.json").read_text())
        procs = [Proc.from_dict(p) for p in st["processes"]]
        assert {p.name for p in procs} == {"etcd", "kube-apiserver", "prometheus"}
        assert all(p.alive() for p in procs)
        s = _tune("cluster", "status", "--name", "t-cli", env=env)
        assert s.returncode == 0, s.stderr
        assert re.search(r"^readyz:\s+ok$", s.stdout, re.M), s.stdout
        assert "--audit-webhook-batch-max-size=7" in s.stdout
    finally:
        d = _tune("cluster", "down", "--name", "t-cli", env=env)
    assert d.returncode == 0, d.stderr
    assert all(not p.alive() for p in procs)
    s = _tune("cluster", "status", "--name", "t-cli", env=env)
    assert s.returncode == 1
    assert s.stderr.strip().count("\n") == 0 and "no such cluster" in s.stderr


def test_cli_wait_ctrl_c_stops_everything(stack_binaries, tmp_path):
    env = {**os.environ, "AUDIT_TUNE_STATE": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "audit_tune.cli", "cluster", "up", "--wait", "--no-prometheus",
                          "--name", "t-wait", "-f", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO)
    try:
        state = tmp_path / "t-wait" / "state.json"
        _wait(lambda: state.exists() or p.poll() is not None, 120, "state.json")
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        procs = [Proc.from_dict(x) for x in json.loads(state.read_text())["processes"]]
        assert len(procs) == 2 and all(x.alive() for x in procs)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopped" in err
    assert all(not x.alive() for x in procs)
    assert not (tmp_path / "t-wait").exists()


def test_owner_killed_then_down_from_another_process(stack_binaries, tmp_path):
    """A SIGKILLed owner cannot clean up; its state file lets `tune cluster down` stop the processes."""
    code = ("import time; from audit_tune.loadgen.local import LocalCluster; "
            f"c = LocalCluster('t-orphan', state_root={str(tmp_path)!r}).up(); print('up', flush=True); time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    state = tmp_path / "t-orphan" / "state.json"
    procs: list[Proc] = []
    try:
        assert p.stdout.readline().strip() == "up"
        procs = [Proc.from_dict(x) for x in json.loads(state.read_text())["processes"]]
        assert all(x.alive() for x in procs)
        p.kill()
        p.wait(10)
        with pytest.raises(ServiceError, match="already running"):
            LocalCluster("t-orphan", state_root=tmp_path).up()
        d = _tune("cluster", "down", "--name", "t-orphan", env={**os.environ, "AUDIT_TUNE_STATE": str(tmp_path)})
        assert d.returncode == 0, d.stderr
        assert all(not x.alive() for x in procs)
        assert not state.exists()
    finally:
        if p.poll() is None:
            p.kill()
        for x in procs:
            if x.alive():
                os.killpg(x.pid, signal.SIGKILL)


def test_second_up_with_same_name_is_refused(stack_binaries, tmp_path):
    with LocalCluster("t-dup", state_root=tmp_path, flags=AuditFlags()):
        with pytest.raises(ServiceError, match="already running"):
            LocalCluster("t-dup", state_root=tmp_path).up()
