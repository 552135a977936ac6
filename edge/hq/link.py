"""The HQ link: the hub's second MQTT connection, to HQ's cloud broker.

Theory of operation
-------------------
:meth:`HqLink.run`:

1. read the state file, and once the hub is ready apply the config in force again (a restart
   must not lose HQ's settings); no message is handled before this is done;
2. connect (MQTT 5, TLS with the hub's client certificate, a stable client id, ``clean_start``
   false and a session expiry: the cloud broker queues QoS 1 documents while the hub is away;
   TCP_NODELAY; a retained last will ``offline`` on the status topic);
3. subscribe to the config and command topics (QoS 1), publish ``online``, flush the
   acknowledgements that could not be sent while disconnected, publish telemetry;
4. hand each message to :class:`edge.hq.handler.HqHandler`, one at a time (it never raises);
5. on a connection error, wait a jittered, capped, growing delay and go to 2.

Telemetry runs beside it (:mod:`edge.hq.telemetry`): the snapshot callable is sampled every
``telemetry_poll_s`` while connected, and a message goes out when the policy says so.

Why this module imports aiomqtt (the rest of the hub reaches MQTT through :mod:`edge.bus`):
:class:`edge.bus.Bus` is the *local* broker's client, with the store's presence, RPC routes and
its will on store topics, and no TLS. The cloud connection shares its reconnect policy
(:func:`edge.bus.client.backoff_delay`) but not its topics or its security.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bus.client import backoff_delay
from edge.hq.apply import Applier, AttributeApplier
from edge.hq.config import Ack, load_public_key
from edge.hq.errors import HqKeyError
from edge.hq.handler import CommandHandler, HqHandler
from edge.hq.history import by_document
from edge.hq.settings import HqSettings
from edge.hq.state import StateFile
from edge.hq.telemetry import Reason, Snapshot, TelemetryPolicy, telemetry_message
from edge.hq.topics import HqTopics

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Awaitable[Snapshot]]
MAX_PENDING_ACKS = 1000


class LinkStatus(msgspec.Struct, kw_only=True):
    """Retained on ``{prefix}/store/{store}/status``; the last will publishes ``offline``."""

    state: Literal["online", "offline"]
    store_id: str
    hub_id: str
    version: str


def read_public_key(path: Path) -> Ed25519PublicKey:
    """HQ's pinned key from its file (raises :class:`HqKeyError`, naming the file only)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HqKeyError(f"{path}: cannot read HQ's public key: {exc.strerror}") from exc
    try:
        return load_public_key(data)
    except HqKeyError as exc:
        raise HqKeyError(f"{path}: {exc}") from None


