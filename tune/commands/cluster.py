"""``tune cluster up|down|status``: a real kube-apiserver with the candidate audit flags.

Providers: ``local`` (etcd + kube-apiserver on 127.0.0.1, :mod:`loadgen.local`) and ``kind``
(:mod:`loadgen.kind`, needs Docker). This module only parses and prints.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from audit_tune.basics.errors import InputError, ServiceError

if TYPE_CHECKING:
    from audit_tune.loadgen.kind import KindCluster

PANEL = "Load testing"
DEFAULT_NAME = "audit-tune"

HELP = """Start, inspect and stop a real kube-apiserver running the audit flags you want to prove.

Example:  [bold]tune cluster up --audit-webhook-batch-max-size=10 --sink-url http://127.0.0.1:9000/audit[/bold]
"""

UP_HELP = """Start a cluster whose kube-apiserver runs the given audit flags.

Audit flags are passed exactly as kube-apiserver spells them (--audit-webhook-batch-max-size=10 or
--audit-webhook-batch-max-size 10). Prints the kubeconfig, apiserver URL, /metrics URL and Prometheus URL.
Without --wait the processes keep running in the background until [bold]tune cluster down[/bold].

Provider [bold]local[/bold]: etcd + kube-apiserver on 127.0.0.1 (binaries from scripts/build-stack.sh).
Provider [bold]kind[/bold]: a kind cluster (needs a running Docker engine; --config-only writes and checks the
config without Docker).

Example:  [bold]tune cluster up --name demo --sink-url http://127.0.0.1:9000/audit --audit-webhook-batch-max-size=10 --audit-webhook-batch-throttle-qps=20[/bold]
"""

DOWN_HELP = """Stop a cluster started by [bold]tune cluster up[/bold] and delete its files.

Example:  [bold]tune cluster down --name demo[/bold]
"""

STATUS_HELP = """Show whether a cluster is running, its URLs and the audit flags it runs with.

Exit code 0 when every process runs and /readyz answers ok, 1 otherwise (local provider).

