"""The one kubeconfig reader (loadgen.kubeconfig) shared by the guard, the load generator and
cluster status: duplicate names refused as client-go does, relative paths against the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audit_tune.basics.errors import InputError
from audit_tune.loadgen import kubeconfig, kubetarget
from audit_tune.loadgen.guard import check_target, classify

PROD = "https://10.20.30.40:6443"
LOOP = "https://127.0.0.1:34567"


def _doc(clusters, contexts, users=None, current="kind-x"):
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": n, "cluster": {"server": s}} for n, s in clusters],
            "contexts": [{"name": n, "context": {"cluster": c, "user": "u"}} for n, c in contexts],
            "users": users if users is not None else [{"name": "u", "user": {"token": "t0ken"}}]}


def _write(tmp_path: Path, doc) -> Path:
    p = tmp_path / "kubeconfig"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("order", [(PROD, LOOP), (LOOP, PROD)])
def test_duplicate_cluster_name_is_refused_by_every_reader(tmp_path, order):
    """Production first and loopback second (or the reverse) under one name: neither the guard nor
    the load generator picks one; both refuse with the same one line."""
    p = _write(tmp_path, _doc([("kind-x", order[0]), ("kind-x", order[1])], [("kind-x", "kind-x")]))
    msgs = []
    for read in (lambda: check_target(p), lambda: kubetarget.from_kubeconfig(p), lambda: kubeconfig.load(p)):
        with pytest.raises(InputError) as e:
            read()
        msgs.append(str(e.value))
    assert len(set(msgs)) == 1
    assert "duplicate cluster name 'kind-x'" in msgs[0] and "\n" not in msgs[0] and "t0ken" not in msgs[0]
    assert kubeconfig.server_of(p) is None


def test_duplicate_context_and_user_names_are_refused(tmp_path):
    p = _write(tmp_path, _doc([("a", PROD), ("b", LOOP)], [("kind-x", "a"), ("kind-x", "b")]))
    with pytest.raises(InputError, match="duplicate context name 'kind-x'"):
        classify(p)
    users = [{"name": "u", "user": {"token": "tok-A1"}}, {"name": "u", "user": {"token": "tok-B2"}}]
    p = _write(tmp_path, _doc([("k", LOOP)], [("kind-x", "k")], users=users))
    with pytest.raises(InputError, match="duplicate user name 'u'") as e:
        kubetarget.from_kubeconfig(p)
    assert "tok-A1" not in str(e.value) and "tok-B2" not in str(e.value)


def test_guard_and_generator_resolve_the_same_server(tmp_path):
    p = _write(tmp_path, _doc([("p", PROD), ("k", LOOP)], [("prod", "p"), ("kind-x", "k")], current="prod"))
    for ctx, server in ((None, PROD), ("kind-x", LOOP)):
        assert classify(p, ctx).server == server
        assert kubetarget.from_kubeconfig(p, ctx).server == server
        assert kubeconfig.resolve(p, ctx).server == server


@pytest.mark.parametrize("doc, fragment", [
    ([1, 2], "not a kubeconfig"),
    ({"clusters": "x"}, "clusters must be a list"),
    ({"clusters": [["x"]]}, "clusters[0] must be a mapping"),
    ({"clusters": [{"name": "a", "cluster": "s"}]}, "cluster 'a' must be a mapping"),
    ({"current-context": 5}, "current-context must be a string"),
    ({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "nope"}}]}, "names no cluster"),
])
def test_wrong_shapes_are_one_line_errors(tmp_path, doc, fragment):
    p = _write(tmp_path, doc)
    with pytest.raises(InputError) as e:
        kubeconfig.resolve(p)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_binary_and_alias_bomb_kubeconfigs_are_refused(tmp_path):
    p = tmp_path / "kc"
    p.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="not UTF-8"):
        kubeconfig.load(p)
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p.write_text("\n".join(bomb) + "\n")
    with pytest.raises(InputError, match="expands to more than"):
        kubeconfig.load(p)


def test_relative_paths_resolve_against_the_kubeconfig_folder(tmp_path):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "tok").write_text("abc\n")
    doc = _doc([("k", LOOP)], [("kind-x", "k")], users=[{"name": "u", "user": {"tokenFile": "tok"}}])
    doc["clusters"][0]["cluster"]["certificate-authority"] = "ca.crt"
    p = _write(d, doc)
    t = kubetarget.from_kubeconfig(p)
    assert t.token == "abc" and t.ca_file == str(d / "ca.crt")
