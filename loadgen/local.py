"""The ``local`` provider: a real etcd + kube-apiserver on 127.0.0.1, with the candidate audit flags.

This is the minimal loopback control plane envtest runs (controller-runtime
``pkg/internal/testing/controlplane/apiserver.go``, ``etcd.go``, ``auth.go``; see
``docs/real-stack.md`` and spec §9):

* etcd 3.6 with ``--data-dir`` in a temp dir, ``--unsafe-no-fsync``, client and peer URLs on
  ``127.0.0.1:<free port>``, health ``/health``;
* kube-apiserver with ``--bind-address=127.0.0.1``, a free ``--secure-port``, serving cert for
  ``127.0.0.1``/``localhost``, ``--client-ca-file`` authn, ``--authorization-mode=RBAC``, an SA key
  pair, ``--service-cluster-ip-range=10.0.0.0/24``, ``--disable-admission-plugins=ServiceAccount``;
* audit: ``--audit-policy-file`` (default ``loadgen/policies/default.yaml``), every
  ``--audit-*`` flag of the given :class:`sim.config.AuditFlags` (``to_flags()``), and, when a sink
  URL is given, ``--audit-webhook-config-file`` pointing at a generated kubeconfig for that URL.

Stable API (used by the sink and the load generator; keep it backwards compatible)::

    from audit_tune.loadgen.local import LocalCluster
    with LocalCluster("demo", flags=parse_flags(["--audit-webhook-batch-max-size=10"]),
                      sink_url="http://127.0.0.1:8443/audit") as c:
        c.server          # "https://127.0.0.1:<port>"
        c.metrics_url     # c.server + "/metrics"
        c.readyz_url      # c.server + "/readyz"
        c.kubeconfig      # Path: kubeconfig for the client-cert user (system:masters)
        c.ca_file         # Path: CA of the serving cert (requests: verify=c.ca_file)
        c.client_cert     # Path: client cert PEM   (requests: cert=(c.client_cert, c.client_key))
        c.client_key      # Path: client key PEM
        c.session()       # requests.Session with cert/verify set
        c.webhook_kubeconfig  # Path | None: what --audit-webhook-config-file points at
        c.flags           # AuditFlags as passed to kube-apiserver
        c.apiserver_args  # full kube-apiserver argv
        c.apiserver_log, c.etcd_log   # Path: process logs
        c.state_dir       # Path: ${AUDIT_TUNE_STATE:-~/.cache/audit-tune/clusters}/<name>
        c.status()        # dict: processes alive, /readyz, URLs

    LocalCluster(name, flags=None, policy=None, sink_url=None, *, sink_auth=NO_SINK_AUTH,
                 webhook_kubeconfig=None, extra_args=(), state_root=None, detach=False,
                 start_timeout=90.0)

    ``policy`` defaults to ``flags.policy_file``, then to the bundled default policy.
    ``webhook_kubeconfig`` (or ``flags.webhook_config_file``) uses an existing
    ``--audit-webhook-config-file`` as is (e.g. from ``tune sink serve --write-kubeconfig``,
    with client certs); it excludes ``sink_url``, for which one is generated (``sink_auth``:
    :class:`~audit_tune.loadgen.kubeconfig.SinkAuth`, the sink's CA, token or no verification).
    A sink token is only written into the 0600 webhook kubeconfig, never into state or output.
    .up() -> self, .down(), context manager (``__exit__`` calls ``down``)
    LocalCluster.load(name, state_root=None) -> LocalCluster   # attach to a running cluster
    cluster_status(name), cluster_down(name)    # for other processes
    statedir.list_clusters()

``up()`` writes ``state.json`` in ``state_dir`` so ``tune cluster status|down`` works from another
process. Unless ``detach=True`` the processes are owned by this Python process: they are stopped
by ``down()``, on interpreter exit (atexit) and on SIGINT/SIGTERM (handlers, installed only when
``up()`` runs in the main thread, chain to the previous ones). A SIGKILLed owner cannot clean up:
``state.json`` stays, ``cluster_down(name)`` / ``tune cluster down --name NAME`` stops what it left,
and a new ``up()`` with that name is refused while those processes run. With ``detach=True``
(``tune cluster up`` without ``--wait``) they outlive the caller until ``tune cluster down``.

Every process runs in its own process group; ``down()`` sends SIGTERM to each group in reverse
start order (anything added with ``add_process`` such as Prometheus, kube-apiserver, etcd), SIGKILL after 20 s, removes the etcd data
dir and the state dir. Start-up to ``/readyz`` takes about 3-5 s.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeAlias

import requests

from audit_tune.basics.errors import InputError, ServiceError
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_float, as_list, as_str
from audit_tune.basics.output import write_atomic
from audit_tune.loadgen import certs, kubeconfig
from audit_tune.loadgen.kubeconfig import NO_SINK_AUTH, SinkAuth, write_kubeconfig
from audit_tune.loadgen.procs import Proc, binary, free_port, http_session, spawn, stop, tail, wait_until
from audit_tune.loadgen.statedir import STATE_FILE, StoppedCluster, check_name, read_state, state_root_or_default
from audit_tune.sim.config import AuditFlags, parse_flags

DEFAULT_POLICY = Path(__file__).with_name("policies") / "default.yaml"
SERVICE_CIDR = "10.0.0.0/24"
PROVIDER = "local"
# What signal.getsignal returns: a handler function, SIG_DFL/SIG_IGN (ints), or None (not set from Python).
SignalHandler: TypeAlias = Callable[[int, FrameType | None], object] | int | None
# Flags the provider sets itself; the rest of AuditFlags.to_flags() is passed verbatim.
_MANAGED = ("audit-policy-file", "audit-webhook-config-file")


def _kubeconfig_server(path: Path) -> str | None:
    """The current context's server of a kubeconfig (for display), or None."""
    return kubeconfig.server_of(path)


