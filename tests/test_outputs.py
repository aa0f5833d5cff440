"""Every ``tune recommend`` output parses and says what the recommendation says."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
import yaml

from audit_tune.analysis.calibrate import synthetic_snapshot
from audit_tune.analysis.recommend import Objective, build_report
from audit_tune.analysis.render import recommend as outputs
from audit_tune.basics.output import render
from audit_tune.sim.config import AuditFlags, load_flags_file, parse_flags


@pytest.fixture(scope="module")
def report():
    snap = synthetic_snapshot(rates={"apiserver-0": [800.0, 1200.0, 2500.0, 1500.0, 900.0] * 4}, sigma=0.4)
    return build_report(snap, AuditFlags(), "defaults", Objective(seeds=2, jobs=1, peak_window="2m"), seed=5)


@pytest.fixture(scope="module")
def rec_flags(report):
    return parse_flags(report.recommended.flags)


def _no_comments(text: str) -> str:
    return "\n".join(x for x in text.splitlines() if not x.startswith("#"))


def _echo(text: str, report) -> None:
    head = text.splitlines()[0]
    assert head.startswith("# audit-tune ") and f"seed={report.config.seed}" in head
    assert "objective:" in text and "current flags" in text


def test_json_and_yaml_load_and_echo_config(report):
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        d = load(render(report, fmt))
        assert d["tool_version"] and d["config"]["seed"] == 5
        assert d["config"]["objective"]["headroom"] == 2.0
        assert d["recommended"]["flags"] == report.recommended.flags
        assert d == json.loads(json.dumps(report.to_dict()))


def test_flags_block_reads_back_as_a_flags_file(report, rec_flags, tmp_path):
    text = render(report, "flags")
    _echo(text, report)
    p = tmp_path / "flags.txt"
    p.write_text(text)
    assert load_flags_file(p) == rec_flags
    assert all(x.startswith("--audit-webhook-") for x in _no_comments(text).split())


def test_kubeadm_v1beta4_extra_args_is_a_list_of_name_value(report, rec_flags):
    text = render(report, "kubeadm")
    _echo(text, report)
    d = yaml.safe_load(text)
    assert d["apiVersion"] == "kubeadm.k8s.io/v1beta4" and d["kind"] == "ClusterConfiguration"
    args = d["apiServer"]["extraArgs"]
    assert isinstance(args, list) and all(set(a) == {"name", "value"} and isinstance(a["value"], str) for a in args)
    assert parse_flags([f"--{a['name']}={a['value']}" for a in args]) == rec_flags


def test_kubeadm_v1beta3_extra_args_is_a_map(report, rec_flags):
    d = yaml.safe_load(render(report, "kubeadm-v1beta3"))
    assert d["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    args = d["apiServer"]["extraArgs"]
    assert isinstance(args, dict) and all(isinstance(v, str) for v in args.values())
    assert parse_flags([f"--{k}={v}" for k, v in args.items()]) == rec_flags


def test_kind_config_has_kubeadm_patches_and_mounts(report, rec_flags):
    text = render(report, "kind")
    _echo(text, report)
    d = yaml.safe_load(text)
    assert d["kind"] == "Cluster" and d["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    cp = [n for n in d["nodes"] if n["role"] == "control-plane"][0]
    patch = yaml.safe_load(cp["kubeadmConfigPatches"][0])
    assert patch["kind"] == "ClusterConfiguration" and "apiVersion" not in patch  # kind converts map form for v1beta4
    args = patch["apiServer"]["extraArgs"]
    assert args["audit-policy-file"] == outputs.POLICY_PATH
    assert args["audit-webhook-config-file"] == outputs.WEBHOOK_KUBECONFIG
    tuned = {k: v for k, v in args.items() if k.startswith("audit-webhook-") and k != "audit-webhook-config-file"}
    assert parse_flags([f"--{k}={v}" for k, v in tuned.items()]) == rec_flags
    mounts = {m["containerPath"] for m in cp["extraMounts"]}
    assert {outputs.POLICY_PATH, outputs.WEBHOOK_KUBECONFIG} <= mounts
    vols = {v["mountPath"] for v in patch["apiServer"]["extraVolumes"]}
    assert all(any(p.startswith(v) for v in vols) for p in mounts)


def test_manifest_patch_applied_to_a_static_pod_gives_the_flags(report, rec_flags, tmp_path):
    ops = yaml.safe_load(render(report, "manifest-patch"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kube-apiserver"},
           "spec": {"containers": [{"name": "kube-apiserver", "command": [
               "kube-apiserver", "--etcd-servers=https://127.0.0.1:2379",
               "--audit-webhook-batch-max-size=400", "--audit-webhook-batch-throttle-qps=10"]}]}}
    for op in ops:  # RFC 6902 "add" to the end of an array
        assert op["op"] == "add" and op["path"] == "/spec/containers/0/command/-"
        pod["spec"]["containers"][0]["command"].append(op["value"])
    p = tmp_path / "kube-apiserver.yaml"
    p.write_text(yaml.safe_dump(pod))
    assert load_flags_file(p) == rec_flags  # later flags win, as in pflag


def test_prometheusrule_is_valid_and_uses_the_recommended_capacity(report, rec_flags, tmp_path):
    text = render(report, "prometheusrule")
    _echo(text, report)
    d = yaml.safe_load(text)
    assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["kind"] == "PrometheusRule"
    assert d["metadata"]["name"] and d["metadata"]["annotations"]["audit-tune/seed"] == "5"
    rules = {r["alert"]: r for g in d["spec"]["groups"] for r in g["rules"]}
    drop = rules["KubeAPIServerAuditEventsDropped"]
    assert "increase(apiserver_audit_error_total" in drop["expr"] and "plugin" in drop["expr"] and "> 0" in drop["expr"]
    head = rules["KubeAPIServerAuditWebhookNearCapacity"]
    c = rec_flags.webhook.batch
    assert f"0.8 * {c.throttle_qps:g} * {c.max_batch_size}" in head["expr"] and "by (instance)" in head["expr"]
    assert 'job="apiserver"' in head["expr"]  # the snapshot's selector
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-system.sh"
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": d["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 2 rules found" in r.stdout


def test_paste_formats_refuse_when_nothing_met_the_objective(report):
    from audit_tune.basics.errors import InputError

    bad = dataclasses.replace(report, recommended=None)
    for fmt in ("flags", "kubeadm", "kind", "manifest-patch", "prometheusrule"):
        with pytest.raises(InputError, match="no flag set met the objective"):
            render(bad, fmt)
    assert "No flag set met the objective" in outputs.render_table(bad)


def test_table_colours_only_on_a_terminal(report):
    plain = outputs.render_table(report, color=False)
    assert "\x1b[" not in plain and "recommended" in plain
    coloured = outputs.render_table(report, color=True)
    assert "\x1b[32m" in coloured  # green: meets objective


def test_kind_and_kubeadm_outputs_pass_the_strict_checker(report, kindcheck_binary, tmp_path):
    """kind's and kubeadm's own Go types, strict decoding (go/kindcheck, see tests/test_kind.py)."""
    kind = tmp_path / "kind.yaml"
    kind.write_text(render(report, "kind"))
    r = subprocess.run([str(kindcheck_binary), str(kind)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr
    for fmt, version in (("kubeadm", "v1beta4"), ("kubeadm-v1beta3", "v1beta3")):
        cfg = tmp_path / f"{fmt}.yaml"
        cfg.write_text(yaml.safe_dump({"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": [
            {"role": "control-plane", "kubeadmConfigPatches": [render(report, fmt)]}]}))
        r = subprocess.run([str(kindcheck_binary), str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f"kubeadm.k8s.io/{version}" in r.stdout, r.stdout + r.stderr
