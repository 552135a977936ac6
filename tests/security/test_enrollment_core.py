"""The enrollment service on a real identity (files, SQLite) with ``now`` passed in, and the
enrollment endpoint fuzzed over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.security import api, pki
from edge.security.enrollment import (
    ALPHABET,
    AttemptLimiter,
    EnrollError,
    code_hash,
    new_code,
    normalize,
)
from edge.security.identity import Identity, IdentityError, initialize, is_initialized
from edge.security.service import Enrollment
from edge.sim.enroll_client import new_csr

START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def make_identity(tmp_path: Path, now: float = START) -> Identity:
    return initialize(
        tmp_path,
        store_id="s1",
        hub_id="hub-1",
        names=["hub.store.local"],
        addresses=["10.0.0.2"],
        hq_public_key=b"pinned",
        now=dt.datetime.fromtimestamp(now, dt.UTC),
    )


def test_codes_are_typeable_and_forgiving() -> None:
    code = new_code()
    assert len(code) == 9
    assert code[4] == "-"
    assert set(code.replace("-", "")) <= set(ALPHABET)
    assert normalize(" abcd-ef01 ") == "ABCDEF01"
    assert code_hash("ABCD-EF01") == code_hash("abcdef0l") == code_hash("ABCD EFO1")
    assert code_hash("ABCD-EF01") != code_hash("ABCD-EF02")


def test_initialize_creates_private_keys_and_refuses_to_replace_a_ca(tmp_path: Path) -> None:
    identity = make_identity(tmp_path)
    root = identity.root
    assert (root.stat().st_mode & 0o777) == 0o700
    for secret in ("ca.key", "server.key", "hub.secret", "broker.passwd"):
        assert ((root / secret).stat().st_mode & 0o077) == 0, secret
    server = identity.server_certificate()
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hub.store.local" in sans.get_values_for_type(x509.DNSName)
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.2"]
    assert identity.hq_public_key() == b"pinned"
    # The hub password is in the broker's file only as a hash.
    assert identity.hub_password not in (root / "broker.passwd").read_text()
    with pytest.raises(IdentityError, match="--force"):
        make_identity(tmp_path)


async def _note(reloads: list[None]) -> None:
    """A broker reload, counted."""
    reloads.append(None)


async def test_a_code_expires_is_single_use_and_only_one_racer_wins(tmp_path: Path) -> None:
    clock = Clock()
    reloads: list[None] = []
    service = Enrollment(
        make_identity(tmp_path),
        hub_id="hub-1",
        clock=clock,
        reload_broker=partial(_note, reloads),
    )
    created = await service.create_code("lane-1", "register")
    assert created.lane == "lane-1"
    assert created.expires_at == START + 900
    clock.now = START + 900
    with pytest.raises(EnrollError) as expired:
        await service.enroll(created.code, new_csr("x")[1], "10.0.0.9")
    assert expired.value.code == "CODE_EXPIRED"

    created = await service.create_code("lane-1", "register")
    results = await asyncio.gather(
        *(service.enroll(created.code, new_csr("x")[1], f"10.0.0.{i}") for i in range(4)),
        return_exceptions=True,
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r.code for r in results if isinstance(r, EnrollError)]
    assert len(granted) == 1
    assert refused == ["CODE_USED"] * 3
    assert reloads, "the broker must reload its rules after an enrollment"
    cert = x509.load_pem_x509_certificate(granted[0].certificate_pem.encode())
    assert pki.subject_cn(cert) == "lane-1"  # the hub names the device, not the CSR
    assert cert.not_valid_after_utc == dt.datetime.fromtimestamp(
        START + 900, dt.UTC
    ) + dt.timedelta(days=90)


async def test_a_new_code_cancels_the_previous_one(tmp_path: Path) -> None:
    service = Enrollment(make_identity(tmp_path), hub_id="hub-1", clock=Clock())
    first = await service.create_code("scale-1", "peripheral")
    await service.create_code("scale-1", "peripheral")
    with pytest.raises(EnrollError) as old:
        await service.enroll(first.code, new_csr("x")[1], "10.0.0.9")
    assert old.value.code == "CODE_INVALID"


def _csr(key: Any) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-hub")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_csr_checks() -> None:
    with pytest.raises(pki.CsrError) as garbage:
        pki.load_csr("-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----")
    assert garbage.value.code == "INVALID_CSR"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(pki.CsrError) as small:
        pki.load_csr(_csr(weak))
    assert small.value.code == "WEAK_KEY"
    good = pki.load_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    assert good.is_signature_valid


async def test_revocation_lists_the_certificate_and_closes_the_acl(tmp_path: Path) -> None:
    clock = Clock()
    kicked: list[str] = []

    async def kick(name: str) -> None:
        kicked.append(name)

    identity = make_identity(tmp_path)
    service = Enrollment(identity, hub_id="hub-1", clock=clock, kick=kick)
    created = await service.create_code("lane-1", "register")
    granted = await service.enroll(created.code, new_csr("x")[1], "10.0.0.9")
    serial = x509.load_pem_x509_certificate(granted.certificate_pem.encode()).serial_number
    assert "user lane-1" in identity.acl_path.read_text()
    assert await service.revoke("lane-1")
    assert kicked == ["lane-1"]
    crl = x509.load_pem_x509_crl(identity.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.is_signature_valid(identity.ca.public_key())  # type: ignore[arg-type]
    assert "user lane-1" not in identity.acl_path.read_text()
    assert not await service.revoke("lane-1")  # already revoked: nothing to do


async def test_maintenance_renews_the_server_certificate_and_the_crl_in_place(
    tmp_path: Path,
) -> None:
    clock = Clock()
    reloads: list[None] = []
    identity = make_identity(tmp_path)
    service = Enrollment(
        identity, hub_id="hub-1", clock=clock, reload_broker=partial(_note, reloads)
    )
    before = identity.server_certificate()
    await service.maintain()
    assert reloads == []  # nothing due
    clock.now = START + 340 * 86400  # 25 days before the server certificate ends
    await service.maintain()
    after = identity.server_certificate()
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    sans = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hub.store.local" in sans.get_values_for_type(x509.DNSName)
    crl = x509.load_pem_x509_crl(identity.crl_path.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > dt.datetime.fromtimestamp(clock.now, dt.UTC)
    assert reloads == [None]  # one reload, no restart


def test_attempt_limiter_window() -> None:
    limiter = AttemptLimiter(per_client=2, overall=3, window_s=60)
    for _ in range(2):
        limiter.check("a", 0)
        limiter.failed("a", 0)
    with pytest.raises(EnrollError):
        limiter.check("a", 1)
    limiter.check("b", 1)
    limiter.failed("b", 1)
    with pytest.raises(EnrollError):  # the whole hub's budget is spent too
        limiter.check("c", 2)
    limiter.check("a", 60.5)  # the window has passed
    assert limiter.retry_after(2) == pytest.approx(59)  # b's failure at 1 is the oldest


# -- the endpoint under fuzzed input --------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def fuzz_identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return make_identity(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"code": st.text(max_size=12), "csr": st.text(max_size=40)}).map(
            lambda v: json.dumps(v).encode()
        ),
    ),
    path=st.sampled_from(["/api/v1/enroll", "/api/v1/enroll/renew", "/api/v1/devices"]),
)
def test_enrollment_endpoints_answer_fuzz_with_structured_errors(
    fuzz_identity: Identity, body: bytes, path: str
) -> None:
    async def go() -> tuple[int, Any]:
        app = web.Application()
        service = Enrollment(
            fuzz_identity,
            hub_id="hub-1",
            limiter=AttemptLimiter(per_client=10**6, overall=10**6),
        )
        api.add_routes(app, service, 8884)
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, data=body)
            return response.status, await response.json()

    before = [d.name for d in fuzz_identity.devices()]
    status, answer = asyncio.run(go())
    if path == "/api/v1/devices" and status == 201:
        return  # a well-formed device request: a code, nothing else
    assert status in (400, 401, 403, 429), answer
    assert set(answer["error"]) == {"code", "message"}
    assert [d.name for d in fuzz_identity.devices()] == before  # nothing written


async def test_the_ca_key_can_live_in_a_systemd_credential(tmp_path: Path) -> None:
    identity = make_identity(tmp_path / "state")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (identity.root / "ca.key").rename(credentials / "edge-ca-key")
    with pytest.raises(IdentityError, match="edge-ca-key"):
        Identity(tmp_path / "state", identity.topics, env={})
    sealed = Identity(
        tmp_path / "state", identity.topics, env={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    service = Enrollment(sealed, hub_id="hub-1", clock=Clock())
    created = await service.create_code("lane-1", "register")
    granted = await service.enroll(created.code, new_csr("x")[1], "10.0.0.9")
    cert = x509.load_pem_x509_certificate(granted.certificate_pem.encode())
    assert cert.verify_directly_issued_by(sealed.ca) is None
    assert not (identity.root / "ca.key").exists()


def test_init_is_all_or_nothing(tmp_path: Path) -> None:
    """A failure half-way (here a malformed --ip, met after the CA was made) leaves no
    identity, and on --force the previous one untouched: the hub never sees a CA without
    its server certificate."""
    state = tmp_path / "state"

    def init(address: str, *, force: bool = False) -> Identity:
        return initialize(
            state, store_id="s1", hub_id="hub-1", names=[], addresses=[address],
            hq_public_key=None, now=dt.datetime.fromtimestamp(START, dt.UTC), force=force,
        )  # fmt: skip

    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        init("10.0.0.300")
    assert not is_initialized(state)
    assert not (state / "pki").exists()
    first = init("10.0.0.2")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        init("nonsense", force=True)
    assert Identity(state, first.topics, env={}).ca_fingerprint == first.ca_fingerprint
    second = init("10.0.0.3", force=True)
    assert second.ca_fingerprint != first.ca_fingerprint
    assert second.server_cert_path.is_file()
    assert sorted(p.name for p in state.iterdir()) == ["pki"]