def audit_args(flags: AuditFlags) -> list[str]:
    """The candidate's ``--audit-*`` flags, all of them explicit, minus the file flags the provider
    manages itself; the ``--audit-log-*`` flags only when a log path is set (otherwise the log
    backend is off and they are inert)."""
    out = []
    for a in flags.to_flags():
        name = a[2:].split("=", 1)[0]
        if name in _MANAGED:
            continue
        if name.startswith("audit-log-") and not flags.log_file.path:
            continue
        out.append(a)
    return out


class LocalCluster:
    """etcd + kube-apiserver on loopback. See the module docstring for the stable API."""

    def __init__(self, name: str = "audit-tune", flags: AuditFlags | None = None,
                 policy: str | os.PathLike | None = None, sink_url: str | None = None, *,
                 sink_auth: SinkAuth = NO_SINK_AUTH, webhook_kubeconfig: str | os.PathLike | None = None,
                 extra_args: Sequence[str] = (),
                 state_root: str | os.PathLike | None = None, detach: bool = False,
                 start_timeout: float = 90.0) -> None:
        self.name = check_name(name)
        self.flags = flags or AuditFlags()
        policy = policy or self.flags.policy_file or None
        self.policy = Path(policy) if policy else DEFAULT_POLICY
        if not self.policy.is_file():
            raise InputError(f"--policy {self.policy}: no such file; give an audit.k8s.io/v1 Policy YAML")
        if sink_url and not sink_url.startswith(("http://", "https://")):
            raise InputError(f"--sink-url {sink_url!r}: must start with http:// or https://")
        given_wh = webhook_kubeconfig or self.flags.webhook_config_file or None
        if given_wh and sink_url:
            raise InputError("--sink-url and --webhook-kubeconfig/--audit-webhook-config-file: give one of them")
        self._given_webhook = Path(given_wh).resolve() if given_wh else None
        if self._given_webhook is not None:
            if not self._given_webhook.is_file():
                raise InputError(f"--audit-webhook-config-file {given_wh}: no such file; give a kubeconfig for the sink")
            sink_url = _kubeconfig_server(self._given_webhook)
        self.sink_url = sink_url
        self.sink_ca_file = Path(sink_auth.ca_file) if sink_auth.ca_file else None
        self._sink_token = sink_auth.token
        self.sink_insecure = sink_auth.insecure
        self.extra_args = list(extra_args)
        self.state_dir = state_root_or_default(state_root) / self.name
        self.detach = detach
        self.start_timeout = start_timeout
        self.processes: list[Proc] = []
        self.server = ""
        self.etcd_url = ""
        self.data_dir: Path | None = None
        self.webhook_kubeconfig: Path | None = None
        self.apiserver_args: list[str] = []
        self.started_at = 0.0
        self.startup_seconds = 0.0
        self.extra: JsonObject = {}  # other components (e.g. prometheus URL) recorded in state
        self._down_lock = threading.RLock()  # a signal may arrive while down() runs
        self._is_down = True
        self._old_handlers: dict[int, SignalHandler] = {}

    # ---- paths ----------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def client_cert(self) -> Path:
        return self.state_dir / "pki" / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "pki" / "client.key"

    @property
    def metrics_url(self) -> str:
        return f"{self.server}/metrics"

    @property
    def readyz_url(self) -> str:
        return f"{self.server}/readyz"

    @property
    def apiserver_log(self) -> Path:
        return self.state_dir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.state_dir / "etcd.log"

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def session(self) -> requests.Session:
        """A ``requests.Session`` authenticated with the client cert and verifying the serving cert.

        ``trust_env`` is off: otherwise ``REQUESTS_CA_BUNDLE`` silently replaces ``session.verify``
        (psf/requests#3829) and proxy variables could route loopback traffic elsewhere.
        """
        s = requests.Session()
        s.trust_env = False
        s.cert = (str(self.client_cert), str(self.client_key))
        s.verify = str(self.ca_file)
        return s

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> LocalCluster:
        """Start etcd and kube-apiserver, wait for ``/readyz``, write kubeconfig and state."""
        existing = read_state(self.state_dir)
        where = str(self.state_file)
        if existing and any(Proc.from_dict(p, f"{where}: processes").alive()
                            for p in as_list(existing.get("processes", []), f"{where}: processes")):
            raise ServiceError(f"cluster {self.name!r} is already running ({existing.get('server')}); "
                               f"stop it with: tune cluster down --name {self.name}")
        if existing and existing.get("data_dir"):  # a dead cluster of the same name: forget it
            shutil.rmtree(as_str(existing["data_dir"], f"{where}: data_dir"), ignore_errors=True)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        etcd_bin, apiserver_bin = binary("etcd"), binary("kube-apiserver")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        t0 = time.monotonic()
        self.started_at = time.time()
        self._is_down = False
        if not self.detach:
            self._install_handlers()
        try:
            self._pki = certs.generate(self.state_dir / "pki")
            for attempt in range(3):
                try:
                    self._start_etcd(etcd_bin)
                    self._start_apiserver(apiserver_bin)
                    break
                except ServiceError as e:
                    if "address already in use" not in str(e) or attempt == 2:
                        raise
                    self._stop_processes()
            write_kubeconfig(self.kubeconfig, server=self.server, context=f"audit-tune-{self.name}",
                             ca_file=self.ca_file, client_cert=self.client_cert, client_key=self.client_key)
            self.startup_seconds = time.monotonic() - t0
            self.save_state()
        except BaseException:
            self.down(keep_files=True)  # keep the logs the error message points at
            raise
        return self

    def _start_etcd(self, etcd_bin: Path) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"audit-tune-etcd-{self.name}-"))
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir()
        cport, pport = free_port(), free_port()
        client, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
        cmd = [str(etcd_bin), "--name=audit-tune", f"--data-dir={self.data_dir}",
               f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
               f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
               f"--initial-cluster=audit-tune={peer}", "--unsafe-no-fsync=true",
               "--log-level=warn", "--quota-backend-bytes=4294967296"]
        proc, _ = spawn("etcd", cmd, self.etcd_log, detach=self.detach)
        self.processes.append(proc)
        self.etcd_url = client
        with http_session() as h:
            wait_until(lambda: h.get(f"{client}/health", timeout=2).json().get("health") == "true",
                       self.start_timeout, f"etcd {client}/health", proc)

    def _webhook_config(self) -> Path | None:
        if self._given_webhook is not None:
            return self._given_webhook
        if not self.sink_url:
            return None
        path = self.state_dir / "audit-webhook.kubeconfig"
        https = self.sink_url.startswith("https://")
        write_kubeconfig(path, server=self.sink_url, context="audit-sink",
                         ca_file=self.sink_ca_file if https else None, token=self._sink_token,
                         insecure=https and self.sink_insecure)
        return path

    def _start_apiserver(self, apiserver_bin: Path) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self.webhook_kubeconfig = self._webhook_config()
        pki = self._pki
        args = [
            str(apiserver_bin),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer=https://127.0.0.1:{port}/",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={self.policy.resolve()}",
            *audit_args(self.flags),
        ]
        if self.webhook_kubeconfig:
            args.append(f"--audit-webhook-config-file={self.webhook_kubeconfig}")
        args += self.extra_args
        self.apiserver_args = args
        proc, _ = spawn("kube-apiserver", args, self.apiserver_log, detach=self.detach)
        self.processes.append(proc)
        s = self.session()

        def ready() -> bool:
            return s.get(self.readyz_url, timeout=3).status_code == 200

        try:
            wait_until(ready, self.start_timeout, f"kube-apiserver {self.readyz_url}", proc, interval=0.25)
        finally:
            s.close()
        if "address already in use" in tail(self.apiserver_log, 20):
            raise ServiceError("kube-apiserver: address already in use")

    def add_process(self, proc: Proc, **extra: JsonValue) -> None:
        """Record another process (e.g. Prometheus) so ``down`` stops it too; ``extra`` goes to state."""
        self.processes.append(proc)
        self.extra.update(extra)
        self.save_state()

    def _stop_processes(self) -> None:
        for p in reversed(self.processes):
            stop(p)
        self.processes = []

    def down(self, keep_files: bool = False) -> None:
        """Stop every process (reverse start order: apiserver before etcd), delete etcd data and,
        unless ``keep_files``, the state dir. Idempotent."""
        with self._down_lock:
            self._stop_processes()
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            if not keep_files:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            self._restore_handlers()
            self._is_down = True

    # ---- signals / atexit ------------------------------------------------------------------
    def _install_handlers(self) -> None:
        atexit.register(self._atexit)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            self._old_handlers[sig] = old

            def handler(signum: int, frame: FrameType | None, _old: SignalHandler = old) -> None:
                self.down()
                if callable(_old):
                    _old(signum, frame)
                elif _old == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)

            signal.signal(sig, handler)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                try:
                    signal.signal(sig, old)
                except (TypeError, ValueError):
                    pass
        self._old_handlers = {}
        try:
            atexit.unregister(self._atexit)
        except Exception:  # noqa: BLE001
            pass

    def _atexit(self) -> None:
        if not self._is_down:
            self.down()

    # ---- state ------------------------------------------------------------------------------
    def to_state(self) -> JsonObject:
        return {
            "name": self.name, "provider": PROVIDER, "started_at": self.started_at,
            "startup_seconds": round(self.startup_seconds, 2), "detached": self.detach,
            "server": self.server, "metrics_url": self.metrics_url, "etcd_url": self.etcd_url,
            "kubeconfig": str(self.kubeconfig), "ca_file": str(self.ca_file),
            "client_cert": str(self.client_cert), "client_key": str(self.client_key),
            "policy": str(self.policy), "sink_url": self.sink_url,
            "webhook_kubeconfig": str(self.webhook_kubeconfig) if self.webhook_kubeconfig else None,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "audit_flags": list[JsonValue](audit_args(self.flags)), "extra_args": list[JsonValue](self.extra_args),
            "apiserver_args": list[JsonValue](self.apiserver_args),
            "apiserver_log": str(self.apiserver_log), "etcd_log": str(self.etcd_log),
            "processes": list[JsonValue]([p.to_dict() for p in self.processes]), **self.extra,
        }

    def save_state(self) -> None:
        write_atomic(self.state_file, json.dumps(self.to_state(), indent=2) + "\n")

    @classmethod
    def load(cls, name: str, state_root: str | os.PathLike | None = None) -> LocalCluster:
        """Attach to a cluster started by another process (from its ``state.json``)."""
        root = state_root_or_default(state_root)
        st = read_state(root / check_name(name))
        if st is None:
            raise ServiceError(f"no cluster named {name!r} (no {root / name / STATE_FILE}); "
                               f"start one with: tune cluster up --name {name}")
        try:
            return cls._from_state(name, root, st)
        except (InputError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ServiceError(f"{root / name / STATE_FILE}: damaged state ({type(e).__name__} {e}); "
                               "remove the folder to forget it") from None

    @classmethod
    def _from_state(cls, name: str, root: Path, st: JsonObject) -> LocalCluster:
        where = str(root / name / STATE_FILE)

        def text(key: str, default: str | None = None) -> str:
            return as_str(st[key] if default is None else st.get(key, default), f"{where}: {key}")

        def texts(key: str) -> list[str]:
            return [as_str(v, f"{where}: {key}") for v in as_list(st.get(key, []), f"{where}: {key}")]

        def path_or_none(key: str) -> Path | None:
            return Path(text(key)) if st.get(key) else None

        c = cls.__new__(cls)
        LocalCluster.__init__(c, name, state_root=root, detach=bool(st.get("detached")))
        c.policy, c.sink_url = Path(text("policy")), as_str(st["sink_url"], f"{where}: sink_url") if st.get("sink_url") else None
        c.server, c.etcd_url = text("server"), text("etcd_url", "")
        c.data_dir = path_or_none("data_dir")
        c.webhook_kubeconfig = path_or_none("webhook_kubeconfig")
        c.processes = [Proc.from_dict(p, f"{where}: processes")
                       for p in as_list(st.get("processes", []), f"{where}: processes")]
        c.started_at = as_float(st.get("started_at", 0.0), f"{where}: started_at")
        c.startup_seconds = as_float(st.get("startup_seconds", 0.0), f"{where}: startup_seconds")
        c.extra_args = texts("extra_args")
        c.apiserver_args = texts("apiserver_args")
        c.flags = parse_flags(texts("audit_flags"), source=where)
        known = set(c.to_state())
        c.extra = {k: v for k, v in st.items() if k not in known}
        c._is_down = False
        return c

    def status(self) -> JsonObject:
        """State plus liveness: each process alive?, ``/readyz`` answer."""
        st = self.to_state()
        procs: JsonObject = {p.name: ("running" if p.alive() else "exited") for p in self.processes}
        ready = "unreachable"
        if self.processes and all(p.alive() for p in self.processes):
            try:
                with self.session() as s:
                    r = s.get(self.readyz_url, timeout=3)
                ready = "ok" if r.status_code == 200 else f"HTTP {r.status_code}"
            except requests.RequestException as e:
                ready = f"unreachable ({type(e).__name__})"
        st.update({"processes": procs, "readyz": ready,
                   "running": bool(self.processes) and all(v == "running" for v in procs.values())})
        return st


def cluster_status(name: str, state_root: str | os.PathLike | None = None) -> JsonObject:
    return LocalCluster.load(name, state_root).status()


def cluster_down(name: str, state_root: str | os.PathLike | None = None) -> StoppedCluster:
    c = LocalCluster.load(name, state_root)
    procs = [p.name for p in c.processes]
    c.down()
    return {"name": name, "stopped": procs}
