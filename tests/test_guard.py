"""Target safety (loadgen.guard): load only goes to clusters known to be throw-away test clusters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from audit_tune.basics.errors import InputError
from audit_tune.loadgen.guard import (
    OVERRIDE_FLAG,
    check_server,
    check_target,
    classify,
    classify_server,
    redact,
    redact_url,
)
from audit_tune.loadgen.local import write_kubeconfig

SECRET = "s3cr3t-token-value"


def _kc(tmp_path: Path, server: str, context: str, name: str = "kubeconfig", token: str | None = SECRET) -> Path:
    p = tmp_path / name
    write_kubeconfig(p, server=server, context=context, token=token)
    return p


def test_kind_context_on_loopback_is_kind(tmp_path):
    t = check_target(_kc(tmp_path, "https://127.0.0.1:34567", "kind-audit"))
    assert t.kind == "kind" and t.is_test_cluster


def test_audit_tune_context_on_loopback_is_local(tmp_path):
    t = check_target(_kc(tmp_path, "https://localhost:6443", "audit-tune-demo"))
    assert t.kind == "local"


def test_created_by_local_provider(tmp_path):
    d = tmp_path / "clusters" / "demo"
    d.mkdir(parents=True)
    kc = _kc(d, "https://127.0.0.1:40000", "whatever-name")
    (d / "state.json").write_text(json.dumps({"provider": "local", "kubeconfig": str(kc), "server": "https://127.0.0.1:40000"}))
    t = classify(kc)
    assert t.kind == "local" and "created by audit-tune" in t.reason


def test_remote_server_is_refused_without_override(tmp_path):
    kc = _kc(tmp_path, "https://10.1.2.3:6443", "prod-admin")
    with pytest.raises(InputError) as e:
        check_target(kc)
    msg = str(e.value)
    assert "refusing" in msg and OVERRIDE_FLAG in msg and "https://10.1.2.3:6443" in msg
    assert SECRET not in msg and "\n" not in msg
    t = check_target(kc, i_understand=True)
    assert t.kind == "remote" and not t.is_test_cluster


def test_kind_named_context_on_remote_server_is_refused(tmp_path):
    with pytest.raises(InputError, match="not on loopback"):
        check_target(_kc(tmp_path, "https://kind.example.com:6443", "kind-prod"))


def test_loopback_with_unknown_context_is_refused(tmp_path):
    """A loopback server may be an SSH tunnel or port-forward to a real cluster."""
    with pytest.raises(InputError, match="tunnel"):
        check_target(_kc(tmp_path, "https://127.0.0.1:6443", "prod-via-tunnel"))


def test_context_selection_and_errors(tmp_path):
    p = tmp_path / "multi"
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "prod",
           "clusters": [{"name": "p", "cluster": {"server": "https://10.0.0.1"}},
                        {"name": "k", "cluster": {"server": "https://127.0.0.1:1234"}}],
           "users": [{"name": "u", "user": {"token": SECRET}}],
           "contexts": [{"name": "prod", "context": {"cluster": "p", "user": "u"}},
                        {"name": "kind-x", "context": {"cluster": "k", "user": "u"}}]}
    p.write_text(yaml.safe_dump(doc))
    assert classify(p).kind == "remote"
    assert classify(p, context="kind-x").kind == "kind"
    with pytest.raises(InputError, match="contexts: kind-x, prod") as e:
        classify(p, context="nope")
    assert SECRET not in str(e.value)
    with pytest.raises(InputError, match="missing: no such file"):
        classify(tmp_path / "missing")


def test_user_info_in_server_url_is_never_echoed(tmp_path):
    kc = _kc(tmp_path, "https://admin:hunter2@10.9.9.9:6443", "prod")
    with pytest.raises(InputError) as e:
        check_target(kc)
    assert "hunter2" not in str(e.value) and "admin" not in str(e.value)
    assert classify_server("https://admin:hunter2@127.0.0.1:1/x?token=abc", "kind-a").server == "https://127.0.0.1:1/x"


def test_check_server():
    assert check_server("https://127.0.0.1:6443") == "https://127.0.0.1:6443"
    with pytest.raises(InputError, match=OVERRIDE_FLAG):
        check_server("https://203.0.113.5:6443")
    assert check_server("https://203.0.113.5:6443", i_understand=True)


def test_redact():
    text = f"token: {SECRET} password=pw1 Authorization: Bearer abc.def https://u:p@h/x client-key-data: QUJD"
    out = redact(text)
    for s in (SECRET, "pw1", "abc.def", "u:p@", "QUJD"):
        assert s not in out
    assert redact_url("https://u:p@h:1/p?token=x") == "https://h:1/p"


def test_state_file_vouches_only_for_the_server_it_recorded(tmp_path):
    """A state.json saying provider: kind next to a kubeconfig does not make any server a test
    cluster: the kubeconfig's server must be the one the state recorded."""
    d = tmp_path / "clusters" / "demo"
    d.mkdir(parents=True)
    kc = _kc(d, "https://10.1.2.3:6443", "prod-admin")
    (d / "state.json").write_text(json.dumps({"provider": "kind", "kubeconfig": str(kc),
                                              "server": "https://127.0.0.1:40000"}))
    with pytest.raises(InputError, match="not on loopback"):
        check_target(kc)
    (d / "state.json").write_text(json.dumps({"provider": "kind", "kubeconfig": str(kc)}))
    assert classify(kc).kind == "remote"
    (d / "state.json").write_text(json.dumps({"provider": "kind", "kubeconfig": str(kc),
                                              "server": "https://10.1.2.3:6443"}))
    assert classify(kc).kind == "kind"


def test_duplicate_names_production_first_loopback_second(tmp_path):
    p = tmp_path / "kc"
    doc = {"current-context": "kind-x",
           "clusters": [{"name": "kind-x", "cluster": {"server": "https://10.0.0.1:6443"}},
                        {"name": "kind-x", "cluster": {"server": "https://127.0.0.1:1234"}}],
           "users": [{"name": "u", "user": {"token": SECRET}}],
           "contexts": [{"name": "kind-x", "context": {"cluster": "kind-x", "user": "u"}}]}
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="duplicate cluster name") as e:
        check_target(p)
    assert SECRET not in str(e.value)
