"""``tune sink``: run the audit webhook sink (``serve``) and check what it stored (``verify``).

The flags map one-to-one onto :class:`loadgen.sink.SinkConfig` and
:class:`loadgen.faults.FaultConfig`; this module only parses and prints.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from audit_tune.basics.errors import InputError

PANEL = "Load testing"

HELP = """Run the audit webhook sink, or verify its store.

Example:  [bold]tune sink serve --store events.jsonl --latency lognormal:median=50ms,p99=1s --outage 60s-90s:503[/bold]
"""


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")
    sub.command("serve", help=SERVE_HELP)(serve_cmd)
    sub.command("verify", help=VERIFY_HELP)(verify_cmd)
    app.add_typer(sub, name="sink", rich_help_panel=PANEL)


SERVE_HELP = """Receive kube-apiserver audit webhook batches (EventList POSTs) and store them, hash-chained.

Answers 200 only after the batch and its head are durable (per --fsync); 503 with Retry-After
while the store cannot take writes. After a crash it re-anchors or cuts back what was written
but never acknowledged, and says so on stderr; anything else wrong with the store is refused.
One sink per --store. Faults on demand. Prints one JSON line {"url": ...} on stdout once
listening; runs until Ctrl-C/SIGTERM or --duration. What it promises: docs/sink-promises.md.

