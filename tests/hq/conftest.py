"""Fixtures of the HQ link tests: a second real Mosquitto (the "cloud"), HQ's side of it, a
local Bus on the store's broker, and a link wired to them.

The local broker is the shared ``broker`` fixture; the cloud broker is another Mosquitto on
its own ephemeral loopback port. Nothing is mocked: the link talks MQTT to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bus import Bus, Topics
from edge.hq.link import HqLink, read_public_key
from edge.hq.settings import HqSettings
from edge.hq.telemetry import Snapshot
from edge.metrics import Metrics
from edge.settings import BusSettings
from tests.conftest import MosquittoProcess


@pytest.fixture
async def cloud(
    tmp_path: Path, mosquitto_bin: str, free_port: Callable[[], int]
) -> AsyncIterator[MosquittoProcess]:
    """HQ's cloud broker: a second Mosquitto, plain TCP on loopback."""
    proc = MosquittoProcess(mosquitto_bin, tmp_path / "cloud", free_port())
    await proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def hq_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def pinned_key_path(tmp_path: Path, hq_key: Ed25519PrivateKey) -> Path:
    """HQ's public key where `edge init` pins it, as PEM."""
    path = tmp_path / "state" / "pki" / "hq-signing.pub"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        hq_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


class HqSide:
    """HQ on the cloud broker: publishes documents, collects acks and telemetry."""

    def __init__(self, client: aiomqtt.Client, store: str = "s1") -> None:
        self.client = client
        self.store = store
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.telemetry: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.status: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def topic(self, kind: str, scope: str | None = None) -> str:
        return f"hq/{scope or f'store/{self.store}'}/{kind}"

    async def send(
        self, kind: str, payload: bytes, *, scope: str | None = None, retain: bool = False
    ) -> None:
        await self.client.publish(self.topic(kind, scope), payload, qos=1, retain=retain)

    async def ack(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.acks.get()

    async def stages(self, count: int, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        """The next ``count`` acks as (stage, version, code)."""
        got = []
        for _ in range(count):
            ack = await self.ack(timeout)
            got.append((ack["stage"], ack.get("version"), ack.get("code")))
        return got

    async def next_telemetry(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.telemetry.get()

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            target = {
                "ack": self.acks,
                "telemetry": self.telemetry,
                "status": self.status,
            }[str(message.topic).rsplit("/", 1)[1]]
            await target.put(json.loads(payload))


@contextlib.asynccontextmanager
async def hq_side(cloud: MosquittoProcess, store: str = "s1") -> AsyncIterator[HqSide]:
    async with aiomqtt.Client(
        cloud.host,
        cloud.port,
        identifier=f"hq-{cloud.port}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        side = HqSide(client, store)
        for kind in ("ack", "telemetry", "status"):
            await client.subscribe(side.topic(kind), qos=1)
        pump = asyncio.create_task(side.pump())
        try:
            yield side
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


@contextlib.asynccontextmanager
async def local_bus(port: int, store: str = "s1") -> AsyncIterator[Bus]:
    """The hub's real Bus on the store's broker, connected."""
    bus = Bus(
        host="127.0.0.1",
        port=port,
        client_id=f"edge-hub-{store}-{port}",
        topics=Topics(store),
        hub_id="hub-test",
        version="test",
        settings=BusSettings(reconnect_min_s=0.02, reconnect_max_s=0.2),
        metrics=Metrics(),
    )
    task = asyncio.create_task(bus.run())
    try:
        await bus.wait_connected(10)
        yield bus
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def link_settings(cloud: MosquittoProcess, **overrides: Any) -> HqSettings:
    raw: dict[str, Any] = {
        "enabled": True,
        "host": cloud.host,
        "port": cloud.port,
        "tls": False,
        "groups": ["north"],
        "telemetry_interval_s": 3600.0,
        "telemetry_debounce_s": 0.1,
        "telemetry_poll_s": 0.02,
        "apply_ready_timeout_s": 1.0,
        "ready_poll_s": 0.01,
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.2,
        "timeout_s": 5.0,
    }
    raw.update(overrides)
    import msgspec

    return msgspec.convert(raw, HqSettings)


def snapshot(**changes: Any) -> Snapshot:
    base: dict[str, Any] = {
        "wan": "up",
        "outbox_depth": 3,
        "outbox_oldest_age_s": 1.25,
        "parked": 1,
        "lanes": {"online": 2, "offline": 1},
        "devices": {"online": 1},
        "catalogue_version": 42,
        "free_disk_bytes": 10_000_000_000,
        "hub_version": "0.1.0",
    }
    base.update(changes)
    return Snapshot(**base)


@contextlib.asynccontextmanager
async def running_link(
    settings: HqSettings,
    state_dir: Path,
    pinned: Path,
    *,
    connect_timeout: float = 10.0,
    **kwargs: Any,
) -> AsyncIterator[HqLink]:
    """An HqLink running until the block ends, connected before it starts."""
    kwargs.setdefault("ready", lambda: True)
    current = kwargs.pop("current", None) or {"snapshot": snapshot()}

    async def take() -> Snapshot:
        result: Snapshot = current["snapshot"]
        return result

    kwargs.setdefault("snapshot", take)
    link = HqLink(
        settings,
        store_id="s1",
        hub_id="hub-test",
        version="0.1.0",
        state_path=state_dir / "hq-state.json",
        public_key=read_public_key(pinned),
        **kwargs,
    )
    task = asyncio.create_task(link.run(), name="hq-link")
    connected = asyncio.ensure_future(link.wait_connected(connect_timeout))
    try:
        done, _ = await asyncio.wait([task, connected], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        connected.result()  # TimeoutError when the link did not connect in time
        yield link
    finally:
        connected.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
