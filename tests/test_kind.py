"""kind provider: generated configs pass kind's own strict decoding (Go checker), both kubeadm forms.

The checker (go/kindcheck) is built by the ``kindcheck_binary`` fixture. No Docker needed:
``docker`` is replaced by a stub that fails like a client without an engine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audit_tune.basics.errors import InputError
from audit_tune.loadgen.kind import (
    KindCluster,
    check_config,
    kind_args,
    kind_config,
    kubeadm_api_for,
    rewrite_sink_for_node,
)
from audit_tune.loadgen.kubeconfig import SinkAuth
from audit_tune.sim.config import parse_flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--audit-webhook-batch-max-size=10", "--audit-webhook-batch-throttle-qps=20",
         "--audit-webhook-batch-max-wait=5s", "--audit-webhook-truncate-enabled"]


def _write(tmp_path: Path, api: str, **kw) -> Path:
    wh = tmp_path / "webhook.kubeconfig"
    wh.write_text("apiVersion: v1\nkind: Config\n")
    text = kind_config(parse_flags(FLAGS + kw.pop("extra_flags", [])), name="audit", policy=REPO / "loadgen/policies/default.yaml",
                       webhook_kubeconfig=wh, kubeadm_api=api, **kw)
    p = tmp_path / f"kind-{api}.yaml"
    p.write_text(text)
    return p


def _patch(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    return yaml.safe_load(doc["nodes"][0]["kubeadmConfigPatches"][0])


@pytest.mark.parametrize("api", ["v1beta3", "v1beta4"])
def test_generated_config_passes_strict_checker(kindcheck_binary, tmp_path, api):
    p = _write(tmp_path, api)
    out = check_config(p)
    assert out.startswith("ok:") and f"kubeadm.k8s.io/{api}" in out
    patch = _patch(p)
    args = patch["apiServer"]["extraArgs"]
    if api == "v1beta3":
        assert isinstance(args, dict)
        assert args["audit-webhook-batch-max-size"] == "10"
        assert args["audit-webhook-config-file"] == "/etc/kubernetes/audit/webhook.kubeconfig"
    else:
        assert {"name": "audit-webhook-batch-max-size", "value": "10"} in args
        assert {"name": "audit-policy-file", "value": "/etc/kubernetes/audit/policy.yaml"} in args
    mounts = yaml.safe_load(p.read_text())["nodes"][0]["extraMounts"]
    assert {m["containerPath"] for m in mounts} == {"/etc/kubernetes/audit/policy.yaml",
                                                    "/etc/kubernetes/audit/webhook.kubeconfig"}
    assert all(Path(m["hostPath"]).is_absolute() and m["readOnly"] for m in mounts)


def test_log_backend_adds_log_volume_and_passes(kindcheck_binary, tmp_path):
    p = _write(tmp_path, "v1beta4", extra_flags=["--audit-log-path=/var/log/kubernetes/audit.log"])
    check_config(p)
    patch = _patch(p)
    assert {"name": "audit-log-path", "value": "/var/log/kubernetes/audit.log"} in patch["apiServer"]["extraArgs"]
    assert any(v["name"] == "audit-logs" and not v["readOnly"] for v in patch["apiServer"]["extraVolumes"])


@pytest.mark.parametrize("api,old,new,where", [
    ("v1beta4", "  extraMounts:", "  extraMount:", "extraMount"),              # kind v1alpha4 Node field
    ("v1beta4", "readOnly: true\n  - hostPath", "readonly: true\n  - hostPath", "readonly"),  # kind Mount field
    ("v1beta4", "  extraVolumes:", "  extraVolume:", "extraVolume"),           # kubeadm field in the patch
    ("v1beta3", "      mountPath:", "      mountpath:", "mountpath"),          # kubeadm v1beta3 HostPathMount
    ("v1beta4", "apiVersion: kind.x-k8s.io/v1alpha4", "apiVersion: kind.x-k8s.io/v1alpha3", "v1alpha4"),
])
def test_typo_fails_the_checker(kindcheck_binary, tmp_path, api, old, new, where):
    p = _write(tmp_path, api)
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError, match=where):
        check_config(p)
    r = subprocess.run([str(kindcheck_binary), str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and where in r.stderr


def test_list_form_under_v1beta3_fails(kindcheck_binary, tmp_path):
    p = _write(tmp_path, "v1beta4")
    p.write_text(p.read_text().replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3"))
    with pytest.raises(InputError, match="extraArgs"):
        check_config(p)


def test_kubeadm_api_auto_follows_kind():
    assert kubeadm_api_for("kindest/node:v1.35.1") == "v1beta3"
    assert kubeadm_api_for("kindest/node:v1.36.0@sha256:abc") == "v1beta4"
    assert kubeadm_api_for(None) == "v1beta4"
    assert kubeadm_api_for("kindest/node:v1.31.0", "v1beta4") == "v1beta4"
    with pytest.raises(InputError, match="--kubeadm-api"):
        kubeadm_api_for(None, "v1beta9")  # type: ignore[arg-type]


def test_kind_args_and_sink_rewrite():
    a = kind_args(parse_flags(FLAGS))
    assert a["audit-webhook-batch-max-size"] == "10" and a["audit-webhook-truncate-enabled"] == "true"
    assert not any(k.startswith("audit-log-") for k in a)
    assert rewrite_sink_for_node("http://127.0.0.1:9000/audit", "172.18.0.1") == "http://172.18.0.1:9000/audit"
    assert rewrite_sink_for_node("https://localhost/x", "10.0.0.9") == "https://10.0.0.9/x"
    assert rewrite_sink_for_node("https://sink.example.com/x", "10.0.0.9") == "https://sink.example.com/x"


def test_kind_cluster_write_config_with_https_sink(kindcheck_binary, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    k = KindCluster("kc", flags=parse_flags(FLAGS), sink_url="https://127.0.0.1:9443/audit",
                    sink_auth=SinkAuth(ca_file=ca, token="tok-123"), state_root=tmp_path / "st",
                    sink_host="192.168.49.1")
    p = k.write_config()
    check_config(p)
    wh = yaml.safe_load((p.parent / "audit-webhook.kubeconfig").read_text())
    assert wh["clusters"][0]["cluster"]["server"] == "https://192.168.49.1:9443/audit"
    assert wh["clusters"][0]["cluster"]["certificate-authority"] == "/etc/kubernetes/audit/audit-sink-ca.crt"
    assert "tok-123" not in p.read_text()  # the token is only in the 0600 webhook kubeconfig
    assert oct((p.parent / "audit-webhook.kubeconfig").stat().st_mode & 0o777) == "0o600"
    mounts = yaml.safe_load(p.read_text())["nodes"][0]["extraMounts"]
    assert "/etc/kubernetes/audit/audit-sink-ca.crt" in {m["containerPath"] for m in mounts}
    assert "tok-123" not in repr(SinkAuth(ca_file=ca, token="tok-123"))  # nor in a log of the options


def test_kind_cluster_refuses_an_unverified_sink(tmp_path):
    """kind has no insecure-skip-tls-verify for the sink: the node must trust the sink's CA."""
    with pytest.raises(InputError, match="--sink-insecure-skip-tls-verify: not for kind"):
        KindCluster("kc", sink_url="https://127.0.0.1:9443/audit", sink_auth=SinkAuth(insecure=True),
                    state_root=tmp_path)


