"""Certificates for the local stack: one CA, a serving cert, a client cert, a service-account key pair.

Mirrors what envtest sets up (controller-runtime ``pkg/internal/testing/certs/tinyca.go``,
``pkg/internal/testing/controlplane/auth.go`` and ``apiserver.go``):

* a CA that signs both the kube-apiserver serving certificate (SANs ``127.0.0.1`` and
  ``localhost``) and the client certificates (``--client-ca-file``);
* a client certificate for the load generator user, ``CN=audit-tune-loadgen``,
  ``O=system:masters`` (so RBAC allows everything, including ``/metrics``);
* a service-account signing key pair (``--service-account-key-file`` /
  ``--service-account-signing-key-file``).

Keys are ECDSA P-256 (fast to generate), written with mode 0600 into a private (0700) folder,
each file created fresh and renamed into place (:mod:`loadgen.keyfiles`).
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from audit_tune.loadgen.keyfiles import private_dir, write_private

CLIENT_USER = "audit-tune-loadgen"
CLIENT_GROUP = "system:masters"
_VALIDITY = _dt.timedelta(days=7)


@dataclass(frozen=True)
class CertBundle:
    """Paths of the PEM files :func:`generate` wrote."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    client_cert: Path
    client_key: Path
    sa_key: Path  # private key: --service-account-signing-key-file
    sa_pub: Path  # public key:  --service-account-key-file


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_private(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_private(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, pub) -> x509.CertificateBuilder:
    now = _dt.datetime.now(_dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY))


def make_ca(cn: str = "audit-tune-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key."""
    key = _key()
    name = _name(cn)
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, *,
              org: str | None = None, server: bool = False, client: bool = False,
              hosts: tuple[str, ...] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``ca``; ``hosts`` become DNS or IP SANs."""
    key = _key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    b = (_builder(_name(cn, org), ca_cert.subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if hosts:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def generate(directory: str | os.PathLike, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
             client_user: str = CLIENT_USER, client_group: str = CLIENT_GROUP) -> CertBundle:
    """Write a full set of PEM files for one local cluster into ``directory``."""
    d = private_dir(directory, "PKI folder")
    b = CertBundle(ca_cert=d / "ca.crt", ca_key=d / "ca.key",
                   serving_cert=d / "apiserver.crt", serving_key=d / "apiserver.key",
                   client_cert=d / "client.crt", client_key=d / "client.key",
                   sa_key=d / "sa.key", sa_pub=d / "sa.pub")
    ca, ca_key = make_ca()
    _write_cert(b.ca_cert, ca)
    _write_key(b.ca_key, ca_key)
    srv, srv_key = make_leaf(ca, ca_key, "kube-apiserver", server=True, hosts=hosts)
    _write_cert(b.serving_cert, srv)
    _write_key(b.serving_key, srv_key)
    cli, cli_key = make_leaf(ca, ca_key, client_user, org=client_group, client=True)
    _write_cert(b.client_cert, cli)
    _write_key(b.client_key, cli_key)
    sa = _key()
    _write_key(b.sa_key, sa)
    write_private(b.sa_pub, sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return b
