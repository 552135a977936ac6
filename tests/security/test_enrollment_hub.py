"""Enrollment, mutual TLS, ACLs, revocation and renewal against a real hub and its real
managed Mosquitto (issue 7, "Done when").

Denials are proven with a sentinel: the forbidden message is published first and an allowed one
after it on the same connection; MQTT keeps one client's order, so once the sentinel arrives the
forbidden message would have arrived before it, had the broker let it through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.app import Hub
from edge.bus.topics import Topics
from edge.security.identity import HUB_USER
from edge.sim.enroll_client import DeviceCredentials, EnrollFailed, enroll, renew
from tests.conftest import _free_port, hub_settings, run_hub
from tests.security import init_hub_identity

T = Topics("s1")


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    init_hub_identity(tmp_path / "state")
    settings = hub_settings(
        tmp_path,
        broker_port=_free_port(),
        mode="managed",
        security__https_port=_free_port(),
        security__attempts_per_client=3,
    )
    async with run_hub(settings) as running:
        yield running


async def add_device(hub: Hub, name: str, role: str = "register") -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{hub.http.url}/api/v1/devices", json={"name": name, "role": role}) as r,
    ):
        assert r.status == 201, await r.text()
        return str((await r.json())["code"])


async def enrolled(hub: Hub, name: str, role: str = "register") -> DeviceCredentials:
    code = await add_device(hub, name, role)
    assert hub.hub_identity is not None
    return await enroll(
        hub.http.tls_url, code, fingerprint=hub.hub_identity.ca_fingerprint, name=name
    )


def lan_client(hub: Hub, creds: DeviceCredentials | None, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        hub.settings.broker.lan_port,
        identifier=kwargs.pop("identifier", "whatever-the-device-says"),
        tls_context=creds.ssl_context() if creds else kwargs.pop("tls_context", None),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def observer(hub: Hub, topic: str = "#") -> AsyncIterator[aiomqtt.Client]:
    """The hub's own loopback account, watching what the broker lets through."""
    assert hub.credentials is not None
    async with aiomqtt.Client(
        "127.0.0.1",
        hub.settings.broker.port,
        identifier=f"observer-{_free_port()}",
        username=hub.credentials[0],
        password=hub.credentials[1],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def received_until(client: aiomqtt.Client, sentinel: bytes) -> list[tuple[str, bytes]]:
    seen: list[tuple[str, bytes]] = []
    async with asyncio.timeout(5):
        async for message in client.messages:
            payload = bytes(message.payload)  # type: ignore[arg-type]
            seen.append((str(message.topic), payload))
            if payload == sentinel:
                return seen
    raise AssertionError("unreachable")


async def until_disconnected(client: aiomqtt.Client) -> None:
    async with asyncio.timeout(5):
        async for _ in client.messages:
            pass


async def test_enrollment_end_to_end_code_csr_certificate_mtls(hub: Hub) -> None:
    creds = await enrolled(hub, "lane-1")
    assert (creds.name, creds.role, creds.lane) == ("lane-1", "register", "lane-1")
    assert creds.broker_port == hub.settings.broker.lan_port
    # The device asks the hub itself over mutual TLS and gets its answer on its own reply topic.
    async with lan_client(hub, creds) as device:
        await device.subscribe(T.lane_reply("lane-1"), qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = T.lane_reply("lane-1")
        props.CorrelationData = b"c-1"
        await device.publish(
            T.hub_rpc("ping"), b'{"v": 1, "id": "r-1", "data": {}}', qos=1, properties=props
        )
        async with asyncio.timeout(5):
            message = await anext(aiter(device.messages))
        assert str(message.topic) == T.lane_reply("lane-1")
        assert b'"ok"' in bytes(message.payload)  # type: ignore[arg-type]


async def test_wrong_reused_and_guessed_codes_are_refused(hub: Hub) -> None:
    assert hub.hub_identity is not None
    fp = hub.hub_identity.ca_fingerprint
    code = await add_device(hub, "lane-2")
    with pytest.raises(EnrollFailed) as wrong:
        await enroll(hub.http.tls_url, "0000-0000", fingerprint=fp)
    assert (wrong.value.status, wrong.value.code) == (403, "CODE_INVALID")
    # Typed in lower case with the look-alike letter O for zero: still the same code.
    await enroll(hub.http.tls_url, code.lower().replace("0", "o"), fingerprint=fp)
    with pytest.raises(EnrollFailed) as reused:
        await enroll(hub.http.tls_url, code, fingerprint=fp)
    assert reused.value.code == "CODE_USED"
    # attempts_per_client = 3: one wrong code so far, two more, then even a good code waits.
    for _ in range(2):
        with pytest.raises(EnrollFailed):
            await enroll(hub.http.tls_url, "ZZZZ-ZZZZ", fingerprint=fp)
    good = await add_device(hub, "lane-3")
    with pytest.raises(EnrollFailed) as limited:
        await enroll(hub.http.tls_url, good, fingerprint=fp)
    assert (limited.value.status, limited.value.code) == (429, "TOO_MANY_ATTEMPTS")


async def test_a_device_checks_the_hub_against_the_advertised_fingerprint(hub: Hub) -> None:
    code = await add_device(hub, "lane-1")
    with pytest.raises(EnrollFailed) as mismatch:
        await enroll(hub.http.tls_url, code, fingerprint="sha256:" + "0" * 64)
    assert mismatch.value.code == "CA_MISMATCH"


async def test_nothing_unauthenticated_reaches_the_broker(hub: Hub) -> None:
    no_cert = ssl.create_default_context()
    no_cert.check_hostname = False
    no_cert.verify_mode = ssl.CERT_NONE
    with pytest.raises(aiomqtt.MqttError):
        async with lan_client(hub, None, tls_context=no_cert):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with lan_client(hub, None):  # plain TCP on the TLS listener
            pass
    with pytest.raises(aiomqtt.MqttError):  # loopback without the hub's password
        async with aiomqtt.Client("127.0.0.1", hub.settings.broker.port, identifier="anon"):
            pass


async def test_acl_matrix_the_broker_denies_every_cross_lane_publish_and_subscribe(
    hub: Hub,
) -> None:
    lane1 = await enrolled(hub, "lane-1")
    await enrolled(hub, "lane-2")
    printer = await enrolled(hub, "printer-1", "peripheral")
    forbidden_publishes = [
        (lane1, T.lane_rpc("lane-2", "txn.submit")),
        (lane1, T.lane_status("lane-2")),
        (lane1, T.device_status("printer-1")),
        (lane1, T.hub_status),
        (lane1, T.journal_resend),  # no register may ask the others for their journals
        (lane1, "store/other-store/lane/lane-1/rpc/txn.submit"),
        (printer, T.lane_rpc("lane-1", "txn.submit")),
        (printer, T.device_status("printer-2")),
    ]
    allowed = {lane1.name: T.lane_rpc("lane-1", "ping"), printer.name: T.device_status("printer-1")}
    async with observer(hub) as hub_side:
        for creds, topic in forbidden_publishes:
            async with lan_client(hub, creds) as device:
                await device.publish(topic, b"forbidden", qos=1)
                await device.publish(allowed[creds.name], b"sentinel", qos=1)
            seen = await received_until(hub_side, b"sentinel")
            assert (topic, b"forbidden") not in seen, f"{creds.name} could publish on {topic}"
            assert (allowed[creds.name], b"sentinel") in seen

    # Reading: lane-1 subscribes to lane-2's replies and to everything; it gets only its own.
    async with lan_client(hub, lane1) as device, observer(hub) as hub_side:
        for pattern in (T.lane_reply("lane-2"), "#", f"{T.root}/lane/+/reply"):
            await device.subscribe(pattern, qos=1)
        await device.subscribe(T.lane_reply("lane-1"), qos=1)
        await device.subscribe(T.journal_resend, qos=1)
        await hub_side.publish(T.lane_reply("lane-2"), b"not yours", qos=1)
        await hub_side.publish(T.lane_rpc("lane-2", "txn.submit"), b"not yours", qos=1)
        await hub_side.publish(T.journal_resend, b"the hub asks", qos=1)
        await hub_side.publish(T.lane_reply("lane-1"), b"sentinel", qos=1)
        seen = await received_until(device, b"sentinel")
        assert [p for _, p in seen if p == b"not yours"] == []
        assert (T.journal_resend, b"the hub asks") in seen, "every register reads the request"


async def item_status(hub: Hub, creds: DeviceCredentials) -> int:
    """A price check over the LAN's HTTPS listener with the device's certificate."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http.tls_url}/api/v1/catalogue/items/123", ssl=creds.ssl_context()) as r,
    ):
        return r.status


async def test_devices_enrolled_together_may_each_publish_at_once(hub: Hub) -> None:
    """Enrollment answers only once the broker has taken the new rules up: three registers
    enrolled at the same moment each publish their presence straight away, and every one
    gets through. (Mosquitto drops a SIGHUP that arrives while it is reloading: without the
    confirmed, one-at-a-time reload, the last device's rules could stay unloaded and every
    message from it be denied.)"""
    names = ["lane-1", "lane-2", "lane-3"]
    async with observer(hub, T.lane_status_filter()) as watch:
        everyone = await asyncio.gather(*(enrolled(hub, name) for name in names))
        for creds in everyone:
            async with lan_client(hub, creds, identifier=creds.name) as device:
                await device.publish(T.lane_status(creds.name), b'{"v": 1}', qos=1)
        seen: set[str] = set()
        async with asyncio.timeout(5):
            async for message in watch.messages:
                seen.add(str(message.topic))
                if len(seen) == len(names):
                    break
    assert seen == {T.lane_status(name) for name in names}


async def test_a_revoked_device_is_cut_off_at_once(hub: Hub) -> None:
    creds = await enrolled(hub, "lane-1")
    assert await item_status(hub, creds) not in (401, 403)  # valid (and now remembered)
    async with lan_client(hub, creds) as device:
        await device.subscribe(T.lane_reply("lane-1"), qos=1)
        async with aiohttp.ClientSession() as session:
            url = f"{hub.http.url}/api/v1/devices/lane-1/revoke"
            async with session.post(url) as r:
                assert r.status == 200
        # Its live connection is closed by the broker, not left to run until it reconnects.
        with pytest.raises(aiomqtt.MqttError):
            await until_disconnected(device)
    with pytest.raises(aiomqtt.MqttError):  # and the CRL refuses it at the handshake
        async with lan_client(hub, creds):
            pass
    # Its renewal and its price checks are refused too.
    with pytest.raises(EnrollFailed):
        await renew(hub.http.tls_url, creds)
    assert await item_status(hub, creds) == 403
    assert hub.hub_identity is not None
    assert hub.hub_identity.device("lane-1").state == "revoked"  # type: ignore[union-attr]


async def test_renewal_keeps_the_connection_and_the_new_certificate_works(hub: Hub) -> None:
    creds = await enrolled(hub, "lane-1")
    async with observer(hub, f"{T.root}/lane/lane-1/rpc/+") as hub_side:
        async with lan_client(hub, creds) as device:
            renewed = await renew(hub.http.tls_url, creds)
            assert renewed.certificate_pem != creds.certificate_pem
            # The same connection still carries traffic after the renewal and broker reload.
            await device.publish(T.lane_rpc("lane-1", "ping"), b"after-renewal", qos=1)
            seen = await received_until(hub_side, b"after-renewal")
            assert seen[-1][1] == b"after-renewal"
        async with lan_client(hub, renewed) as device:
            await device.publish(T.lane_rpc("lane-1", "ping"), b"new-cert", qos=1)
            await received_until(hub_side, b"new-cert")
    # Renewal needs the current certificate: without one, refused.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{hub.http.tls_url}/api/v1/enroll/renew", json={"csr": "x"}, ssl=False) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "CERTIFICATE_REQUIRED"


async def test_the_lan_listener_serves_no_technician_api(hub: Hub) -> None:
    creds = await enrolled(hub, "lane-1")
    async with aiohttp.ClientSession() as session:
        for path in ("/api/v1/devices", "/api/v1/outbox", "/metrics"):
            async with session.get(f"{hub.http.tls_url}{path}", ssl=creds.ssl_context()) as r:
                assert r.status == 404, path
        # The register feed needs a device certificate.
        async with session.get(f"{hub.http.tls_url}/api/v1/catalogue/feed", ssl=False) as r:
            assert r.status == 401
        async with session.get(
            f"{hub.http.tls_url}/api/v1/catalogue/items/123", ssl=creds.ssl_context()
        ) as r:
            assert r.status not in (401, 403)


async def test_the_hub_account_is_separate_from_devices(hub: Hub) -> None:
    assert hub.credentials is not None
    assert hub.credentials[0] == HUB_USER
    # A device name that would impersonate the hub account is refused at code creation.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http.url}/api/v1/devices", json={"name": HUB_USER, "role": "register"}
        ) as r,
    ):
        assert r.status == 400
