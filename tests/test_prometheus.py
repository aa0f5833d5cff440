"""Prometheus (Debian package) scraping the local kube-apiserver with the client certificate."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from audit_tune.loadgen.prometheus import Prometheus, promtool, scrape_config

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


def test_prometheus_scrapes_audit_counter(local_stack, prometheus_installed):
    c = local_stack
    with c.session() as s:  # some audited traffic
        for i in range(5):
            s.get(f"{c.server}/api/v1/namespaces/default/configmaps", timeout=10).raise_for_status()
    with Prometheus.for_cluster(c, interval="1s") as prom:
        assert prom.url.startswith("http://127.0.0.1:")
        res = prom.wait_for_series("apiserver_audit_event_total", timeout=60)
        assert len(res) == 1
        labels, value = res[0]
        assert labels["job"] == "apiserver" and labels["instance"] == c.server.split("//")[1]
        assert isinstance(value, float) and value > 0
        rate = prom.wait_for_series("sum(rate(apiserver_audit_event_total[10s]))", timeout=30)
        assert rate[0][1] >= 0
        assert "=up" in prom.targets_health()
        r = subprocess.run([promtool(), "check", "config", str(prom.config_file)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        workdir = prom.workdir
        proc = prom.proc
    assert not workdir.exists()
    assert proc is not None and not proc.alive()


def test_scrape_config_shape(tmp_path):
    cfg = scrape_config("https://127.0.0.1:6443/metrics", ca_file="/ca", client_cert="/c", client_key="/k",
                        extra_targets=["http://127.0.0.1:9000/metrics", "http://127.0.0.1:9001/m"], interval="2s")
    assert cfg["global"]["scrape_interval"] == "2s"
    api, e0, e1 = cfg["scrape_configs"]
    assert api["scheme"] == "https" and api["static_configs"][0]["targets"] == ["127.0.0.1:6443"]
    assert api["tls_config"] == {"ca_file": "/ca", "cert_file": "/c", "key_file": "/k"}
    assert e0["job_name"] == "extra" and e1["metrics_path"] == "/m"
    p = tmp_path / "p.yml"
    p.write_text(yaml.safe_dump(cfg))
    for f in ("ca", "c", "k"):
        (tmp_path / f).write_text("x")
    r = subprocess.run([promtool(), "check", "config", "--syntax-only", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
