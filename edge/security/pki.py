"""The hub's certificate authority: pure functions from keys, requests and ``now`` to certificates.

No file I/O here (see :mod:`edge.security.identity` for where the files live). Every certificate
the hub issues is signed by its own CA, whose key never leaves the box:

- the **CA** (ECDSA P-256, 20 years, path length 0: it can sign leaf certificates only);
- the hub's **server certificate** for the LAN broker listener and the HTTPS API (names and
  addresses of the hub as subject alternative names; 1 year, renewed in place);
- **device certificates** from a device's certificate signing request (CSR). The hub decides the
  subject: CN = the enrolled device name (Mosquitto uses it as the MQTT username, so it is the
  identity the ACLs name), OU = the role. Whatever subject the CSR asks for is ignored; only its
  public key is used, after the CSR's own signature proves the device holds the private key.
- the **CRL** of revoked device certificates, which the broker checks at every TLS handshake.

Errors: :class:`CsrError` with a stable ``code`` (``INVALID_CSR``, ``WEAK_KEY``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdate not_before a little: a device whose clock is a few minutes behind the hub's must not
# reject a certificate it was just given.
CLOCK_SKEW = dt.timedelta(minutes=5)

ROLES = ("register", "peripheral", "display")


class CsrError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the DER certificate: what the hub's mDNS advert carries."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def new_ca(store_id: str, hub_id: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> Issued:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "store-edge"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"store-edge hub CA {store_id}/{hub_id}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=20 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert)


def issue_server(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    hub_id: str,
    names: Sequence[str],
    addresses: Sequence[str],
    now: dt.datetime,
    days: int,
) -> Issued:
    """The hub's TLS server certificate; ``names``/``addresses`` become its SANs."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in _unique(names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in _unique(addresses)]
    builder = _leaf(ca_key, ca, key.public_key(), cn=hub_id, ou="hub", now=now, days=days)
    cert = (
        builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert)


def load_csr(pem: str | bytes) -> x509.CertificateSigningRequest:
    """Parse and check a device's CSR: well-formed, self-signed by its key, a strong key."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
        valid = csr.is_signature_valid
        public = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CsrError("INVALID_CSR", f"not a PEM certificate signing request: {exc}") from None
    if not valid:
        raise CsrError("INVALID_CSR", "the request's signature does not match its key")
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.key_size < 256:
            raise CsrError("WEAK_KEY", f"EC key on {public.curve.name}: use P-256 or stronger")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CsrError("WEAK_KEY", f"RSA key of {public.key_size} bits: use 2048 or more")
    elif not isinstance(public, ed25519.Ed25519PublicKey):
        raise CsrError("WEAK_KEY", "key type not accepted: use EC P-256, RSA 2048+ or Ed25519")
    return csr


def issue_device(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    *,
    name: str,
    role: str,
    now: dt.datetime,
    days: int,
) -> Issued:
    """A client certificate for an enrolled device: CN = ``name``, OU = ``role``."""
    public = csr.public_key()
    if not isinstance(
        public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise CsrError("WEAK_KEY", "key type not accepted")
    builder = _leaf(ca_key, ca, public, cn=name, ou=role, now=now, days=days)
    cert = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    ).sign(ca_key, hashes.SHA256())
    return Issued(cert)


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime,
    valid_for: dt.timedelta,
) -> x509.CertificateRevocationList:
    """The CRL naming every revoked serial. ``valid_for`` must outlast the hub's refresh of it:
    OpenSSL refuses every client once next_update has passed."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + valid_for)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def subject_cn(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    *,
    cn: str,
    ou: str,
    now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "store-edge"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_public(ca)), critical=False
        )
    )


def _ca_public(ca: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))
