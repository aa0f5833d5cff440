"""Configuration of the audit webhook sink (:mod:`loadgen.sink`), with its limits and timeouts.

Limits follow what a webhook receiver in production uses: the body limit defaults to 12 MiB
(Falco's default); a gzip body is limited by the same number
after decompression. Timeouts: ``header_timeout`` for each request head (from its first byte),
``body_timeout`` for reading one body, ``idle_timeout`` for a keep-alive connection with no
request (Go's ``http.Server`` ``ReadHeaderTimeout``/``ReadTimeout``/``IdleTimeout``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject
from audit_tune.loadgen.faults import FaultConfig, Latency, Outage
from audit_tune.loadgen.store import FSYNC_POLICIES

DEFAULT_MAX_BODY = 12 * 1024 * 1024


@dataclass(frozen=True)
class SinkConfig:
    """How to run a sink. ``store=None`` counts events without keeping them.

    TLS: ``tls_cert``/``tls_key`` serve HTTPS with the given pair; ``tls_generate`` (a folder)
    creates a CA, a server cert for 127.0.0.1/localhost and a client cert there and serves
    with them. ``client_ca`` requires client certificates signed by that CA (with
    ``tls_generate`` and ``client_cert_auth=True`` the generated CA is used).
    Auth: ``token`` requires ``Authorization: Bearer <token>`` on POSTs; it is never printed.
    Store: ``chain_key_file`` keys the chain (HMAC-SHA256, :mod:`loadgen.chain`); ``retry_after``
    is the ``Retry-After`` (s) sent with a 503 while the store cannot take writes.
    """

    host: str = "127.0.0.1"
    port: int = 0
    store: str | None = None
    fsync: str = "always"
    fsync_interval: float = 1.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_generate: str | None = None
    client_ca: str | None = None
    client_cert_auth: bool = False
    token: str | None = field(default=None, repr=False)
    faults: FaultConfig = field(default_factory=FaultConfig)
    max_latency_samples: int = 1_000_000
    allow_non_loopback: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 90.0
    retry_after: int = 5
    chain_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.allow_non_loopback:
            raise InputError(f"--host {self.host}: the sink binds loopback only (127.0.0.1, ::1, localhost)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InputError("--tls-cert and --tls-key go together")
        if self.tls_cert and self.tls_generate:
            raise InputError("--tls-cert/--tls-key and --tls-generate are exclusive")
        if self.fsync not in FSYNC_POLICIES:
            raise InputError(f"--fsync {self.fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port}: must be 0..65535")
        if self.max_body_bytes < 1:
            raise InputError(f"--max-body-bytes {self.max_body_bytes}: must be >= 1")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            v = getattr(self, name)
            if not 0 < v < 86400:
                raise InputError(f"--{name.replace('_', '-')} {v}: must be above 0 and below a day")
        if self.chain_key_file and not self.store:
            raise InputError("--chain-key-file needs --store")

    @property
    def body_limit(self) -> int:
        """The body limit in force: the fault's ``--max-body-bytes`` when set, else the default."""
        fb = self.faults.max_body_bytes
        return fb if fb is not None else self.max_body_bytes

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_generate)

    def to_dict(self) -> JsonObject:
        """JSON-safe echo of the configuration; the token shows only as set or not."""
        d: JsonObject = asdict(self)
        d["faults"] = self.faults.to_dict()
        d["token"] = "<set>" if self.token else None
        return d

    def to_json(self) -> str:
        """Full round-trip form, token included, for handing to a child process (never logged)."""
        d = asdict(self)
        f = self.faults
        d["faults"] = {
            "latency": [f.latency.kind, [list(p) for p in f.latency.params]],
            "latency_per_inflight": f.latency_per_inflight, "error_rate": f.error_rate,
            "error_status": f.error_status, "hang_rate": f.hang_rate, "hang_for": f.hang_for,
            "outages": [[o.start, o.end, o.mode] for o in f.outages],
            "max_body_bytes": f.max_body_bytes, "max_concurrency": f.max_concurrency, "seed": f.seed,
        }
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> SinkConfig:
        d = json.loads(text)
        f = d.pop("faults")
        kind, params = f.pop("latency")
        faults = FaultConfig(latency=Latency(kind, tuple((k, float(v)) for k, v in params)),
                             outages=tuple(Outage(a, b, m) for a, b, m in f.pop("outages")), **f)
        return cls(faults=faults, **d)
