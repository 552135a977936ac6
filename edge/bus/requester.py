"""A small MQTT 5 request/response client: the register's side of the protocol.

Used by the register simulator, the benchmarks and the tests, and a reference for register
vendors (docs/protocol.md shows the same steps). One connection, one reply topic; each request
gets fresh correlation data and a future resolved by the reply carrying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bus.client import Message
from edge.bus.envelope import ENVELOPE_VERSION, Reply, encode
from edge.bus.errors import BusUnavailable

_reply_decoder = msgspec.json.Decoder(Reply)


class Requester:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        reply_topic: str,
        will: tuple[str, bytes] | None = None,
        keepalive: int = 15,
        tls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.reply_topic = reply_topic
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
            tls_context=tls,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=keepalive,
            max_inflight_messages=256,
            will=aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will else None,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # Many requests in flight is normal for a busy register or a load test.
        self._client.pending_calls_threshold = 1000
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._queues: list[tuple[str, asyncio.Queue[Message]]] = []
        self._ids = itertools.count(1)
        self._prefix = os.urandom(6).hex()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._client.__aenter__()
            await self._client.subscribe(self.reply_topic, qos=1)
        except aiomqtt.MqttError as exc:
            raise BusUnavailable(f"cannot reach the broker: {exc}") from exc
        self._reader = asyncio.create_task(self._read(), name=f"requester:{self.client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    def next_request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def request(
        self, topic: str, data: Any = None, *, timeout: float = 5.0, request_id: str | None = None
    ) -> Reply:
        """Send ``data`` in a version-1 envelope and wait for the decoded reply."""
        envelope: dict[str, Any] = {
            "v": ENVELOPE_VERSION,
            "id": request_id or self.next_request_id(),
        }
        if data is not None:
            envelope["data"] = data
        return _reply_decoder.decode(
            await self.request_raw(topic, encode(envelope), timeout=timeout)
        )

    async def request_raw(
        self,
        topic: str,
        payload: bytes,
        *,
        timeout: float = 5.0,
        response_topic: str | None = None,
    ) -> bytes:
        """Publish ``payload`` as a request and return the raw reply payload."""
        reply = await self.send(topic, payload, response_topic=response_topic)
        try:
            async with asyncio.timeout(timeout):
                return await reply
        finally:
            reply.cancel()

    async def send(
        self, topic: str, payload: bytes, *, response_topic: str | None = None
    ) -> asyncio.Future[bytes]:
        """Publish a request (returns once the broker acknowledged it, QoS 1) and return the
        future of its raw reply. Cancel the future to stop waiting."""
        correlation = f"{self._prefix}:{next(self._ids)}".encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        future.add_done_callback(lambda _: self._pending.pop(correlation, None))
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = response_topic or self.reply_topic
        props.CorrelationData = correlation
        try:
            await self._client.publish(topic, payload, qos=1, properties=props)
        except aiomqtt.MqttError as exc:
            future.cancel()
            raise BusUnavailable(f"publish failed: {exc}") from exc
        except BaseException:
            future.cancel()
            raise
        return future

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    @contextlib.asynccontextmanager
    async def subscription(self, topic_filter: str) -> AsyncIterator[asyncio.Queue[Message]]:
        """Messages on ``topic_filter`` (retained ones first) while the block runs."""
        queue: asyncio.Queue[Message] = asyncio.Queue()
        entry = (topic_filter, queue)
        self._queues.append(entry)
        try:
            await self._client.subscribe(topic_filter, qos=1)
            yield queue
        finally:
            self._queues.remove(entry)
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.unsubscribe(topic_filter)

    async def _read(self) -> None:
        async for raw in self._client.messages:
            payload = raw.payload if isinstance(raw.payload, bytes | bytearray) else b""
            props = raw.properties
            correlation = getattr(props, "CorrelationData", None) if props else None
            if raw.topic.matches(self.reply_topic) and correlation is not None:
                future = self._pending.get(bytes(correlation))
                if future is not None and not future.done():
                    future.set_result(bytes(payload))
                continue
            message = Message(
                topic=str(raw.topic), payload=bytes(payload), qos=raw.qos, retain=raw.retain
            )
            for topic_filter, queue in self._queues:
                if raw.topic.matches(topic_filter):
                    queue.put_nowait(message)
