"""Impossible snapshot values (negative increases, an end before the start, step <= 0, non-finite
or 1e300 rates, binary files) are one-line errors (exit 1) naming the field."""
from __future__ import annotations

import copy
import json

import pytest

from audit_tune.analysis.snapshot import Snapshot, sample_path
from audit_tune.cli.app import main


@pytest.fixture(scope="module")
def sample():
    return json.loads(sample_path().read_text())


def _first(d):
    return next(iter(d["instances"].values()))


@pytest.mark.parametrize("edit, field", [
    (lambda d: _first(d).__setitem__("events_increase", -5), "events_increase"),
    (lambda d: d["source"]["window"].__setitem__("step", 0), "source.window.step"),
    (lambda d: d["source"]["window"].__setitem__("end", d["source"]["window"]["start"] - 60), "source.window.end"),
    (lambda d: _first(d)["event_rate"]["v"].__setitem__(0, 1e300), "event_rate.v[0]"),
    (lambda d: _first(d)["event_rate"]["v"].__setitem__(0, -1.0), "event_rate.v[0]"),
    (lambda d: _first(d)["level_increase"].__setitem__("Metadata", -1), "level_increase.Metadata"),
])
def test_impossible_values_exit_1_naming_the_field(sample, tmp_path, capsys, edit, field):
    d = copy.deepcopy(sample)
    edit(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    rc = main(["recommend", "--snapshot", str(p), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and field in err and "Traceback" not in err, err


def test_nan_and_binary_snapshots(sample, tmp_path, capsys):
    p = tmp_path / "nan.json"
    p.write_text(json.dumps(sample).replace('"events_increase": ', '"events_increase": NaN, "x": ', 1))
    rc = main(["recommend", "--snapshot", str(p), "--no-progress"])
    assert rc == 1 and "events_increase" in capsys.readouterr().err
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    rc = main(["recommend", "--snapshot", str(p), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "not UTF-8" in err
    assert Snapshot.from_dict(sample).usable   # the untouched sample loads
