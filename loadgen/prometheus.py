"""A throw-away Prometheus that scrapes the local kube-apiserver (and optional extra targets).

Runs the Debian ``prometheus`` binary (``scripts/install-system.sh``) on ``127.0.0.1:<free port>``
with storage in a temp dir and a generated config:

* job ``apiserver``: ``https://127.0.0.1:<port>/metrics`` with the cluster's client certificate
  (``tls_config.cert_file/key_file``) and CA, ``scrape_interval`` 1s by default;
* job ``extra`` (optional): plain URLs such as the audit sink's ``/metrics``.

Readiness is Prometheus' own ``/-/ready``. :func:`promtool` returns the path of ``promtool`` for
rule checks (``promtool check rules``).

API::

    with Prometheus.for_cluster(cluster, extra_targets=["http://127.0.0.1:9000/metrics"]) as prom:
        prom.url                      # "http://127.0.0.1:<port>"
        prom.query("apiserver_audit_event_total")   # -> list of (labels, float)
        prom.wait_for_series("apiserver_audit_event_total")
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import yaml

from audit_tune.basics.errors import BuildMissingError, InputError, ServiceError, TimeoutExceeded
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.loadgen.procs import Proc, free_port, http_session, spawn, stop, wait_until

if TYPE_CHECKING:
    from audit_tune.loadgen.local import LocalCluster


def _which(name: str) -> str:
    p = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not p:
        raise BuildMissingError(f"{name} not found: run scripts/install-system.sh (Debian package prometheus)")
    return p


def prometheus_binary() -> str:
    return _which("prometheus")


def promtool() -> str:
    """Path of ``promtool`` (Debian package ``prometheus``)."""
    return _which("promtool")


def _target(url: str) -> tuple[str, str, str]:
    """(scheme, host:port, metrics_path) of a metrics URL."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise InputError(f"metrics target {url!r}: want http(s)://host:port/path")
    return u.scheme, u.netloc, u.path or "/metrics"


def scrape_config(apiserver_metrics_url: str | None, *, ca_file: str | os.PathLike | None = None,
                  client_cert: str | os.PathLike | None = None, client_key: str | os.PathLike | None = None,
                  extra_targets: Sequence[str] = (), interval: str = "1s") -> JsonObject:
    """The ``prometheus.yml`` document."""
    jobs: list[JsonValue] = []
    if apiserver_metrics_url:
        scheme, hostport, path = _target(apiserver_metrics_url)
        job: JsonObject = {"job_name": "apiserver", "scheme": scheme, "metrics_path": path,
                               "static_configs": [{"targets": [hostport]}]}
        tls: JsonObject = {}
        if ca_file:
            tls["ca_file"] = str(ca_file)
        if client_cert:
            tls["cert_file"], tls["key_file"] = str(client_cert), str(client_key)
        if tls:
            job["tls_config"] = tls
        jobs.append(job)
    for i, url in enumerate(extra_targets):
        scheme, hostport, path = _target(url)
        jobs.append({"job_name": f"extra-{i}" if i else "extra", "scheme": scheme, "metrics_path": path,
                     "static_configs": [{"targets": [hostport]}]})
    return {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": jobs}


class Prometheus:
    """One Prometheus process; ``start()`` waits for ``/-/ready``; ``stop()`` removes its storage."""

    def __init__(self, config: JsonObject, *, workdir: str | os.PathLike | None = None,
                 detach: bool = False, retention: str = "1d", start_timeout: float = 60.0,
                 extra_args: Sequence[str] = ()) -> None:
        self.config = config
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="audit-tune-prom-"))
        self.detach, self.retention, self.start_timeout = detach, retention, start_timeout
        self.extra_args = list(extra_args)  # more prometheus flags, e.g. "--query.max-samples=1000"
        self.port = 0
        self.proc: Proc | None = None
        self._http = http_session()

    @classmethod
    def for_cluster(cls, cluster: LocalCluster, extra_targets: Sequence[str] = (), interval: str = "1s", *,
                    workdir: str | os.PathLike | None = None, detach: bool = False, retention: str = "1d",
                    start_timeout: float = 60.0, extra_args: Sequence[str] = ()) -> Prometheus:
        """Scrape a :class:`loadgen.local.LocalCluster` (its ``metrics_url`` with the client cert)."""
        cfg = scrape_config(cluster.metrics_url, ca_file=cluster.ca_file, client_cert=cluster.client_cert,
                            client_key=cluster.client_key, extra_targets=extra_targets, interval=interval)
        return cls(cfg, workdir=workdir, detach=detach, retention=retention, start_timeout=start_timeout,
                   extra_args=extra_args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Prometheus:
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        (self.workdir / "data").mkdir(exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            cmd = [binary, f"--config.file={self.config_file}", f"--storage.tsdb.path={self.workdir / 'data'}",
                   f"--storage.tsdb.retention.time={self.retention}", f"--web.listen-address=127.0.0.1:{self.port}",
                   "--web.enable-lifecycle", "--log.level=warn", *self.extra_args]
            self.proc, _ = spawn("prometheus", cmd, self.log_file, detach=self.detach)
            try:
                wait_until(lambda: self._http.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
                           self.start_timeout, f"prometheus {self.url}/-/ready", self.proc)
                return self
            except ServiceError as e:
                stop(self.proc)
                if "address already in use" not in str(e) or attempt == 2:
                    raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Instant query; ``[(labels, value), ...]``."""
        r = self._http.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise ServiceError(f"prometheus query {promql!r} failed: {body.get('error', r.status_code)}")
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def wait_for_series(self, promql: str, timeout: float = 30.0) -> list[tuple[dict[str, str], float]]:
        """Poll until ``promql`` returns at least one series."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.query(promql)
            if res:
                return res
            if time.monotonic() > deadline:
                raise TimeoutExceeded(f"no {promql} in prometheus {self.url} after {timeout:.0f}s; "
                                      f"targets: {self.targets_health()}")
            time.sleep(0.5)

    def targets_health(self) -> str:
        try:
            ts = self._http.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except (requests.RequestException, KeyError, ValueError):
            return "unknown"
        return ", ".join(f"{t['scrapeUrl']}={t['health']}" + (f" ({t['lastError']})" if t.get("lastError") else "")
                         for t in ts)