Example:  [bold]tune cluster status --name demo -f json[/bold]
"""

S = "Audit sink"
K = "kind provider"


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")
    sub.command("up", help=UP_HELP,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(up_cmd)
    sub.command("down", help=DOWN_HELP)(down_cmd)
    sub.command("status", help=STATUS_HELP)(status_cmd)
    app.add_typer(sub, name="cluster", rich_help_panel=PANEL)


def _parse_audit_flags(extra: list[str], flags_file: Optional[Path]):
    from audit_tune.sim.config import AuditFlags, load_flags_file, parse_flags

    base = load_flags_file(flags_file) if flags_file else AuditFlags()
    for a in extra:
        if a.startswith("-") and not a.startswith("--audit-"):
            raise InputError(f"{a.split('=')[0]}: no such option for 'tune cluster up'; audit flags start with "
                             f"--audit- (see 'tune cluster up --help')")
    return parse_flags(extra, base=base, source="command line") if extra else base


def _read_secret(path: Optional[Path], env: str) -> Optional[str]:
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as e:
            raise InputError(f"--sink-token-file {path}: cannot read ({e.strerror})") from None
    return os.environ.get(env) or None


def _table(info: Mapping[str, object]) -> str:
    keys = ["name", "provider", "running", "readyz", "kubeconfig", "server", "metrics_url", "prometheus_url",
            "sink_url", "node_sink_url", "policy", "config", "startup_seconds", "processes"]
    rows = [(k, info[k]) for k in keys if k in info and info[k] not in (None, "", [])]
    width = max(len(k) for k, _ in rows) + 1
    out = [f"{k + ':':<{width}} {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in rows]
    flags = info.get("audit_flags") or []
    if flags:
        out.append("audit_flags:")
        out += [f"  {f}" for f in (flags if isinstance(flags, list) else [flags])]
    return "\n".join(out) + "\n"


def _emit(info: Mapping[str, object], fmt: str) -> None:
    from audit_tune.basics.output import render, write_output

    public = {k: v for k, v in info.items() if k not in ("data_dir",)}
    write_output(_table(public) if fmt == "table" else render(public, fmt), None)


def up_cmd(
    ctx: typer.Context,
    provider: str = typer.Option("local", "--provider", help="local (etcd + kube-apiserver on 127.0.0.1) | kind (needs Docker)."),
    name: str = typer.Option(DEFAULT_NAME, "--name", help="Cluster name (state in ${AUDIT_TUNE_STATE:-~/.cache/audit-tune/clusters}/NAME)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Audit policy YAML (default: loadgen/policies/default.yaml, a production-style policy)."),
    flags_file: Optional[Path] = typer.Option(None, "--flags-file", help="Audit flags from a file or a kube-apiserver manifest; command-line flags override it."),
    no_prometheus: bool = typer.Option(False, "--no-prometheus", help="Do not start a Prometheus scraping the apiserver (local provider)."),
    prometheus_target: list[str] = typer.Option([], "--prometheus-target", help="Extra metrics URL for Prometheus to scrape, e.g. the sink's http://127.0.0.1:9000/metrics (repeatable)."),
    sink_url: Optional[str] = typer.Option(None, "--sink-url", help="Audit webhook URL; enables the webhook backend (--audit-webhook-config-file is generated).", rich_help_panel=S),
    sink_ca: Optional[Path] = typer.Option(None, "--sink-ca", help="CA of an https sink.", rich_help_panel=S),
    sink_token_file: Optional[Path] = typer.Option(None, "--sink-token-file", help="Bearer token for the sink (env AUDIT_SINK_TOKEN also works). Never printed.", rich_help_panel=S),
    sink_insecure: bool = typer.Option(False, "--sink-insecure-skip-tls-verify", help="Do not verify the https sink's certificate.", rich_help_panel=S),
    webhook_kubeconfig: Optional[Path] = typer.Option(None, "--webhook-kubeconfig", help="Use this --audit-webhook-config-file as is (e.g. from 'tune sink serve --write-kubeconfig'); instead of --sink-url.", rich_help_panel=S),
    apiserver_arg: list[str] = typer.Option([], "--apiserver-arg", help="Extra non-audit kube-apiserver flag, e.g. --apiserver-arg=--max-requests-inflight=800 (repeatable; local provider)."),
    wait: bool = typer.Option(False, "--wait", help="Stay in the foreground; Ctrl-C stops everything."),
    start_timeout: str = typer.Option("90s", "--start-timeout", help="How long to wait for /readyz."),
    image: Optional[str] = typer.Option(None, "--image", help="kind node image, e.g. kindest/node:v1.36.0.", rich_help_panel=K),
    kubeadm_api: str = typer.Option("auto", "--kubeadm-api", help="auto | v1beta3 (map extraArgs) | v1beta4 (list extraArgs).", rich_help_panel=K),
    sink_host: Optional[str] = typer.Option(None, "--sink-host", help="Host address nodes use to reach a loopback sink (default: gateway of the 'kind' Docker network).", rich_help_panel=K),
    config_only: bool = typer.Option(False, "--config-only", help="Write and check the kind config, print its path; no Docker needed.", rich_help_panel=K),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
) -> None:
    from audit_tune.basics.output import log
    from audit_tune.sim.units import parse_duration

    flags = _parse_audit_flags(list(ctx.args), flags_file)
    token = _read_secret(sink_token_file, "AUDIT_SINK_TOKEN")
    if provider == "kind":
        if webhook_kubeconfig is not None:
            raise InputError("--webhook-kubeconfig: local provider only; for kind give --sink-url (rewritten for the node)")
        from audit_tune.loadgen.kind import KindCluster
        from audit_tune.loadgen.kubeconfig import SinkAuth

        _up_kind(KindCluster(name, flags=flags, policy=policy, sink_url=sink_url, sink_host=sink_host,
                             sink_auth=SinkAuth(ca_file=sink_ca, token=token), image=image,
                             kubeadm_api=kubeadm_api),  # type: ignore[arg-type]
                 config_only, fmt)
        return
    if provider != "local":
        raise InputError(f"--provider {provider!r}: use local or kind")
    if config_only:
        raise InputError("--config-only: only for --provider kind")
    from audit_tune.loadgen.kubeconfig import SinkAuth
    from audit_tune.loadgen.local import LocalCluster
    from audit_tune.loadgen.prometheus import Prometheus

    timeout = parse_duration(start_timeout, "--start-timeout")
    for a in apiserver_arg:
        if not a.startswith("--") or a.startswith("--audit-"):
            raise InputError(f"--apiserver-arg {a!r}: give one non-audit kube-apiserver flag like --max-requests-inflight=800; "
                             f"audit flags go directly on the command line")
    c = LocalCluster(name, flags=flags, policy=policy, sink_url=sink_url,
                     sink_auth=SinkAuth(ca_file=sink_ca, token=token, insecure=sink_insecure),
                     webhook_kubeconfig=webhook_kubeconfig, extra_args=apiserver_arg, detach=not wait,
                     start_timeout=timeout)
    log(f"starting etcd + kube-apiserver '{name}' ...")
    try:
        c.up()
        try:
            if not no_prometheus:
                prom = Prometheus.for_cluster(c, extra_targets=prometheus_target,
                                              workdir=c.state_dir / "prometheus", detach=not wait)
                prom.start()
                if prom.proc is None:
                    raise ServiceError(f"prometheus {prom.url} did not start (see {prom.log_file})")
                c.add_process(prom.proc, prometheus_url=prom.url)
        except BaseException:
            c.down()
            raise
        log(f"cluster '{name}' ready in {c.startup_seconds:.1f}s")
        _emit(c.status(), fmt)
        if not wait:
            log(f"running in the background; export KUBECONFIG={c.kubeconfig}; "
                f"stop with: tune cluster down --name {name}")
            return
        log("running in the foreground; Ctrl-C stops it")
        while all(p.alive() for p in c.processes):
            time.sleep(1)
        dead = [p for p in c.processes if not p.alive()]
        c.down(keep_files=True)
        raise ServiceError(f"{dead[0].name} exited unexpectedly; log {dead[0].log}")
    except KeyboardInterrupt:
        c.down()  # the SIGINT handler already did; down() is idempotent
        if not wait:
            raise
        log(f"cluster '{name}' stopped")


def _up_kind(k: KindCluster, config_only: bool, fmt: str) -> None:
    from audit_tune.basics.output import log
    from audit_tune.loadgen.kind import check_config

    name = k.name
    if config_only:
        path = k.write_config()
        try:
            log(check_config(path))
        except Exception as e:  # noqa: BLE001 - the checker is optional here
            from audit_tune.basics.errors import BuildMissingError
            if not isinstance(e, BuildMissingError):
                raise
            log(f"not checked: {e}")
        _emit({"name": name, "provider": "kind", "config": str(path), "sink_url": k.sink_url,
               "node_sink_url": k.node_sink_url}, fmt)
        return
    from audit_tune.loadgen.kind import check_docker

    check_docker()
    log(f"creating kind cluster '{name}' ...")
    k.up()
    from audit_tune.loadgen.statedir import default_state_root

    _emit(json.loads((default_state_root() / name / "state.json").read_text()), fmt)
    log(f"export KUBECONFIG={k.kubeconfig}; stop with: tune cluster down --name {name}")


def _provider_of(name: str) -> str:
    from audit_tune.loadgen.statedir import STATE_FILE, check_name, default_state_root

    st = default_state_root() / check_name(name) / STATE_FILE
    try:
        doc = json.loads(st.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return str(doc.get("provider", "local"))
    except FileNotFoundError:
        raise ServiceError(f"--name {name}: no such cluster (no {st}); running clusters: "
                           f"{', '.join(_names()) or 'none'}") from None
    except (OSError, ValueError) as e:
        raise ServiceError(f"{st}: unreadable state ({e}); remove its folder to forget the cluster") from None


def _names() -> list[str]:
    from audit_tune.loadgen.statedir import list_clusters

    return list_clusters()


def down_cmd(
    name: str = typer.Option(DEFAULT_NAME, "--name", help="Cluster name."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
) -> None:
    from audit_tune.basics.output import log

    if _provider_of(name) == "kind":
        from audit_tune.loadgen.kind import KindCluster

        info = KindCluster.delete(name)
    else:
        from audit_tune.loadgen.local import cluster_down

        info = cluster_down(name)
    log(f"cluster '{name}' stopped: {', '.join(info['stopped']) or 'nothing was running'}")
    if fmt != "table":
        _emit(info, fmt)


def status_cmd(
    name: Optional[str] = typer.Option(None, "--name", help=f"Cluster name (default {DEFAULT_NAME}; with no clusters of that name, all are listed)."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
) -> None:
    from audit_tune.loadgen.local import cluster_status
    from audit_tune.loadgen.statedir import default_state_root

    names = [name] if name else ([DEFAULT_NAME] if DEFAULT_NAME in _names() else _names())
    if not names:
        raise ServiceError(f"no clusters in {default_state_root()}; start one with: tune cluster up")
    infos = []
    for n in names:
        if _provider_of(n) == "kind":
            st = json.loads((default_state_root() / n / "state.json").read_text())
            st["running"] = "unknown (ask docker: kind get clusters)"
            infos.append(st)
        else:
            infos.append(cluster_status(n))
    if fmt == "table":
        sys.stdout.write("\n".join(_table(i) for i in infos))
    else:
        from audit_tune.basics.output import render

        sys.stdout.write(render(infos if len(infos) > 1 else infos[0], fmt))
    if not all(i.get("running") is True for i in infos if i.get("provider") == "local"):
        raise typer.Exit(1)
