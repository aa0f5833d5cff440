"""The fluid model of the webhook buffer (analysis/fluid.py): its compiled walk, which stops once every
path has dropped, against a plain numpy walk of every chunk of the same draws."""
import numpy as np
import pytest

from audit_tune.analysis.calibrate import calibrate
from audit_tune.analysis.calibrate.synthetic import synthetic_snapshot
from audit_tune.analysis.fluid import fluid_drop_probability, window_nets
from audit_tune.sim.config import parse_flags


def _p_window(m, flags, paths=200, seed=1, scale=1.0):
    """P(a path ever holds more than the room) over the observed window: every chunk is walked in
    numpy, step by step, whatever the paths have already done."""
    c = flags.webhook.batch
    room = c.buffer_size + (c.throttle_burst * c.max_batch_size if c.throttle_enable else 0)
    q = np.zeros(paths)
    dropped = np.zeros(paths, dtype=bool)
    for net in window_nets(m, flags, q, seed, scale):
        for k in range(net.shape[1]):
            q[:] = np.maximum(q + net[:, k], 0.0)  # in place: the chunks' skipping reads it
            dropped |= q > room
    return float(dropped.mean())


# seven days at 300 s steps (30 windows of 10 s each, so three chunks of the walk), busy for an hour
# in the first chunk and again in the second
DAYS = [300.0] * 100 + [2500.0] * 12 + [300.0] * 700 + [2500.0] * 12 + [300.0] * 1200

# P(drop) over the window at x1 and x1.1, measured with the reference walk above, for the bursts fitted
# at sigma 0 / 0.3 / 1: every path drops in the first busy hour (1/1/1), some do (0/0.25/1 at x1 and
# 0/0.83/1 at x1.1; 0/0.07/1 and 0/0.325/1), almost none (0/0/0.015 and 0/0/0.035)
FLAGS = {
    "drained at 800/s": ["--audit-webhook-batch-throttle-qps=2", "--audit-webhook-batch-buffer-size=500"],
    "drained at 3200/s": ["--audit-webhook-batch-throttle-qps=8", "--audit-webhook-batch-buffer-size=30000"],
    "drained at 3600/s": ["--audit-webhook-batch-throttle-qps=9", "--audit-webhook-batch-buffer-size=30000"],
    "drained at 40000/s": ["--audit-webhook-batch-throttle-qps=100", "--audit-webhook-batch-buffer-size=30000"],
}


def _model(sigma):
    return calibrate(synthetic_snapshot(rates={"a": DAYS}, step=300.0, sigma=sigma, event_size=900, seed=3), "a")


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("case", sorted(FLAGS))
def test_drop_probability_equals_the_walk_of_every_chunk(case, sigma):
    m = _model(sigma)
    flags = parse_flags(FLAGS[case])
    for scale in (1.0, 1.1):
        want = _p_window(m, flags, scale=scale)
        got = fluid_drop_probability(m, flags, m.duration, scale=scale)
        assert got["buffered"] == 1 - (1 - want) ** 1.0, (case, sigma, scale)  # over one window
        got5 = fluid_drop_probability(m, flags, 5 * m.duration, scale=scale)["buffered"]
        assert got5 == 1 - (1 - want) ** 5.0, (case, sigma, scale)


def test_the_cases_have_every_path_dropping_some_and_none():
    ps = {_p_window(_model(sigma), parse_flags(f), scale=scale)
          for sigma in (0.0, 0.3) for f in FLAGS.values() for scale in (1.0, 1.1)}
    assert {0.0, 1.0} <= ps and any(0 < p < 1 for p in ps), ps
