"""Bounded inputs: the one YAML loader (basics.yamlsafe) for every YAML the project reads, the
simulate size limit, and sweeps counted before they are built."""
from __future__ import annotations

import pytest

from audit_tune.basics import yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.cli.app import main
from audit_tune.sim.build import WorkloadOptions, build_workload
from audit_tune.sim.limits import MAX_EVENTS, check_size, expected_events


def bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_it_is_built():
    with pytest.raises(InputError, match="expands to more than 1,000,000 nodes"):
        yamlsafe.load(bomb(), "x.yaml")
    small = yamlsafe.load(bomb(3), "x.yaml")  # 9^3 leaves: fine
    assert len(small["l2"]) == 9 and small["l2"][0][0] == ["x"] * 9


def test_depth_recursion_nul_and_binary_are_one_line_errors():
    for text, fragment in (("[" * 5000 + "]" * 5000, "nested deeper than"),
                           ("a: &a [*a]", "refers to a node that contains it"),
                           ("a: b\x00c", "NUL byte"),
                           (b"\xff\xfe\xfd", "not UTF-8")):
        with pytest.raises(InputError) as e:
            yamlsafe.load(text, "in.yaml")
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert yamlsafe.load("[" * 50 + "]" * 50, "ok")  # ordinary nesting is fine
    with pytest.raises(InputError, match="2 YAML documents"):
        yamlsafe.load("a: 1\n---\nb: 2\n", "two.yaml")


def test_self_referencing_alias_is_refused():
    with pytest.raises(InputError):
        yamlsafe.load("a: &a\n  b: *a\n", "rec.yaml")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("kind, args", [
    ("scenario", ["simulate", "--scenario"]),
    ("flags", ["simulate", "--rate", "100", "--duration", "1s", "--flags-file"]),
    ("sweep", ["sweep", "--dry-run"]),
    ("policy", ["policy", "explain"]),
])
def test_every_yaml_input_refuses_a_bomb(tmp_path, capsys, kind, args):
    p = tmp_path / f"{kind}.yaml"
    text = bomb()
    if kind == "flags":
        text = "apiVersion: v1\nkind: Pod\n" + text
    p.write_text(text)
    rc, out, err = _run(args + [str(p)], capsys)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "expands to more than" in err or "nested" in err, err


@pytest.mark.parametrize("manifest, fragment", [
    ("apiVersion: v1\nkind: Pod\nspec:\n  containers: {a: 1}\n", "spec.containers must be a list"),
    ("apiVersion: v1\nkind: Pod\nspec:\n  containers: [5]\n", "spec.containers[0] must be a mapping"),
    ("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: kube-apiserver\n",
     "spec.containers[0].command must be a list"),
    ("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n    command: [{a: b}]\n",
     "spec.containers[0].command must be a list"),
])
def test_wrong_typed_manifests_are_one_line_errors(tmp_path, capsys, manifest, fragment):
    p = tmp_path / "m.yaml"
    p.write_text(manifest)
    rc, _, err = _run(["simulate", "--rate", "100", "--duration", "1s", "--flags-file", str(p)], capsys)
    assert rc == 1 and fragment in err and err.count("\n") == 1


def test_flags_file_without_audit_flags_says_defaults_are_assumed(tmp_path, capsys):
    p = tmp_path / "flags"
    p.write_text("--secure-port=6443\n--v=2\n")
    rc, out, err = _run(["simulate", "--rate", "100", "--duration", "1s", "-f", "json", "--no-progress",
                         "--flags-file", str(p)], capsys)
    assert rc == 0 and "sets no --audit-* flag" in err and "defaults are assumed" in err
    p.write_text("--audit-webhook-batch-max-size=10\n")
    rc, out, err = _run(["simulate", "--rate", "100", "--duration", "1s", "-f", "json", "--no-progress",
                         "--flags-file", str(p)], capsys)
    assert rc == 0 and "sets no" not in err


def test_simulate_refuses_above_the_event_limit_without_force(capsys):
    w = build_workload(WorkloadOptions(rate="1e9", duration="10m"))
    assert expected_events(w) > MAX_EVENTS
    with pytest.raises(InputError, match="--force"):
        check_size(w)
    check_size(w, force=True)
    rc, out, err = _run(["simulate", "--rate", "1e9", "--duration", "10m"], capsys)
    assert rc == 1 and "--force" in err and err.count("\n") == 1 and out == ""
    for args, fragment in ((["--rate", "5k", "--instances", "100000000"], "at most 1000"),
                           (["--rate", "5k", "--instances", "2", "--weights", "nan,1"], "positive weights"),
                           (["--burst", "on=1000,off=10,mean-on=0s,mean-off=0s"], "at least 1ms")):
        rc, out, err = _run(["simulate", *args, "--duration", "10s"], capsys)
        assert rc == 1 and fragment in err and err.count("\n") == 1, err


def test_chunks_are_bounded_by_requests_not_seconds():
    """At 1e9 requests/s a chunk is far shorter than a second, so a chunk never holds more than a
    few times CHUNK_REQUESTS requests, whatever the rate."""
    from audit_tune.sim.workload import CHUNK_REQUESTS, iter_requests

    w = build_workload(WorkloadOptions(request_rate="1e9", duration="2ms"))
    sizes = [len(c.t) for c in iter_requests(w, 1, 0)]
    assert sum(sizes) > 1_000_000 and max(sizes) < 2 * CHUNK_REQUESTS


def test_sweep_is_counted_without_being_built(tmp_path, capsys):
    rc, out, err = _run(["sweep", "--axis", "audit-webhook-batch-max-size=1..1000:steps=100000",
                         "--axis", "audit-webhook-batch-buffer-size=1..100000:steps=100000", "--dry-run",
                         "-o", str(tmp_path / "o")], capsys)
    assert rc == 1 and "10,000,000,000 points" in err and "limit of 100,000" in err and err.count("\n") == 1
    spec = tmp_path / "s.yaml"
    spec.write_text("axes:\n  audit-webhook-batch-max-size: [1, 2, 3]\nseeds: 100000\n")
    rc, out, err = _run(["sweep", str(spec), "--dry-run"], capsys)
    assert rc == 1 and "300,000 points" in err and "seeds" in err
    spec.write_text("axes:\n  audit-webhook-batch-max-size: [1, 2, 3]\nseeds: 2\n")
    rc, out, err = _run(["sweep", str(spec), "--dry-run"], capsys)
    assert rc == 0 and out.startswith("6 points")
    assert not (tmp_path / "o").exists()
