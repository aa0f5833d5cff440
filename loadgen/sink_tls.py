"""TLS material for the sink: a throw-away CA, a server certificate for 127.0.0.1/localhost and,
optionally, a client certificate, written as PEM files into a private folder (0700), keys with
mode 0600, each created fresh and renamed into place (:mod:`loadgen.keyfiles`).

kube-apiserver's webhook kubeconfig needs the CA (``certificate-authority``) to trust the sink,
and, for client-cert auth, a client cert/key (``client-certificate``/``client-key``) that the
sink checks against the same CA. This module is small on purpose; the local stack has its own
``loadgen.certs`` for the cluster PKI.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from audit_tune.basics.errors import InputError
from audit_tune.loadgen.keyfiles import private_dir, write_private


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    write_private(path, data, 0o600 if secret else 0o644)


def generate(folder: str | os.PathLike, client: bool = True, days: int = 7) -> TLSFiles:
    """Create ``ca.crt``, ``server.crt/.key`` (SANs 127.0.0.1, ::1, localhost) and ``client.crt/.key``.

    ``folder`` must be new or private (:func:`loadgen.keyfiles.private_dir`); paths are absolute.
    """
    d = private_dir(folder)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit-tune-sink-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage, sans: list | None) -> tuple[bytes, bytes]:
        k = key()
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_name).public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(k)

    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    files = TLSFiles(d / "ca.crt", d / "server.crt", d / "server.key")
    _write(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    c, k = leaf("audit-tune-sink", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write(files.server_cert, c)
    _write(files.server_key, k, secret=True)
    if client:
        files = TLSFiles(files.ca_cert, files.server_cert, files.server_key, d / "client.crt", d / "client.key")
        c, k = leaf("kube-apiserver-audit-webhook", ExtendedKeyUsageOID.CLIENT_AUTH, None)
        _write(files.client_cert, c)  # type: ignore[arg-type]
        _write(files.client_key, k, secret=True)  # type: ignore[arg-type]
    return files


def server_context(cert: str | os.PathLike, key: str | os.PathLike,
                   client_ca: str | os.PathLike | None = None) -> ssl.SSLContext:
    """Server-side context; with ``client_ca`` every client must present a cert signed by it."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise InputError(f"--tls-cert/--tls-key/--client-ca: cannot load ({e.__class__.__name__}: "
                         f"{getattr(e, 'strerror', None) or e})") from None
    return ctx


def client_context(ca: str | os.PathLike | None = None, cert: str | os.PathLike | None = None,
                   key: str | os.PathLike | None = None, insecure: bool = False) -> ssl.SSLContext:
    """Client-side context trusting ``ca`` (or the system store) and presenting ``cert``/``key``."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