Example:  [bold]tune sink serve --store ./audit/ev.jsonl --tls-generate ~/.config/audit-sink/tls --token-file tok --write-kubeconfig ./webhook.kubeconfig[/bold]
"""

F = "Faults"
T = "TLS and auth"


def serve_cmd(
    store: Optional[Path] = typer.Option(None, "--store", help="JSONL file to append events to (chain continues if it exists). Without it events are only counted."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback only)."),
    port: int = typer.Option(0, "--port", help="Port; 0 picks a free one."),
    fsync: str = typer.Option("always", "--fsync", help="always (per batch, before the ack) | interval | never."),
    fsync_interval: str = typer.Option("1s", "--fsync-interval", help="With --fsync interval: at most one fsync per this long."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="Serve HTTPS with this certificate (PEM).", rich_help_panel=T),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="Key for --tls-cert.", rich_help_panel=T),
    tls_generate: Optional[Path] = typer.Option(None, "--tls-generate", help="Generate CA, server and client certs into this private folder (created 0700; an existing one must be yours and 0700) and serve HTTPS.", rich_help_panel=T),
    client_ca: Optional[Path] = typer.Option(None, "--client-ca", help="Require client certs signed by this CA.", rich_help_panel=T),
    client_cert_auth: bool = typer.Option(False, "--client-cert-auth", help="With --tls-generate: require the generated client cert.", rich_help_panel=T),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Require 'Authorization: Bearer <token>' (token read from this file; env AUDIT_SINK_TOKEN also works). Never printed.", rich_help_panel=T),
    latency: str = typer.Option("0s", "--latency", help="Added latency: 200ms | lognormal:median=100ms,p99=1s | exponential:mean=50ms | uniform:min=,max= | normal:mean=,sd=", rich_help_panel=F),
    latency_per_inflight: str = typer.Option("0s", "--latency-per-inflight", help="Extra latency per other request in flight.", rich_help_panel=F),
    error_rate: float = typer.Option(0.0, "--error-rate", help="Fraction of requests answered with --error-status.", rich_help_panel=F),
    error_status: int = typer.Option(503, "--error-status", rich_help_panel=F),
    hang_rate: float = typer.Option(0.0, "--hang-rate", help="Fraction of requests held --hang-for then dropped unanswered.", rich_help_panel=F),
    hang_for: str = typer.Option("60s", "--hang-for", rich_help_panel=F),
    outage: List[str] = typer.Option([], "--outage", help="START-END[:refuse|hang|CODE] after sink start, e.g. 10s-40s:refuse (repeatable; default mode 503).", rich_help_panel=F),
    max_body_bytes: Optional[str] = typer.Option(None, "--max-body-bytes", help="Answer 413 above this size, before or after gzip decompression [default: 12MiB, Falco's].", rich_help_panel=F),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Answer 429 beyond N requests in flight.", rich_help_panel=F),
    seed: int = typer.Option(1, "--seed", help="Seed for every random fault decision.", rich_help_panel=F),
    write_kubeconfig: Optional[Path] = typer.Option(None, "--write-kubeconfig", help="Write the --audit-webhook-config-file kubeconfig pointing at this sink (mode 0600, absolute certificate paths)."),
    chain_key_file: Optional[Path] = typer.Option(None, "--chain-key-file", help="Key the store's chain with HMAC-SHA256 (file of >= 16 bytes, mode 0600, outside the store's folder); verify then needs it."),
    header_timeout: str = typer.Option("10s", "--header-timeout", help="Close a connection whose request head (any request, first or keep-alive) is not complete within this of its first byte."),
    body_timeout: str = typer.Option("60s", "--body-timeout", help="Answer 408 when a body takes longer than this to arrive."),
    idle_timeout: str = typer.Option("90s", "--idle-timeout", help="Close a keep-alive connection idle this long."),
    duration: Optional[str] = typer.Option(None, "--duration", help="Stop after this long (default: until Ctrl-C)."),
    stats_out: Optional[Path] = typer.Option(None, "--stats-out", help="Write the final stats JSON here on exit, with every per-request handling latency (latency_samples_s)."),
) -> None:
    from audit_tune.basics.output import log, write_atomic
    from audit_tune.loadgen.faults import FaultConfig
    from audit_tune.loadgen.keyfiles import write_private
    from audit_tune.loadgen.sink import SinkConfig, SinkServer, serve, webhook_kubeconfig
    from audit_tune.sim.units import parse_duration

    token = _read_token(token_file)
    faults = FaultConfig.from_flags(latency=latency, latency_per_inflight=latency_per_inflight,
                                    error_rate=error_rate, error_status=error_status, hang_rate=hang_rate,
                                    hang_for=hang_for, outages=outage, max_body_bytes=max_body_bytes,
                                    max_concurrency=max_concurrency, seed=seed)
    cfg = SinkConfig(host=host, port=port, store=str(store) if store else None, fsync=fsync,
                     fsync_interval=parse_duration(fsync_interval, "--fsync-interval"),
                     tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
                     tls_generate=str(tls_generate) if tls_generate else None,
                     client_ca=str(client_ca) if client_ca else None, client_cert_auth=client_cert_auth,
                     token=token, faults=faults, chain_key_file=str(chain_key_file) if chain_key_file else None,
                     header_timeout=parse_duration(header_timeout, "--header-timeout"),
                     body_timeout=parse_duration(body_timeout, "--body-timeout"),
                     idle_timeout=parse_duration(idle_timeout, "--idle-timeout"))
    stop_after = parse_duration(duration, "--duration") if duration else None
    kc_folder = write_kubeconfig.parent if write_kubeconfig is not None else None
    into_tls = kc_folder is not None and tls_generate is not None and kc_folder.resolve() == tls_generate.resolve()
    if kc_folder is not None and not kc_folder.exists() and not into_tls:  # --tls-generate creates its folder
        raise InputError(f"--write-kubeconfig {write_kubeconfig}: folder does not exist")

    def ready(server: SinkServer) -> None:
        tf = server.tls_files
        if write_kubeconfig is not None:
            ca = str(tf.ca_cert) if tf else None
            cc = str(tf.client_cert) if (tf and client_cert_auth) else None
            ck = str(tf.client_key) if (tf and client_cert_auth) else None
            text = webhook_kubeconfig(server.url, ca_cert=ca, token=token, client_cert=cc, client_key=ck)
            write_private(write_kubeconfig, text)
        info = {"url": server.url, "pid": os.getpid(), "store": cfg.store,
                "ca_cert": str(tf.ca_cert) if tf else None,
                "kubeconfig": str(write_kubeconfig) if write_kubeconfig else None,
                "config": cfg.to_dict()}
        print(json.dumps(info), flush=True)
        log(f"sink listening on {server.url}" + (f", storing to {cfg.store}" if cfg.store else " (not storing)"))
        if stop_after is not None:
            import asyncio
            import signal

            asyncio.get_running_loop().call_later(stop_after, os.kill, os.getpid(), signal.SIGTERM)

    server = serve(cfg, ready)
    stats = server.stats()
    log(f"sink stopped: {stats['events_stored']} events in {stats['batches']} batches stored, "
        f"responses {stats['responses']}")
    if stats_out is not None:
        write_atomic(stats_out, json.dumps(server.stats(samples=True), indent=2) + "\n")


def _read_token(token_file: Optional[Path]) -> Optional[str]:
    """The bearer token: one line of visible ASCII (what an HTTP header can carry), never echoed."""
    if token_file is not None:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(MAX_TOKEN_BYTES + 1)
        except OSError as e:
            raise InputError(f"--token-file {token_file}: {e.strerror}") from None
        if len(raw) > MAX_TOKEN_BYTES:
            raise InputError(f"--token-file {token_file}: longer than {MAX_TOKEN_BYTES} bytes; not a token file?")
        tok, where = raw.strip(), f"--token-file {token_file}"
    else:
        tok, where = os.environ.get("AUDIT_SINK_TOKEN", "").strip().encode("utf-8", "replace"), "AUDIT_SINK_TOKEN"
        if not tok:
            return None
    if not tok:
        raise InputError(f"{where}: file is empty")
    if not all(0x21 <= b <= 0x7E for b in tok):
        raise InputError(f"{where}: the token must be one line of visible ASCII (no spaces, control or "
                         "non-ASCII bytes) to travel in an Authorization header")
    return tok.decode("ascii")


MAX_TOKEN_BYTES = 4096


VERIFY_HELP = """Check a sink store's hash chain against its head and count its events.

