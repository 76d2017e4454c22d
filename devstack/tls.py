"""A throwaway certificate authority and the secured dev broker's TLS certificate.

Made locally with ``cryptography`` on the first ``orderproc dev up --secure`` and
kept (renewed when about to expire). Layout of the TLS folder::

    ca.pem        the CA certificate: what clients trust (``ORDERPROC_SSL_CA_LOCATION``)
    ca-key.pem    the CA's private key (0600), only to sign a renewed broker certificate
    broker.pem    the broker's PEM keystore (0600): PKCS#8 key, its certificate, the CA

Kafka's PEM keystore wants a PKCS#8 key (``BEGIN PRIVATE KEY``): a SEC1 EC key stops
the broker at startup. The certificate names ``localhost`` and ``IP:127.0.0.1``:
librdkafka checks the address clients connect to against those names.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "orderproc devstack CA"
VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)
"""A certificate this close to expiry (or past it) is made again on the next start."""


@dataclass(frozen=True)
class TlsFiles:
    """Where one secured devstack keeps its TLS material."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a little clock skew is fine
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def make_ca(common_name: str = CA_NAME) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed CA (P-256): its key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common_name), _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, host: str = "127.0.0.1"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``localhost`` and ``host`` (an IP address), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
    cert = (
        _builder(_name("localhost"), ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, the form Kafka's PEM keystore reads."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _fresh(path: Path) -> bool:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(certs) and certs[0].not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _load_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    if not _fresh(files.ca):
        return None
    try:
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    except (OSError, ValueError):
        return None
    return (key, cert) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def ensure_tls(folder: Path, host: str = "127.0.0.1") -> TlsFiles:
    """The CA and broker certificate under ``folder``, made or renewed when needed.

    A valid CA is kept (clients keep trusting it); the broker certificate is made
    again only when it is missing or about to expire.
    """
    files = TlsFiles(folder)
    ca = _load_ca(files)
    if ca is None:
        ca = make_ca()
        write_private(files.ca_key, key_pem(ca[0]))
        files.ca.write_bytes(cert_pem(ca[1]))
        files.keystore.unlink(missing_ok=True)  # signed by the old CA
    if not _fresh(files.keystore):
        key, cert = make_server_cert(*ca, host=host)
        write_private(files.keystore, key_pem(key) + cert_pem(cert) + cert_pem(ca[1]))
    return files
