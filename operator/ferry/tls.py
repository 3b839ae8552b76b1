"""Certificates: every CA, key pair and TLS context Ferry makes or reads, in one module.

Kopf's built-in self-signed certificates (certbuilder + oscrypto) cannot read OpenSSL 3's version
on these machines, so Ferry makes its own CA and leaf certificates with `cryptography`. Used by the
dev/test control plane (its CA, the API server's serving certificate, the admin and webhook-client
identities), by the admission webhook server (its serving certificate and the TLS context that
requires the API server's client certificate), and by the operator's certificate keeper
(``ferry.reconcile.certificates``, decision 0022: CAs and serving certificates of set validity,
and the facts its renewal decisions are made on).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ferry.domain.certificates import Facts

_VALIDITY = dt.timedelta(days=365)
#: Certificates start this long before they are made: a verifier whose clock is a little behind
#: still accepts them. Their ``issued_at`` (:func:`facts`) is ``not_valid_before`` plus this.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, common_name: str = "ferry-local-ca", validity: dt.timedelta = _VALIDITY
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert: x509.Certificate, key_pem: bytes) -> CertificateAuthority | None:
        """The CA of ``cert`` with the private key in ``key_pem``; None when they do not match."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            return None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
            return None
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pair(self) -> KeyPair:
        return KeyPair(self.cert_pem, _private_pem(self.key))

    def issue(
        self,
        common_name: str,
        *,
        hosts: tuple[str, ...] = (),
        organizations: tuple[str, ...] = (),
        client: bool = False,
        not_after: dt.datetime | None = None,
    ) -> KeyPair:
        """Issue a serving certificate (``hosts`` as SANs) or a client identity (``client=True``).

        For a Kubernetes client certificate the CN is the user name and O the groups, which is how
        the dev kubeconfig gets ``system:masters``. ``not_after``: the end of its validity
        (default: a year).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after or now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _private_pem(key))


def facts(cert: x509.Certificate) -> Facts:
    """What :mod:`ferry.domain.certificates` decides renewals on."""
    return Facts(
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        issued_at=cert.not_valid_before_utc + BACKDATE,
        not_after=cert.not_valid_after_utc,
    )


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; none when it is not one."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def serves(cert: x509.Certificate, key_pem: bytes, hosts: tuple[str, ...]) -> bool:
    """Whether ``cert`` goes with the private key ``key_pem`` and names every one of ``hosts``."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
        return False
    return all(_general_name(host) in names for host in hosts)


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    return bool(cert.public_key().public_bytes(serialization.Encoding.DER, spki) == mine)


def rsa_private_key_pem() -> tuple[bytes, bytes]:
    """An RSA key pair (private PEM, public PEM): the API server signs service-account tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _private_pem(key), public


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_name(host: str) -> x509.GeneralName:
    """``host`` as a subjectAltName: an IP address entry for an address, a DNS entry otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# ------------------------------------------------------------------------- serving certificates

#: A generated serving certificate is replaced at start when it expires sooner than this.
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class ServingCertificate:
    """The files an HTTPS server presents; ``ca`` is the bundle its clients verify it with."""

    ca: Path
    cert: Path
    key: Path
    generated: bool
    """True: made here (the caller registers ``ca`` itself); False: mounted (e.g. cert-manager)."""


def serving_certificate(directory: Path | None, host: str) -> ServingCertificate:
    """The serving certificate in ``directory``: mounted (``tls.crt``/``tls.key``/``ca.crt``, as
    cert-manager writes a Secret) or generated for ``host``.

    Generated files use other names (``generated-*``) so that a restart never mistakes them for a
    mounted Secret, and are reused while valid for ``host`` (a restart keeps the CA bundle that
    was registered valid). The generated CA's key is not kept: nothing else is ever signed by it.
    """
    if directory is not None and (directory / "tls.crt").exists():
        ca = directory / "ca.crt"
        return ServingCertificate(
            ca=ca if ca.exists() else directory / "tls.crt",
            cert=directory / "tls.crt",
            key=directory / "tls.key",
            generated=False,
        )
    directory = directory or Path(tempfile.mkdtemp(prefix="ferry-webhook-"))
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "generated-ca.crt"
    cert, key = directory / "generated-tls.crt", directory / "generated-tls.key"
    if not _reusable(ca, cert, key, host):
        authority = CertificateAuthority.create("ferry-webhook-ca")
        ca.write_bytes(authority.cert_pem)
        authority.issue(host, hosts=(host,)).write(cert, key)
    return ServingCertificate(ca=ca, cert=cert, key=key, generated=True)


def _reusable(ca: Path, cert: Path, key: Path, host: str) -> bool:
    if not (ca.exists() and cert.exists() and key.exists()):
        return False
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    fresh = parsed.not_valid_after_utc > dt.datetime.now(dt.UTC) + _RENEW_BEFORE
    return fresh and _general_name(host) in sans


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context presenting ``cert``; with ``client_ca``, one that completes a handshake
    only with a client certificate signed by that CA (and by no other: the system's trust store is
    never loaded, so a certificate from a public CA does not pass)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
