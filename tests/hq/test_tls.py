"""The link over mutual TLS: a cloud Mosquitto that requires a client certificate from HQ's
CA, certificates made here with `cryptography`. Proves [hq] ca_file, cert_file and key_file
reach the TLS handshake, and that a hub without a certificate does not get in."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import MosquittoProcess
from tests.hq.conftest import link_settings, running_link


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> None:
    """ca.pem, server.{pem,key} for 127.0.0.1, client.{pem,key} for the hub."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("HQ test CA"))
        .issuer_name(_name("HQ test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca", ca_key, ca)
    for name, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("127.0.0.1" if san else "edge-hq-s1"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        _write(directory / name, key, builder.sign(ca_key, hashes.SHA256()))


class TlsMosquitto(MosquittoProcess):
    def __init__(self, binary: str, directory: Path, port: int, pki: Path) -> None:
        super().__init__(binary, directory, port)
        self.pki = pki

    def write_config(self) -> None:
        super().write_config()
        with self.conf.open("a") as conf:
            conf.write(
                f"cafile {self.pki / 'ca.pem'}\n"
                f"certfile {self.pki / 'server.pem'}\n"
                f"keyfile {self.pki / 'server.key'}\n"
                "require_certificate true\n"
            )


async def test_the_link_connects_with_its_client_certificate_and_not_without(
    tmp_path: Path,
    mosquitto_bin: str,
    free_port: Callable[[], int],
    pinned_key_path: Path,
) -> None:
    pki = tmp_path / "pki-cloud"
    make_pki(pki)
    cloud = TlsMosquitto(mosquitto_bin, tmp_path / "cloud-tls", free_port(), pki)
    await cloud.start()
    try:
        settings = link_settings(
            cloud,
            tls=True,
            ca_file=str(pki / "ca.pem"),
            cert_file=str(pki / "client.pem"),
            key_file=str(pki / "client.key"),
        )
        async with running_link(settings, tmp_path / "state", pinned_key_path) as link:
            assert link.is_connected
            assert link.connects == 1

        no_cert = link_settings(cloud, tls=True, ca_file=str(pki / "ca.pem"))
        with pytest.raises(TimeoutError):
            async with running_link(
                no_cert, tmp_path / "state2", pinned_key_path, connect_timeout=2
            ):
                pass
        log = await asyncio.to_thread(cloud.log.read_text)
        assert "peer did not return a certificate" in log
    finally:
        cloud.stop()
