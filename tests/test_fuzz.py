"""No traceback, anywhere: every command's file and option inputs fed with random bytes,
truncations, wrong types, huge and non-finite numbers. Each run must exit 0, 1, 3 or 4, print
exactly one error line (and no traceback) when it fails, and leave no file behind.

Bounded in time: the CLI runs in-process, each property has a small, derandomized example budget,
and the simulator's event limit is lowered for the run (any workload above 1e6 events is refused,
which is one of the answers under test)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_tune.analysis.snapshot import sample_path
from audit_tune.cli.app import main
from audit_tune.sim import limits

FUZZ = settings(max_examples=5, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
OK_CODES = {0, 1, 3, 4}

SCENARIO = json.dumps({"workload": {"arrivals": {"process": "poisson", "rate": 50}, "duration": "2s"},
                       "flags": {"audit-webhook-batch-max-size": 10}})
FLAGS = "--audit-webhook-batch-max-size=10\n--audit-webhook-batch-buffer-size=100\n"
MANIFEST = ("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n"
            "    - kube-apiserver\n    - --audit-webhook-batch-max-size=20\n")
SWEEP = "axes:\n  audit-webhook-batch-max-size: [10, 20]\nseeds: 1\n"
POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
KUBECONFIG = ("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n"
              "    server: https://10.0.0.1:6443\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n"
              "users:\n- name: u\n  user: {token: t}\n")
RATES = "0,100\n1,200\n2,50\n"

SIM = ["simulate", "--no-progress", "-f", "json"]
FILE_INPUTS = {
    "scenario": (SCENARIO, lambda f, o: [*SIM, "--scenario", f, "-o", o]),
    "scenario_yaml": ("workload:\n  duration: 2s\n", lambda f, o: [*SIM, "--scenario", f, "-o", o]),
    "flags": (FLAGS, lambda f, o: [*SIM, "--rate", "20", "--duration", "2s", "--flags-file", f, "-o", o]),
    "manifest": (MANIFEST, lambda f, o: [*SIM, "--rate", "20", "--duration", "2s", "--flags-file", f, "-o", o]),
    "rate_series": (RATES, lambda f, o: [*SIM, "--rate-series", f, "-o", o]),
    "trace": ("0.1\n0.2\n0.5\n", lambda f, o: [*SIM, "--trace", f, "-o", o]),
    "sweep": (SWEEP, lambda f, o: ["sweep", f, "--dry-run", "-o", o]),
    "policy": (POLICY, lambda f, o: ["policy", "explain", f, "-o", o]),
    "kubeconfig": (KUBECONFIG, lambda f, o: ["loadtest", "--kubeconfig", f, "--duration", "1s", "-o", o]),
}


@pytest.fixture(autouse=True)
def small_event_limit(monkeypatch):
    monkeypatch.setattr(limits, "MAX_EVENTS", 1e6)


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def check(rc: int, err: str, args: list[str]) -> None:
    assert "Traceback" not in err, (args, err)
    assert rc in OK_CODES, (args, rc, err)
    if rc == 1:
        lines = err.splitlines()
        assert sum(1 for x in lines if x.startswith("tune: error:")) == 1, (args, err)
        assert lines[-1].startswith("tune: error:") and "unexpected" not in lines[-1], (args, err)


def mutations(valid: str) -> st.SearchStrategy[bytes]:
    data = valid.encode()
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, max(0, len(data) - 1)).map(lambda n: data[:n]),
        st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=8)).map(
            lambda t: data[:t[0]] + t[1] + data[t[0]:]),
        st.sampled_from([b"[]", b"42", b'"text"', b"null", b"{}", b"[[[[[[", b"- - - -", b"\x00", b"\xff\xfe",
                         b"a: &a [*a]", b"{" * 3000, b"[" * 6000, b"NaN", b"1e999"]),
    )


def _file_case(name: str, blob: bytes) -> None:
    valid, make = FILE_INPUTS[name]
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / ("in.json" if name == "scenario" else "in.yaml" if name in ("scenario_yaml",) else "in")
        f.write_bytes(blob)
        out = Path(d) / "out"
        args = make(str(f), str(out))
        rc, _, err = run(args)
        check(rc, err, args)
        left = sorted(p.name for p in Path(d).iterdir())
        if rc != 0:
            assert left == ["in" if f.name == "in" else f.name], (args, left)
        else:
            assert all(not n.startswith(".") for n in left), left      # no temp files


@pytest.mark.parametrize("name", sorted(FILE_INPUTS))
def test_file_inputs(name):
    @FUZZ
    @given(blob=mutations(FILE_INPUTS[name][0]))
    def prop(blob: bytes) -> None:
        _file_case(name, blob)

    prop()


SNAPSHOT = sample_path().read_text()


@FUZZ
@given(blob=st.one_of(st.binary(max_size=300),
                      st.integers(0, len(SNAPSHOT) - 1).map(lambda n: SNAPSHOT[:n].encode())))
def test_snapshot_file(blob):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "snap.json"
        f.write_bytes(blob)
        args = ["recommend", "--snapshot", str(f), "--no-progress", "-o", str(Path(d) / "out")]
        rc, _, err = run(args)
        check(rc, err, args)
        assert rc == 1 and sorted(os.listdir(d)) == ["snap.json"]


NUMBERS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e300", "1e-300", "-0", "", " ", "1e9",
                                     "0x10", "1_000", "١٢", "5k", "10Mi", "abc", "1,2", "nan,1", "1,nan"]),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10**20, 10**20).map(str),
                    st.text(max_size=12))
DURATIONS = st.one_of(NUMBERS, st.sampled_from(["0s", "-1s", "1e300s", "nans", "1h1h", "10m", "1.5s", "1ns"]))
BASE = [*SIM, "--rate", "20", "--duration", "2s"]
OPTIONS = {
    "--rate": (NUMBERS, lambda v: [*SIM, "--duration", "2s", "--rate", v]),
    "--request-rate": (NUMBERS, lambda v: [*SIM, "--duration", "2s", "--request-rate", v]),
    "--duration": (DURATIONS, lambda v: [*SIM, "--rate", "20", "--duration", v]),
    "--instances": (NUMBERS, lambda v: [*BASE, "--instances", v]),
    "--weights": (NUMBERS, lambda v: [*BASE, "--instances", "2", "--weights", v]),
    "--burst": (st.one_of(NUMBERS, st.builds(lambda a, b, c, d: f"on={a},off={b},mean-on={c},mean-off={d}",
                                             NUMBERS, NUMBERS, DURATIONS, DURATIONS)),
                lambda v: [*SIM, "--duration", "2s", "--burst", v]),
    "--profile": (st.one_of(NUMBERS, st.builds(lambda a, b: f"{a}@{b}", NUMBERS, DURATIONS)),
                  lambda v: [*SIM, "--duration", "2s", "--profile", v]),
    "--event-size": (NUMBERS, lambda v: [*BASE, "--event-size", v]),
    "--webhook-latency": (DURATIONS, lambda v: [*BASE, "--webhook-latency", v]),
    "--webhook-failure-rate": (NUMBERS, lambda v: [*BASE, "--webhook-failure-rate", v]),
    "--audit-webhook-batch-max-size": (NUMBERS, lambda v: [*BASE, f"--audit-webhook-batch-max-size={v}"]),
    "--audit-webhook-batch-max-wait": (DURATIONS, lambda v: [*BASE, f"--audit-webhook-batch-max-wait={v}"]),
    "--seed": (NUMBERS, lambda v: [*BASE, "--seed", v]),
    "sweep --axis": (st.one_of(NUMBERS, st.builds(lambda a, b, c: f"audit-webhook-batch-max-size={a}..{b}:steps={c}",
                                                  NUMBERS, NUMBERS, NUMBERS)),
                     lambda v: ["sweep", "--axis", v, "--dry-run"]),
    "snapshot --end": (NUMBERS, lambda v: ["snapshot", "-o", "snap.json", "-p", "http://127.0.0.1:1", "--end", v, "--no-progress",
                                           "--prometheus-retries", "0", "--prometheus-timeout", "2s"]),
    "snapshot -p": (st.one_of(NUMBERS, st.sampled_from(["http://[::1", "https://[::1]:99999", "ftp://x",
                                                         "http://u:p@[fe80::1%eth0]:1", "http://:1", "//"])),
                    lambda v: ["snapshot", "-o", "snap.json", "-p", v, "--no-progress", "--prometheus-retries", "0",
                               "--prometheus-timeout", "1s"]),
    "snapshot -H": (st.one_of(st.text(max_size=20), st.builds(lambda k, v: f"{k}: {v}", st.text(max_size=8),
                                                               st.text(max_size=12))),
                    lambda v: ["snapshot", "-o", "snap.json", "-p", "http://127.0.0.1:1", "-H", v, "--no-progress",
                               "--prometheus-retries", "0", "--prometheus-timeout", "2s"]),
    "snapshot --history": (DURATIONS, lambda v: ["snapshot", "-o", "snap.json", "-p", "http://127.0.0.1:1", "--history", v,
                                                 "--no-progress", "--prometheus-retries", "0"]),
    "loadtest --server": (st.one_of(NUMBERS, st.sampled_from(["https://[::1", "https://10.0.0.1:99999", "x://y"])),
                          lambda v: ["loadtest", "--server", v, "--duration", "1s"]),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_values(name, tmp_path):
    strategy, make = OPTIONS[name]

    @FUZZ
    @given(value=strategy)
    def prop(value: str) -> None:
        args = make(value)
        rc, _, err = run(args)
        check(rc, err, args)

    before = sorted(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        prop()
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == before     # nothing written next to the user


def test_last_resort_handler_names_the_command_and_asks_for_a_bug_report(monkeypatch):
    """A failure no command anticipated (here an OSError raised inside the simulator) is still one
    line, naming the command; --debug shows the traceback."""
    from audit_tune.sim import api

    def broken(*a, **k):
        raise PermissionError(13, "Permission denied", "/var/lib/thing")

    monkeypatch.setattr(api, "run", broken)
    rc, _, err = run([*BASE])
    assert rc == 1 and err.count("\n") == 1
    assert "tune simulate: unexpected PermissionError on /var/lib/thing" in err and "--debug" in err
    rc, _, err = run(["--debug", *BASE])
    assert rc == 1 and "Traceback" in err
