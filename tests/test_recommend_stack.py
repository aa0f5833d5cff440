"""The recommendation, proven on a real kube-apiserver: the flags `tune recommend` gives for the bundled
sample (recorded from the local stack at 70 req/s with small flags, which lost ~1,000 events) are run
on a fresh local stack at the same load, and nothing is lost, as the simulator predicts.
Uses the real-stack fixtures of tests/test_e2e_stack.py (binaries built, never skipped)."""
from __future__ import annotations

import json
import time

from audit_tune.cli.app import main
from tests.test_e2e_stack import _run, stack, stacks  # noqa: F401 - the fixture is used by name


@stack
def test_recommended_flags_lose_nothing_on_the_real_stack(stacks, capsys) -> None:  # noqa: F811
    code = main(["recommend", "-f", "json", "--no-progress"])
    cap = capsys.readouterr()
    assert code == 3, cap.err  # the sample's own (recording) flags violate the objective
    rec = json.loads(cap.out)
    flags = rec["recommended"]["flags"]
    assert rec["confidence"] == "high"
    t0 = time.monotonic()
    st = stacks("recommended", flags)
    _, rep = _run(st, "recommended", t0, "70", 30.0, None)
    assert rep.observed["buffered"] == 0 and rep.observed["webhook"] == 0, rep.rows
    assert rep.predicted["buffered"] == 0 and rep.predicted["webhook"] == 0, rep.rows
    assert rep.accounting["lost"] == 0, rep.accounting
