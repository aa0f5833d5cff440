"""The simulator refuses exactly the audit flag sets the real kube-apiserver refuses to start with.

Each flag set goes to the real binary (``~/.cache/audit-tune/bin/kube-apiserver``) together with
an out-of-range ``--secure-port``, so it always stops at option validation, which reports every
error at once (``run.go: command failed err="[...]"``); the audit errors among them are compared
with what :func:`sim.config.parse_flags` says.
"""
from __future__ import annotations

import subprocess

import pytest

from audit_tune.basics.errors import InputError
from audit_tune.sim.config import parse_flags

WEBHOOK_CONFIG = """apiVersion: v1
kind: Config
clusters:
- name: sink
  cluster: {server: "https://127.0.0.1:9"}
contexts:
- name: c
  context: {cluster: sink, user: u}
current-context: c
users:
- name: u
  user: {}
"""

CASES = [
    # truncate options are validated even with truncation off (webhook enabled)
    (["--audit-webhook-truncate-max-event-size=2", "--audit-webhook-truncate-max-batch-size=1"], True),
    (["--audit-webhook-truncate-max-event-size=0"], True),
    # log batch options are ignored while the log backend is off (no --audit-log-path) ...
    (["--audit-log-mode=batch", "--audit-log-batch-buffer-size=0", "--audit-log-format=xml"], False),
    # ... and checked once it is on
    (["--audit-log-path=LOG", "--audit-log-mode=batch", "--audit-log-batch-buffer-size=0"], True),
    (["--audit-webhook-batch-throttle-qps=0"], True),
    (["--audit-webhook-mode=blocking", "--audit-webhook-batch-buffer-size=0"], False),
    # spins a core but starts
    (["--audit-log-path=LOG", "--audit-log-mode=batch", "--audit-log-batch-max-size=10"], False),
]


def _real_audit_errors(binary, tmp_path, flags: list[str]) -> list[str]:
    wh = tmp_path / "webhook.yaml"
    wh.write_text(WEBHOOK_CONFIG)
    args = [str(binary), "--etcd-servers=http://127.0.0.1:9", "--secure-port=-5", f"--cert-dir={tmp_path}",
            f"--audit-webhook-config-file={wh}",
            *[f.replace("LOG", str(tmp_path / "audit.log")) for f in flags]]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, "the out-of-range --secure-port must stop it at validation"
    line = next(ln for ln in p.stderr.splitlines() if "command failed" in ln)
    assert "--secure-port -5 must be between" in line  # validation ran and reported its errors
    return [e.strip() for e in line.split("err=", 1)[1].strip('"[]').split(",") if "audit" in e]


@pytest.mark.parametrize("flags,refused", CASES)
def test_simulator_refuses_what_kube_apiserver_refuses(stack_binaries, tmp_path, flags, refused):
    real = _real_audit_errors(stack_binaries["kube-apiserver"], tmp_path, flags)
    assert bool(real) == refused, real
    sim_flags = [f.replace("LOG", "/tmp/audit.log") for f in flags]
    # the simulator always simulates the webhook (enabled here by its config file)
    sim_flags.append("--audit-webhook-config-file=/etc/webhook.yaml")
    if refused:
        with pytest.raises(InputError):
            parse_flags(sim_flags)
    else:
        parse_flags(sim_flags)
