"""
The gateway's own TLS identity: a configured certificate, or a self-signed
one generated in the data directory on first start and reused afterwards.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl

from hoopgw.errors import ConfigError
from hoopgw.keys import create_private_file

SELF_SIGNED_NAMES = ("localhost", "127.0.0.1", "::1")


def _self_signed(names: tuple[str, ...], now: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopgw self-signed")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(
    data_dir: Path,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    *,
    names: tuple[str, ...] = SELF_SIGNED_NAMES,
) -> tuple[Path, Path]:
    """
    Return the certificate and key paths to serve with: the configured pair,
    or C{data_dir/tls/gateway.{crt,key}}, generated (self-signed) if absent.
    Runs at start-up only.
    """
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    cert_path = data_dir / "tls" / "gateway.crt"
    key_path = data_dir / "tls" / "gateway.key"
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = _self_signed(names, datetime.datetime.now(datetime.timezone.utc))
        create_private_file(key_path, key_pem)
        cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def client_trust(cert_path: Path) -> dict[str, object]:
    """
    What a client needs to trust the gateway's certificate, for
    C{/.well-known/hoopgw}: the names it is valid for, and the PEM of the
    chain's root when the certificate file ends in a self-signed one (the
    generated certificate, or a private CA's root included in the file); a
    client that fetched the discovery document over a channel it trusts
    pins it.  Without it, clients use their usual trust store.
    """
    trust: dict[str, object] = {"names": []}
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError):
        return trust  # the listeners that serve it say what is wrong with it
    try:
        alt = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        trust["names"] = [str(n) for n in alt.get_values_for_type(x509.DNSName)] + [
            str(a) for a in alt.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        pass
    root = chain[-1]
    if root.issuer == root.subject:
        trust["ca"] = root.public_bytes(serialization.Encoding.PEM).decode()
    return trust


def server_options(
    cert_path: Path, key_path: Path, *, alpn: tuple[bytes, ...] = ()
) -> ssl.CertificateOptions:
    """
    TLS server options (TLS 1.2+) for the gateway's listeners.  C{alpn}: the
    protocol names to accept; Twisted fails the handshake of a client that
    offers ALPN with no name in common, so a listener whose clients offer one
    (libpq 17+ always sends "postgresql") must list it.
    """
    try:
        certificate = ssl.PrivateCertificate.loadPEM(cert_path.read_bytes() + key_path.read_bytes())
    except Exception as e:
        raise ConfigError(cert_path, "tls", f"cannot load certificate and key: {e}") from e
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=list(alpn) or None,
    )