@pytest.fixture
def no_docker(tmp_path):
    """PATH with a `docker` that fails like a client without a running engine."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    d = bindir / "docker"
    d.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                 "Is the docker daemon running?' >&2\nexit 1\n")
    d.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "AUDIT_TUNE_STATE": str(tmp_path / "state")}


def test_cli_kind_without_docker_is_one_line_error(no_docker):
    r = subprocess.run([sys.executable, "-m", "audit_tune.cli", "cluster", "up", "--provider", "kind",
                        "--audit-webhook-batch-max-size=10"], capture_output=True, text=True, env=no_docker,
                       cwd=REPO, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ["tune: error: kind needs a running Docker engine (docker info failed): Cannot connect to the "
                     "Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"], r.stderr
    assert r.stdout == ""


def test_cli_kind_config_only_needs_no_docker(kindcheck_binary, no_docker):
    r = subprocess.run([sys.executable, "-m", "audit_tune.cli", "cluster", "up", "--provider", "kind", "--config-only",
                        "--name", "cfg", "--kubeadm-api", "v1beta3", "--sink-url", "http://127.0.0.1:9000/audit",
                        "--audit-webhook-batch-max-size", "25", "-f", "json"],
                       capture_output=True, text=True, env=no_docker, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok:" in r.stderr
    import json

    info = json.loads(r.stdout)
    patch = _patch(Path(info["config"]))
    assert patch["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert patch["apiServer"]["extraArgs"]["audit-webhook-batch-max-size"] == "25"
    assert info["node_sink_url"] == "http://172.18.0.1:9000/audit"


def test_documented_unversioned_map_patch_passes(kindcheck_binary, tmp_path):
    """kind's auditing guide writes the patch without apiVersion, map-form extraArgs (kind >= 0.32 converts it)."""
    p = tmp_path / "doc.yaml"
    p.write_text("""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
  kubeadmConfigPatches:
  - |
    kind: ClusterConfiguration
    apiServer:
        extraArgs:
          audit-log-path: /var/log/kubernetes/kube-apiserver-audit.log
          audit-policy-file: /etc/kubernetes/policies/audit-policy.yaml
        extraVolumes:
          - name: audit-policies
            hostPath: /etc/kubernetes/policies
            mountPath: /etc/kubernetes/policies
            readOnly: true
            pathType: "DirectoryOrCreate"
  extraMounts:
  - hostPath: ./audit-policy.yaml
    containerPath: /etc/kubernetes/policies/audit-policy.yaml
    readOnly: true
""")
    assert "v1beta3" in check_config(p)


def test_cli_kind_without_docker_cli_is_one_line_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "AUDIT_TUNE_STATE": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, "-m", "audit_tune.cli", "cluster", "up", "--provider", "kind"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "tune: error: kind needs a running Docker engine (docker info failed): docker: command not found"]


def test_patch_version_must_match_the_node_image(kindcheck_binary, tmp_path):
    """kind silently ignores a kubeadm patch whose apiVersion differs from what it generates."""
    ok = _write(tmp_path, "auto", image="kindest/node:v1.35.1")
    assert "kubeadm.k8s.io/v1beta3" in check_config(ok)
    bad = _write(tmp_path, "v1beta3", image="kindest/node:v1.36.0")
    with pytest.raises(InputError, match="silently ignore"):
        check_config(bad)
    # no image: kind's default (v1.37) wants v1beta4; a v1beta3 patch only warns (--image may fix it)
    warn = _write(tmp_path, "v1beta3")
    assert "warning" in check_config(warn)
    with pytest.raises(InputError, match="--kubeadm-api v1beta3"):
        KindCluster("kc", kubeadm_api="v1beta3", image="kindest/node:v1.36.0", state_root=tmp_path).up()
