"""Talking to a sink from outside: run it as a child process, read its stats, and write the
``--audit-webhook-config-file`` kubeconfig that points kube-apiserver at it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import requests
import yaml

from audit_tune.basics.errors import ServiceError
from audit_tune.loadgen.sink_config import SinkConfig
from audit_tune.loadgen.sink_stats import SinkStats


class SinkProcess:
    """The same sink in a child process (``python -m loadgen.sink``), so it gets its own GIL.

    ``start()`` returns the URL once the child listens; ``stats()`` reads ``GET /stats``.
    The config (token included) goes to the child on stdin, never on its command line.
    """

    def __init__(self, config: SinkConfig | None = None) -> None:
        self.config = config or SinkConfig()
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 20.0) -> str:
        self.proc = subprocess.Popen([sys.executable, "-m", "audit_tune.loadgen.sink"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(self.config.to_json())
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        if not line:
            err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
            raise ServiceError(f"sink process failed to start: {err[-1] if err else 'no output'}")
        self.info = json.loads(line)
        self.url = self.info["url"]
        return self.url

    def stats(self, samples: bool = False) -> SinkStats:
        return fetch_stats(self.url, samples=samples, ca=self.info.get("ca_cert"))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SinkProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fetch_stats(url: str, samples: bool = False, ca: str | None = None, timeout: float = 10.0) -> SinkStats:
    """``GET {url}/stats`` of a running sink (ours, in any process): the document
    :meth:`loadgen.sink.SinkServer.stats` writes."""
    try:
        r = requests.get(url.rstrip("/") + "/stats", params={"samples": "1" if samples else "0"},
                         verify=ca if ca else True, timeout=timeout)
        r.raise_for_status()
        stats: SinkStats = r.json()
        return stats
    except (requests.RequestException, ValueError) as e:
        raise ServiceError(f"--sink-url {url}: cannot read /stats ({e.__class__.__name__})") from None


def webhook_kubeconfig(url: str, ca_cert: str | None = None, token: str | None = None,
                       client_cert: str | None = None, client_key: str | None = None) -> str:
    """The ``--audit-webhook-config-file`` kubeconfig that points kube-apiserver at this sink.

    Certificate paths are written absolute: client-go resolves relative ones against the
    kubeconfig's own folder, not the folder the sink was started in.
    """
    cluster: dict[str, Any] = {"server": url}
    if ca_cert:
        cluster["certificate-authority"] = os.path.abspath(ca_cert)
    user: dict[str, Any] = {}
    if token:
        user["token"] = token
    if client_cert:
        user["client-certificate"] = os.path.abspath(client_cert)
        user["client-key"] = os.path.abspath(str(client_key))
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "audit-sink", "cluster": cluster}],
           "users": [{"name": "kube-apiserver", "user": user}],
           "contexts": [{"name": "default", "context": {"cluster": "audit-sink", "user": "kube-apiserver"}}],
           "current-context": "default"}
    return yaml.safe_dump(doc, sort_keys=False)