Exit 0 if intact; exit 1 with one line naming the first bad record line if a record was deleted,
altered or reordered, or the end of the store does not match STORE.head. A missing head fails
unless --allow-unanchored. Batches written but not acknowledged before a crash are reported,
not counted. A plain chain detects damage, not a consistent rewrite; a keyed one
(--chain-key-file) detects that too. See docs/sink-promises.md.

Example:  [bold]tune sink verify ./audit/ev.jsonl --format json[/bold]
"""


def verify_cmd(
    store: Path = typer.Argument(..., help="The JSONL store written by 'tune sink serve --store'."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to FILE (atomically) instead of stdout."),
    chain_key_file: Optional[Path] = typer.Option(None, "--chain-key-file", help="The key the sink was started with (keyed stores)."),
    allow_unanchored: bool = typer.Option(False, "--allow-unanchored", help="Check the chain even without STORE.head (the end of the store then cannot be checked)."),
) -> None:
    from audit_tune.basics.output import render, write_output
    from audit_tune.loadgen.chain import load_key
    from audit_tune.loadgen.store import verify

    key = load_key(chain_key_file, store) if chain_key_file else None
    summary = verify(store, key=key, allow_unanchored=allow_unanchored).to_dict()
    if fmt == "table":
        text = _table(summary)
    else:
        text = render(summary, fmt)
    write_output(text, output)


def _table(s: dict) -> str:
    lines = [f"store    {s['store']}",
             f"chain    ok ({s['chain']})" + ("" if s["head_checked"] else " (no .head file: last record not anchored)"),
             f"events   {s['events']}", f"batches  {s['batches']}"]
    if s["unanchored_events"] or s["torn_bytes"]:
        lines.append(f"past the head: {s['unanchored_events']} events, {s['torn_bytes']} torn bytes "
                     "(written, never acknowledged: a crash or a write in progress)")
    for title, key in (("stage", "by_stage"), ("level", "by_level"), ("verb", "by_verb")):
        if s[key]:
            lines.append(f"by {title}:")
            w = max(len(k) for k in s[key])
            lines += [f"  {k:<{w}}  {v:>10}" for k, v in sorted(s[key].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"
