"""The ``kind`` provider: a kind cluster config that runs kube-apiserver with the candidate audit flags.

Follows kind's audit guide (kind ``site/content/docs/user/auditing.md``) and its kubeadm patch
handling (``pkg/cluster/internal/kubeadm/config.go``, ``pkg/internal/patch/kubeadm_merge.go``),
see spec §9:

* ``kind.x-k8s.io/v1alpha4`` ``Cluster`` with one control-plane node;
* a ``ClusterConfiguration`` ``kubeadmConfigPatches`` entry that sets ``apiServer.extraArgs``
  (the audit flags, the policy file and the webhook kubeconfig) and ``apiServer.extraVolumes``
  (a read-only hostPath ``/etc/kubernetes/audit``), either in kubeadm **v1beta3** map form
  (``extraArgs: {name: value}``) or **v1beta4** list form (``extraArgs: [{name, value}]``).
  kind emits v1beta4 for Kubernetes >= 1.36 and v1beta3 for 1.23-1.35; ``kubeadm_api="auto"``
  picks the same way from the node image tag;
* node ``extraMounts`` that bind the policy and the webhook kubeconfig from the host into
  ``/etc/kubernetes/audit`` on the node container;
* a webhook kubeconfig whose server is reachable from inside the node container: a sink URL on
  ``127.0.0.1``/``localhost`` is rewritten to the host's address on the ``kind`` Docker network
  (its gateway), and the sink must listen there (a loopback-only sink is not reachable from a
  container).

Creating the cluster needs a running Docker engine; without one, :func:`check_docker` raises the
one-line ``kind needs a running Docker engine (docker info failed): ...`` error.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from audit_tune.basics.errors import BuildMissingError, InputError, ServiceError
from audit_tune.loadgen import kubeconfig
from audit_tune.loadgen.kubeconfig import NO_SINK_AUTH, SinkAuth, write_kubeconfig
from audit_tune.loadgen.local import DEFAULT_POLICY
from audit_tune.loadgen.procs import cache_dir
from audit_tune.loadgen.statedir import STATE_FILE, StoppedCluster, check_name, state_root_or_default
from audit_tune.sim.config import AuditFlags

KubeadmAPI = Literal["auto", "v1beta3", "v1beta4"]
AUDIT_DIR = "/etc/kubernetes/audit"
POLICY_IN_NODE = f"{AUDIT_DIR}/policy.yaml"
WEBHOOK_IN_NODE = f"{AUDIT_DIR}/webhook.kubeconfig"
LOG_DIR_IN_NODE = "/var/log/kubernetes"
DEFAULT_KIND_GATEWAY = "172.18.0.1"  # first network Docker hands out to `kind` on a fresh host
PROVIDER = "kind"


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (the kubeadm patches) as ``|`` blocks, as kind's docs write them."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def kind_args(flags: AuditFlags) -> dict[str, str]:
    """``{flag-name: value}`` for ``apiServer.extraArgs``: every ``--audit-webhook-*`` flag of the
    candidate, plus the ``--audit-log-*`` flags when a log path is set. File flags are added by
    :func:`kind_config` (they point into the node)."""
    out: dict[str, str] = {}
    log_on = bool(flags.log_file.path)
    for a in flags.to_flags():
        name, _, value = a[2:].partition("=")
        if name in ("audit-policy-file", "audit-webhook-config-file"):
            continue
        if name.startswith("audit-log-") and not log_on:
            continue
        out[name] = value
    return out


def kubeadm_api_for(image: str | None, kubeadm_api: KubeadmAPI = "auto") -> str:
    """``v1beta3`` or ``v1beta4`` as kind chooses it: v1beta4 for Kubernetes >= 1.36, and without an
    image (kind v0.33.0's default node image is v1.37.0). kind silently ignores a patch whose
    apiVersion differs from the one it generates (``pkg/internal/patch/resource.go``)."""
    if kubeadm_api in ("v1beta3", "v1beta4"):
        return kubeadm_api
    if kubeadm_api != "auto":
        raise InputError(f"--kubeadm-api {kubeadm_api!r}: use auto, v1beta3 or v1beta4")
    m = re.search(r":v?(\d+)\.(\d+)", image or "")
    if m and (int(m.group(1)), int(m.group(2))) < (1, 36):
        return "v1beta3"
    return "v1beta4"


def cluster_configuration_patch(flags: AuditFlags, api: str, webhook: bool = True) -> str:
    """The ``ClusterConfiguration`` merge patch (YAML text) in v1beta3 map or v1beta4 list form."""
    args = {"audit-policy-file": POLICY_IN_NODE}
    if webhook:
        args["audit-webhook-config-file"] = WEBHOOK_IN_NODE
    args.update(kind_args(flags))
    volumes: list[dict[str, Any]] = [{"name": "audit-config", "hostPath": AUDIT_DIR, "mountPath": AUDIT_DIR,
                                      "readOnly": True, "pathType": "DirectoryOrCreate"}]
    if flags.log_file.path:
        log_dir = str(Path(flags.log_file.path).parent)
        volumes.append({"name": "audit-logs", "hostPath": log_dir, "mountPath": log_dir,
                        "readOnly": False, "pathType": "DirectoryOrCreate"})
    extra: Any = dict(args) if api == "v1beta3" else [{"name": k, "value": v} for k, v in args.items()]
    doc = {"kind": "ClusterConfiguration", "apiVersion": f"kubeadm.k8s.io/{api}",
           "apiServer": {"extraArgs": extra, "extraVolumes": volumes}}
    return yaml.safe_dump(doc, sort_keys=False)


def kind_config(flags: AuditFlags, *, name: str, policy: str | os.PathLike, webhook_kubeconfig: str | os.PathLike | None,
                image: str | None = None, kubeadm_api: KubeadmAPI = "auto",
                extra_files: tuple[tuple[str | os.PathLike, str], ...] = ()) -> str:
    """The kind ``Cluster`` config (YAML text). Host paths are made absolute.

    ``extra_files`` are more ``(host path, path in node)`` read-only mounts (e.g. a sink CA).
    """
    api = kubeadm_api_for(image, kubeadm_api)
    mounts = [{"hostPath": str(Path(policy).resolve()), "containerPath": POLICY_IN_NODE, "readOnly": True}]
    if webhook_kubeconfig:
        mounts.append({"hostPath": str(Path(webhook_kubeconfig).resolve()), "containerPath": WEBHOOK_IN_NODE,
                       "readOnly": True})
    for host_path, node_path in extra_files:
        mounts.append({"hostPath": str(Path(host_path).resolve()), "containerPath": node_path, "readOnly": True})
    node: dict[str, Any] = {"role": "control-plane"}
    if image:
        node["image"] = image
    node["kubeadmConfigPatches"] = [cluster_configuration_patch(flags, api, webhook=bool(webhook_kubeconfig))]
    node["extraMounts"] = mounts
    doc = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": name, "nodes": [node]}
    header = (f"# kind cluster config generated by audit-tune (kubeadm {api} form).\n"
              f"# Create: kind create cluster --config THIS_FILE\n")
    return header + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1000)


def rewrite_sink_for_node(sink_url: str, host: str) -> str:
    """Replace a loopback host in ``sink_url`` by ``host`` (reachable from the node container)."""
    parts = urlsplit(sink_url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return sink_url


def docker_gateway(network: str = "kind") -> str | None:
    """Gateway IPv4 of the Docker network ``kind`` (the host as seen from nodes), if it exists."""
    try:
        r = subprocess.run(["docker", "network", "inspect", network], capture_output=True, text=True, timeout=15)
        if r.returncode != 0:
            return None
        for cfg in json.loads(r.stdout)[0].get("IPAM", {}).get("Config", []):
            gw = cfg.get("Gateway", "")
            if gw and ":" not in gw:
                return gw
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return None


def check_docker() -> None:
    """Raise the one-line ServiceError unless ``docker info`` succeeds."""
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                           text=True, timeout=30)
        ok, why = r.returncode == 0, (r.stderr or r.stdout).strip()
    except FileNotFoundError:
        ok, why = False, "docker: command not found"
    except subprocess.TimeoutExpired:
        ok, why = False, "timed out after 30s"
    if not ok:
        first = next((ln.strip() for ln in why.splitlines() if ln.strip()), "no output")
        raise ServiceError(f"kind needs a running Docker engine (docker info failed): {first}")


def kind_binary() -> str:
    """The kind CLI: the one built by ``scripts/build-kindcheck.sh``, else ``kind`` on PATH."""
    p = cache_dir() / "bin" / "kind"
    if p.is_file() and os.access(p, os.X_OK):
        return str(p)
    found = shutil.which("kind")
    if found:
        return found
    raise BuildMissingError("kind CLI not found: run scripts/build-kindcheck.sh (builds kind into the cache) "
                            "or install kind")


def kindcheck_binary() -> Path:
    p = cache_dir() / "bin" / "kindcheck"
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise BuildMissingError(f"kindcheck is not built ({p} missing): run scripts/build-kindcheck.sh")
    return p


def check_config(path: str | os.PathLike) -> str:
    """Run the strict Go checker on a kind config; returns its "ok" line or raises InputError."""
    r = subprocess.run([str(kindcheck_binary()), str(path)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise InputError(f"{path}: {(r.stderr or r.stdout).strip()}")
    return "\n".join(x for x in (r.stdout.strip(), r.stderr.strip()) if x)  # "ok: ..." plus any warnings


class KindCluster:
    """A kind cluster with the audit flags. ``up()`` needs Docker; ``write_config()`` does not.

    Files live in ``state_dir`` (``${AUDIT_TUNE_STATE:-~/.cache/audit-tune/clusters}/<name>``):
    ``kind-config.yaml``, ``audit-policy.yaml``, ``audit-webhook.kubeconfig``, ``kubeconfig``,
    ``state.json``.
    """

    def __init__(self, name: str = "audit-tune", flags: AuditFlags | None = None,
                 policy: str | os.PathLike | None = None, sink_url: str | None = None, *,
                 sink_host: str | None = None, sink_auth: SinkAuth = NO_SINK_AUTH, image: str | None = None,
                 kubeadm_api: KubeadmAPI = "auto",
                 state_root: str | os.PathLike | None = None, wait: str = "120s") -> None:
        self.name = check_name(name)
        self.flags = flags or AuditFlags()
        if self.flags.webhook_config_file:
            raise InputError("--audit-webhook-config-file: not for kind (the file must be valid inside the node); "
                             "give --sink-url and it is generated")
        policy = policy or self.flags.policy_file or None
        self.policy = Path(policy) if policy else DEFAULT_POLICY
        if not self.policy.is_file():
            raise InputError(f"--policy {self.policy}: no such file; give an audit.k8s.io/v1 Policy YAML")
        if sink_auth.insecure:
            raise InputError("--sink-insecure-skip-tls-verify: not for kind; give the sink's CA (--sink-ca)")
        self.sink_url = sink_url
        self.sink_host = sink_host
        self.sink_ca_file = Path(sink_auth.ca_file) if sink_auth.ca_file else None
        self._sink_token = sink_auth.token
        self.image = image
        self.kubeadm_api = kubeadm_api
        self.wait = wait
        self.state_dir = state_root_or_default(state_root) / self.name
        self.config_path = self.state_dir / "kind-config.yaml"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.node_sink_url: str | None = None

    def write_config(self, gateway: str | None = None) -> Path:
        """Write policy copy, webhook kubeconfig and the kind config; returns the config path."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        policy_copy = self.state_dir / "audit-policy.yaml"
        shutil.copyfile(self.policy, policy_copy)
        webhook = None
        extra: list[tuple[Path, str]] = []
        if self.sink_url:
            host = self.sink_host or gateway or DEFAULT_KIND_GATEWAY
            self.node_sink_url = rewrite_sink_for_node(self.sink_url, host)
            webhook = self.state_dir / "audit-webhook.kubeconfig"
            ca_in_node = None
            if self.sink_ca_file:  # the CA must be visible inside the node: mount it too
                ca = self.state_dir / "audit-sink-ca.crt"
                shutil.copyfile(self.sink_ca_file, ca)
                ca_in_node = Path(f"{AUDIT_DIR}/audit-sink-ca.crt")
                extra.append((ca, str(ca_in_node)))
            write_kubeconfig(webhook, server=self.node_sink_url, context="audit-sink",
                             ca_file=ca_in_node, token=self._sink_token)
        text = kind_config(self.flags, name=self.name, policy=policy_copy, webhook_kubeconfig=webhook,
                           image=self.image, kubeadm_api=self.kubeadm_api, extra_files=tuple(extra))
        self.config_path.write_text(text)
        return self.config_path

    def up(self) -> KindCluster:
        want = kubeadm_api_for(self.image, "auto")
        got = kubeadm_api_for(self.image, self.kubeadm_api)
        if got != want:
            raise InputError(f"--kubeadm-api {got}: kind generates kubeadm {want} for "
                             f"{self.image or 'its default image (v1.37)'}, and silently ignores a patch of another "
                             f"apiVersion, so the audit flags would not be set; use --kubeadm-api auto")
        check_docker()
        kind = kind_binary()
        self.write_config(gateway=docker_gateway())
        t0 = time.monotonic()
        cmd = [kind, "create", "cluster", "--config", str(self.config_path), "--name", self.name,
               "--kubeconfig", str(self.kubeconfig), "--wait", self.wait]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ServiceError(f"kind create cluster --name {self.name} failed: {last[0]}")
        server = kubeconfig.server_of(self.kubeconfig) or ""
        state = {"name": self.name, "provider": PROVIDER, "started_at": time.time(),
                 "startup_seconds": round(time.monotonic() - t0, 1), "server": server,
                 "metrics_url": f"{server}/metrics" if server else "", "kubeconfig": str(self.kubeconfig),
                 "context": f"kind-{self.name}", "config": str(self.config_path), "sink_url": self.sink_url,
                 "node_sink_url": self.node_sink_url, "audit_flags": [f"--{k}={v}" for k, v in kind_args(self.flags).items()],
                 "processes": []}
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        return self

    @staticmethod
    def delete(name: str, state_root: str | os.PathLike | None = None) -> StoppedCluster:
        check_docker()
        r = subprocess.run([kind_binary(), "delete", "cluster", "--name", name], capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ServiceError(f"kind delete cluster --name {name} failed: {last[0]}")
        d = state_root_or_default(state_root) / name
        shutil.rmtree(d, ignore_errors=True)
        return {"name": name, "stopped": ["kind"]}
