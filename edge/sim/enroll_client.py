"""A device's side of enrollment: what a register does with a technician's code.

A reference for register vendors (docs/protocol.md, "Enrollment" shows the same steps) and the
client the simulated lanes, the demo and the tests use:

1. Fetch the hub CA over TLS **without** trusting it yet, and compare its fingerprint with the
   one in the hub's mDNS advert (TXT ``ca``). A mismatch stops here: someone else answered.
2. From then on trust only that CA: post the code and a CSR for a key generated on the device
   (the key never leaves it); receive the certificate and the broker's mutual-TLS port.
3. Renew before ``not_after`` by posting a new CSR over mutual TLS with the current certificate;
   the MQTT connection stays up, the new certificate is used at the next connect.

The hub's certificate names its addresses, but a store's DHCP may move the hub: the device
checks the chain against the pinned CA and does not match the host name (the CA is the store's
own, it signs nothing but this hub and its devices, and device certificates are client-only).
"""

from __future__ import annotations

import hashlib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class EnrollFailed(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass
class DeviceCredentials:
    name: str
    role: str
    lane: str
    key_pem: bytes
    certificate_pem: str
    ca_pem: str
    broker_port: int
    not_after: str

    def ssl_context(self) -> ssl.SSLContext:
        """TLS client context for the broker and the HTTPS API: pinned CA, our certificate.

        ``ssl`` loads a key pair from files only: they exist, mode 0600, for the load alone."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem)
        context.check_hostname = False
        with tempfile.TemporaryDirectory() as tmp:
            cert_path = Path(tmp, "cert.pem")
            key_path = Path(tmp, "key.pem")
            cert_path.write_text(self.certificate_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            context.load_cert_chain(cert_path, key_path)
        return context


def new_csr(name: str) -> tuple[bytes, str]:
    """A fresh P-256 key and a CSR for it (the hub sets the subject; ours is a courtesy)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def ca_fingerprint(ca_pem: str) -> str:
    der = x509.load_pem_x509_certificate(ca_pem.encode()).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


async def fetch_ca(session: aiohttp.ClientSession, base_url: str, fingerprint: str) -> str:
    """Step 1: the hub CA, accepted only if it matches the advertised fingerprint."""
    async with session.get(f"{base_url}/api/v1/enroll/ca", ssl=False) as response:
        body = await response.json()
    ca_pem = str(body["ca"])
    seen = ca_fingerprint(ca_pem)
    if seen != fingerprint:
        raise EnrollFailed(0, "CA_MISMATCH", f"hub CA {seen} is not the advertised {fingerprint}")
    return ca_pem


async def enroll(
    base_url: str, code: str, *, fingerprint: str, name: str = "device"
) -> DeviceCredentials:
    """Steps 1-2: from a technician's code to a certificate for the broker."""
    async with aiohttp.ClientSession() as session:
        ca_pem = await fetch_ca(session, base_url, fingerprint)
        trust = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
        trust.check_hostname = False
        key_pem, csr = new_csr(name)
        async with session.post(
            f"{base_url}/api/v1/enroll", json={"code": code, "csr": csr}, ssl=trust
        ) as response:
            body = await response.json()
            if response.status != 200:
                error = body.get("error", {})
                raise EnrollFailed(response.status, error.get("code", ""), error.get("message", ""))
    return _credentials(body, key_pem)


async def renew(base_url: str, current: DeviceCredentials) -> DeviceCredentials:
    """Step 3: a new certificate, authenticated by the current one."""
    key_pem, csr = new_csr(current.name)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/api/v1/enroll/renew", json={"csr": csr}, ssl=current.ssl_context()
        ) as response,
    ):
        body = await response.json()
        if response.status != 200:
            error = body.get("error", {})
            raise EnrollFailed(response.status, error.get("code", ""), error.get("message", ""))
    return _credentials(body, key_pem)


def _credentials(body: dict[str, Any], key_pem: bytes) -> DeviceCredentials:
    return DeviceCredentials(
        name=str(body["device"]),
        role=str(body["role"]),
        lane=str(body["lane"]),
        key_pem=key_pem,
        certificate_pem=str(body["certificate"]),
        ca_pem=str(body["ca"]),
        broker_port=int(body["broker_port"]),
        not_after=str(body["not_after"]),
    )
