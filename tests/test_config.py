import pytest

from audit_tune.basics.errors import InputError
from audit_tune.sim.config import AuditFlags, load_flags_file, parse_flags


def test_defaults_are_upstream():
    f = AuditFlags()
    w = f.webhook
    assert (w.mode, w.batch.buffer_size, w.batch.max_batch_size, w.batch.max_batch_wait) == ("batch", 10000, 400, 30.0)
    assert (w.batch.throttle_enable, w.batch.throttle_qps, w.batch.throttle_burst, w.batch.async_delegate) == (True, 10.0, 15, True)
    assert f.log.mode == "blocking" and f.log.batch.max_batch_size == 1 and not f.log.batch.async_delegate
    assert f.webhook_initial_backoff == 10.0
    assert f.webhook.batch.drain_capacity == 4000


def test_round_trip_every_flag():
    f = parse_flags(["--audit-webhook-batch-max-size=250", "--audit-webhook-batch-max-wait", "5s",
                     "--audit-webhook-batch-throttle-qps=300", "--audit-webhook-truncate-enabled",
                     "--audit-webhook-truncate-max-event-size=1048576", "--audit-log-mode=batch"])
    printed = f.to_flags()
    assert "--audit-webhook-batch-max-wait=5s" in printed
    assert "--audit-webhook-truncate-enabled=true" in printed
    assert parse_flags(printed) == f
    assert f.to_flags(only_changed=True) == [
        "--audit-log-mode=batch", "--audit-webhook-batch-max-size=250", "--audit-webhook-batch-max-wait=5s",
        "--audit-webhook-batch-throttle-qps=300", "--audit-webhook-truncate-enabled=true",
        "--audit-webhook-truncate-max-event-size=1048576"]


def test_deprecated_alias():
    assert parse_flags(["--audit-webhook-batch-initial-backoff=2s"]).webhook_initial_backoff == 2.0


@pytest.mark.parametrize("args,needle", [
    (["--audit-webhook-batch-buffer-size=0"], "--audit-webhook-batch-buffer-size=0"),
    (["--audit-webhook-batch-max-size=-1"], "--audit-webhook-batch-max-size"),
    (["--audit-webhook-batch-throttle-qps=0"], "--audit-webhook-batch-throttle-qps"),
    (["--audit-webhook-batch-throttle-burst=0"], "--audit-webhook-batch-throttle-burst"),
    (["--audit-webhook-mode=async"], "batch, blocking, blocking-strict"),
    (["--audit-webhook-batch-max-size=abc"], "not an integer"),
    (["--audit-webhook-batch-max-wait=10"], None),
    (["--audit-webhook-truncate-enabled", "--audit-webhook-truncate-max-batch-size=10"], "max-batch-size"),
    (["--audit-webhok-mode=batch"], "did you mean --audit-webhook-mode"),
    (["--audit-log-path=/tmp/a.log", "--audit-log-format=xml"], "legacy,json"),
    (["--audit-webhook-truncate-max-event-size=2", "--audit-webhook-truncate-max-batch-size=1"], "max-batch-size=1"),
    (["--audit-webhook-truncate-max-event-size=0"], "truncate-max-event-size=0"),
    (["--audit-log-path=/tmp/a.log", "--audit-log-mode=batch", "--audit-log-batch-buffer-size=0"],
     "--audit-log-batch-buffer-size=0"),
])
def test_validation_errors_name_the_flag(args, needle):
    if needle is None:  # a bare number is seconds, accepted
        assert parse_flags(args).webhook.batch.max_batch_wait == 10
        return
    with pytest.raises(InputError) as e:
        parse_flags(args)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_disabled_backends_not_validated():
    # upstream AuditLogOptions.Validate returns nothing when --audit-log-path is empty
    f = parse_flags(["--audit-log-mode=batch", "--audit-log-batch-buffer-size=0", "--audit-log-format=xml",
                     "--audit-log-truncate-max-event-size=0"])
    assert f.log.batch.buffer_size == 0
    # ... but a scenario that simulates the log backend checks it
    from audit_tune.sim.scenario import Scenario
    with pytest.raises(InputError, match="--audit-log-batch-buffer-size=0"):
        Scenario(flags=f, backends=("log", "webhook")).validate()


def test_spin_warning_only_for_sync_batch_max_wait_zero():
    spin = parse_flags(["--audit-log-path=/tmp/a.log", "--audit-log-mode=batch", "--audit-log-batch-max-size=10"])
    w = spin.spin_warning()
    assert w is not None and "\n" not in w and "--audit-log-batch-max-wait=0s" in w
    assert spin.spin_warning(("webhook",)) is None
    assert parse_flags(["--audit-log-path=/tmp/a.log", "--audit-log-mode=batch"]).spin_warning() is None
    assert parse_flags(["--audit-log-path=/tmp/a.log", "--audit-log-mode=batch", "--audit-log-batch-max-size=10",
                        "--audit-log-batch-max-wait=1s"]).spin_warning() is None
    assert parse_flags(["--audit-webhook-batch-max-wait=0s"]).spin_warning() is None


def test_batch_options_not_validated_outside_batch_mode():
    # upstream validates batch options only in batch mode
    f = parse_flags(["--audit-webhook-mode=blocking", "--audit-webhook-batch-buffer-size=0"])
    assert f.webhook.batch.buffer_size == 0


def test_flags_file_and_manifest(tmp_path):
    ff = tmp_path / "flags"
    ff.write_text("# kube-apiserver flags\n--secure-port=6443 --audit-webhook-batch-max-size=100 \\\n--audit-webhook-batch-throttle-qps=20\n")
    f = load_flags_file(ff)
    assert f.webhook.batch.max_batch_size == 100 and f.webhook.batch.throttle_qps == 20
    m = tmp_path / "kube-apiserver.yaml"
    m.write_text("""apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.37.2
    command:
    - kube-apiserver
    - --advertise-address=10.0.0.1
    - --audit-webhook-config-file=/etc/kubernetes/audit-webhook.yaml
    - --audit-webhook-batch-buffer-size=20000
""")
    f = load_flags_file(m)
    assert f.webhook.batch.buffer_size == 20000 and f.webhook_config_file == "/etc/kubernetes/audit-webhook.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nspec:\n  containers: [\n")
    with pytest.raises(InputError) as e:
        load_flags_file(bad)
    assert "bad.yaml" in str(e.value)


def test_float32_qps_prints_shortest_round_trip():
    from audit_tune.sim.config import fmt_float

    assert fmt_float(0.8) == "0.8" and fmt_float(10) == "10" and fmt_float(77.7) == "77.7"
    f = parse_flags(["--audit-webhook-batch-throttle-qps=0.8"])
    assert f.to_flags(only_changed=True) == ["--audit-webhook-batch-throttle-qps=0.8"]
    assert parse_flags(f.to_flags()) == f