class HqLink:
    def __init__(
        self,
        settings: HqSettings,
        *,
        store_id: str,
        hub_id: str,
        version: str,
        state_path: Path,
        public_key: Ed25519PublicKey,
        snapshot: SnapshotSource,
        ready: Callable[[], bool],
        appliers: Sequence[Applier] = (),
        commands: Mapping[str, CommandHandler] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._store_id = store_id
        self._hub_id = hub_id
        self._version = version
        self.topics = HqTopics(settings.topic_prefix, store_id, settings.groups)
        self._snapshot = snapshot
        self._clock = clock
        self._rng = rng or random.Random()
        self.policy = TelemetryPolicy(settings.telemetry_interval_s, settings.telemetry_debounce_s)
        telemetry = AttributeApplier(
            "telemetry.interval_s", self.policy, "interval_s", minimum=1.0, maximum=86400.0
        )
        all_commands: dict[str, CommandHandler] = {"telemetry.now": self._telemetry_now}
        all_commands.update(commands or {})
        self.handler = HqHandler(
            settings,
            store_id=store_id,
            hub_id=hub_id,
            public_key=public_key,
            state=StateFile(state_path),
            appliers=[telemetry, *appliers],
            commands=all_commands,
            ready=ready,
            send=self._send_ack,
            clock=clock,
        )
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending_acks: collections.deque[bytes] = collections.deque(maxlen=MAX_PENDING_ACKS)
        self.history: collections.deque[Ack] = collections.deque(maxlen=MAX_PENDING_ACKS)
        """Every acknowledgement sent (the newest 1000): the console's and CLI's history."""
        self._seq = 0
        self.connects = 0
        self.acks_dropped = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    def status(self) -> dict[str, Any]:
        """The link, the config in force and what HQ sent lately (``GET /api/v1/hq``)."""
        state = self.handler.state
        applied = msgspec.to_builtins(state.applied) if state.applied is not None else None
        return {
            "connected": self.is_connected,
            "broker": f"{self._settings.host}:{self._settings.port}",
            "applied_version": state.applied_version,
            "applied": applied,
            "last_version": {
                "config": state.last_version.config,
                "command": state.last_version.command,
            },
            "acks_waiting": len(self._pending_acks),
            "documents": by_document(self.history),
        }

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Steps 1-5 of the module docstring; runs until cancelled."""
        await self.handler.open()
        await self.handler.restore()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._telemetry_loop(), name="hq-telemetry")
            await self._connection_loop()

    async def _connection_loop(self) -> None:
        s = self._settings
        attempt = 0
        while True:
            try:
                tls = await asyncio.to_thread(self._tls_context) if s.tls else None
                async with self._make_client(tls) as client:
                    self._client = client
                    attempt = 0
                    for kind in ("config", "command"):
                        for topic in self.topics.inbound(kind):
                            await client.subscribe(topic, qos=1)
                    await self._publish(self.topics.status, self._status("online"), retain=True)
                    self.connects += 1
                    self.policy.reset()
                    self._connected.set()
                    log.info("hq: connected to %s:%d", s.host, s.port)
                    await self._flush_acks()
                    async for message in client.messages:
                        await self._on_message(message)
            except aiomqtt.MqttError as exc:
                level = logging.WARNING if self.connects else logging.INFO
                log.log(level, "hq: cloud broker %s:%d unavailable: %s", s.host, s.port, exc)
            except (OSError, ssl.SSLError) as exc:  # certificate files, TLS set-up
                log.error("hq: cannot set up TLS for %s:%d: %s", s.host, s.port, exc)
            finally:
                self._connected.clear()
                self._client = None
            delay = backoff_delay(attempt, s.reconnect_min_s, s.reconnect_max_s, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    def _tls_context(self) -> ssl.SSLContext:
        """Blocking (reads the certificate files): runs in a worker thread, at each connect,
        so a renewed certificate is picked up by the next connection."""
        s = self._settings
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.cert_file:
            context.load_cert_chain(s.cert_file, s.key_file or None)
        return context

    def _make_client(self, tls: ssl.SSLContext | None) -> aiomqtt.Client:
        s = self._settings
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = s.session_expiry_s
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.effective_client_id(self._store_id),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            keepalive=s.keepalive_s,
            will=aiomqtt.Will(self.topics.status, self._status("offline"), qos=1, retain=True),
            timeout=s.timeout_s,
            tls_context=tls,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        kind = self.topics.kind_of(topic)
        if kind is None:
            log.info("hq: message on unexpected topic %s dropped", topic)
            return
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        await self.handler.handle(kind, bytes(payload), retain=message.retain)

    # -- publishing --------------------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1; returns once the cloud broker acknowledged. Raises aiomqtt.MqttError."""
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected to the cloud broker")
        await client.publish(topic, payload, qos=1, retain=retain, timeout=self._settings.timeout_s)
        _reraise_swallowed_cancel()

    async def _send_ack(self, ack: Ack) -> None:
        """Publish an acknowledgement after any still waiting, or keep it for the next
        connection (bounded: the oldest is dropped first, counted in ``acks_dropped``)."""
        self.history.append(ack)
        if len(self._pending_acks) == self._pending_acks.maxlen:
            self.acks_dropped += 1
        self._pending_acks.append(msgspec.json.encode(ack))
        if self._client is not None:
            try:
                await self._flush_acks()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "hq: %d acks kept for the next connection: %s", len(self._pending_acks), exc
                )

    async def _flush_acks(self) -> None:
        while self._pending_acks:
            await self._publish(self.topics.ack, self._pending_acks[0])
            self._pending_acks.popleft()

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return msgspec.json.encode(
            LinkStatus(
                state=state, store_id=self._store_id, hub_id=self._hub_id, version=self._version
            )
        )

    # -- telemetry ---------------------------------------------------------------------------

    async def _telemetry_loop(self) -> None:
        while True:
            await self._connected.wait()
            try:
                snapshot = await self._snapshot()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hq: telemetry snapshot failed")
            else:
                reason = self.policy.due(snapshot, time.monotonic())
                if reason is not None:
                    with contextlib.suppress(aiomqtt.MqttError):
                        await self.publish_telemetry(snapshot, reason)
            await asyncio.sleep(self._settings.telemetry_poll_s)

    async def publish_telemetry(self, snapshot: Snapshot, reason: Reason) -> int:
        """Publish one telemetry message now; returns its ``seq``. Raises aiomqtt.MqttError
        when not connected."""
        self._seq += 1
        seq = self._seq
        message = telemetry_message(
            snapshot,
            store_id=self._store_id,
            hub_id=self._hub_id,
            seq=seq,
            reason=reason,
            now=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
        )
        await self._publish(self.topics.telemetry, msgspec.json.encode(message))
        self.policy.published(snapshot, time.monotonic())
        return seq

    async def _telemetry_now(self, args: dict[str, Any]) -> dict[str, Any]:
        """Command ``telemetry.now``: publish telemetry at once."""
        return {"seq": await self.publish_telemetry(await self._snapshot(), "command")}


def _reraise_swallowed_cancel() -> None:
    """As in :mod:`edge.bus.client`: aiomqtt's ``asyncio.wait_for`` on 3.11 can swallow a
    cancellation that arrives as the PUBACK does (CPython gh-86296); honour it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
