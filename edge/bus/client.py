"""The hub's one MQTT connection (MQTT 5, aiomqtt on paho-mqtt 2).

Theory of operation
-------------------
:meth:`Bus.run` is an explicit reconnect loop:

1. connect with a fixed client id, ``clean_start`` false and a session expiry, so the broker
   keeps the hub's subscriptions and queues QoS 1 requests while the hub restarts;
   TCP_NODELAY is set on the socket (with Nagle on, a QoS 1 round trip takes 44-88 ms on
   loopback instead of under 1 ms);
2. (re-)subscribe every route, publish the retained ``online`` presence (the last will, set at
   connect, publishes ``offline`` if the connection is lost);
3. read messages and dispatch each to its route as a task in the bus's TaskGroup, at most
   ``max_concurrent_requests`` at once (beyond that the reader waits: back-pressure);
4. on any connection error: mark disconnected, wait a jittered, capped, growing delay, go to 1.

:meth:`Bus.stop` is the graceful half: no new requests are taken (they get ``UNAVAILABLE``),
in-flight ones get ``grace`` seconds, the ``offline`` presence is published, then the caller
cancels :meth:`run`, which disconnects cleanly (so the will is not sent).

Only this package imports aiomqtt and paho; everything else sees :class:`Message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bus.envelope import HubStatus, encode
from edge.bus.errors import BusUnavailable
from edge.bus.topics import Topics
from edge.metrics import Metrics
from edge.settings import BusSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """An inbound MQTT message, free of paho types."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


MessageHandler = Callable[[Message], Awaitable[None]]


def quiet_late_writer_registration(loop: asyncio.AbstractEventLoop) -> None:
    """aiomqtt (2.5.1) asks the loop to watch its socket for writing with
    ``call_soon_threadsafe``. When the broker drops the connection first (a broker restart),
    paho has closed the socket by the time the loop gets to it: asyncio then logs "Exception in
    callback ... add_writer" with two tracebacks, though nothing is wrong (the reconnect loop
    takes over, and the disconnection is logged already). That case becomes one debug line;
    every other exception goes to the loop's default handler. A handler already set is kept."""
    if loop.get_exception_handler() is None:
        loop.set_exception_handler(_on_loop_exception)


def _on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    exc = context.get("exception")
    if (
        isinstance(exc, OSError)
        and exc.errno == errno.EBADF
        and "add_writer" in repr(context.get("handle"))
    ):
        log.debug("bus: a closed socket was not watched for writing (broker disconnected)")
        return
    loop.default_exception_handler(context)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Capped exponential backoff with equal jitter: in [d/2, d], d = min(high, low * 2**n)."""
    ceiling = min(high, low * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.random() * ceiling / 2


class Bus:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topics: Topics,
        hub_id: str,
        version: str,
        settings: BusSettings,
        metrics: Metrics,
        rng: random.Random | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self._credentials = credentials
        self._host = host
        self._port = port
        self._client_id = client_id
        self.topics = topics
        self._hub_id = hub_id
        self._version = version
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._routes: list[tuple[str, int, MessageHandler]] = []
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        self._inflight: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.connects = 0

    # -- configuration (before run) -------------------------------------------------------

    def route(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe ``handler`` to ``topic_filter``; it is re-subscribed on every connect."""
        self._routes.append((topic_filter, qos, handler))

    # -- state ------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def wait_stopping(self) -> None:
        await self._stopping.wait()

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._disconnected.wait()

    # -- I/O --------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish; for QoS 1, returns once the broker acknowledged it.

        Raises :class:`BusUnavailable` when not connected (now, or before the ack came).
        """
        client = self._client
        if client is None or not self._connected.is_set():
            raise BusUnavailable("not connected to the broker")
        properties = None
        if correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        try:
            await client.publish(
                topic,
                payload,
                qos=qos,
                retain=retain,
                properties=properties,
                timeout=timeout if timeout is not None else self._settings.request_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            raise BusUnavailable(f"publish to {topic} failed: {exc}") from exc
        _reraise_swallowed_cancel()

    async def run(self) -> None:
        """Connect, serve, reconnect; returns after :meth:`stop`, or runs until cancelled."""
        quiet_late_writer_registration(asyncio.get_running_loop())
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._connection_loop()
            finally:
                self._tg = None

    async def stop(self, grace: float) -> None:
        """Stop taking requests, let in-flight ones finish (bounded), publish ``offline``."""
        self._stopping.set()
        if self._inflight:
            log.info("bus: waiting up to %.1fs for %d requests", grace, len(self._inflight))
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            if pending:
                log.warning("bus: %d requests still running at shutdown", len(pending))
        with contextlib.suppress(BusUnavailable):
            await self.publish(
                self.topics.hub_status,
                self._status("offline", reason="shutdown"),
                retain=True,
                timeout=min(grace, 2.0),
            )

    # -- internals --------------------------------------------------------------------------

    def _status(self, state: str, reason: str | None = None) -> bytes:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        return encode(
            HubStatus(
                state="online" if state == "online" else "offline",
                store_id=self.topics.store_id,
                hub_id=self._hub_id,
                version=self._version,
                since=now,
                reason="shutdown" if reason == "shutdown" else None,
            )
        )

    def _make_client(self) -> aiomqtt.Client:
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = self._settings.session_expiry_s
        will = aiomqtt.Will(
            self.topics.hub_status,
            encode(
                HubStatus(
                    state="offline",
                    store_id=self.topics.store_id,
                    hub_id=self._hub_id,
                    version=self._version,
                    reason="lost",
                )
            ),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=self._client_id,
            username=self._credentials[0] if self._credentials else None,
            password=self._credentials[1] if self._credentials else None,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            keepalive=self._settings.keepalive_s,
            will=will,
            timeout=self._settings.request_timeout_s,
            max_inflight_messages=256,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # Replies in flight are normal under load: no warning per message.
        client.pending_calls_threshold = 10_000
        return client

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with self._make_client() as client:
                    self._client = client
                    attempt = 0
                    for topic_filter, qos, _ in self._routes:
                        await client.subscribe(topic_filter, qos=qos)
                    await client.publish(
                        self.topics.hub_status, self._status("online"), qos=1, retain=True
                    )
                    _reraise_swallowed_cancel()
                    self.connects += 1
                    self._metrics.bus_connects.inc()
                    self._metrics.bus_connected.set(1)
                    self._disconnected.clear()
                    self._connected.set()
                    log.info(
                        "bus: connected to %s:%d as %s", self._host, self._port, self._client_id
                    )
                    async for message in client.messages:
                        await self._dispatch(message)
            except aiomqtt.MqttError as exc:
                self._metrics.bus_connection_failures.inc()
                if not self._stopping.is_set():
                    level = logging.WARNING if self.connects else logging.INFO
                    log.log(level, "bus: broker %s:%d unavailable: %s", self._host, self._port, exc)
            finally:
                self._connected.clear()
                self._disconnected.set()
                self._client = None
                self._metrics.bus_connected.set(0)
            delay = backoff_delay(
                attempt, self._settings.reconnect_min_s, self._settings.reconnect_max_s, self._rng
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _dispatch(self, raw: aiomqtt.Message) -> None:
        handler = self._handler_for(raw.topic)
        if handler is None:
            log.debug("bus: no route for %s", raw.topic)
            return
        props = raw.properties
        payload = raw.payload if isinstance(raw.payload, bytes | bytearray) else b""
        message = Message(
            topic=str(raw.topic),
            payload=bytes(payload),
            qos=raw.qos,
            retain=raw.retain,
            response_topic=getattr(props, "ResponseTopic", None) if props else None,
            correlation_data=getattr(props, "CorrelationData", None) if props else None,
        )
        await self._slots.acquire()  # back-pressure: stop reading while saturated
        assert self._tg is not None
        task = self._tg.create_task(self._handle(handler, message), name=f"msg:{message.topic}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, handler: MessageHandler, message: Message) -> None:
        self._metrics.requests_inflight.inc()
        try:
            await handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A handler bug must never take the bus down; the router already maps errors to
            # replies, so reaching here means the handler itself is broken.
            log.exception("bus: handler for %s failed", message.topic)
        finally:
            self._metrics.requests_inflight.dec()
            self._slots.release()

    def _handler_for(self, topic: aiomqtt.Topic) -> MessageHandler | None:
        for topic_filter, _, handler in self._routes:
            if topic.matches(topic_filter):
                return handler
        return None


def _reraise_swallowed_cancel() -> None:
    """Re-raise a cancellation that aiomqtt's ``asyncio.wait_for`` swallowed.

    On Python 3.11, ``wait_for`` drops a cancellation that arrives as its inner future
    completes (CPython gh-86296, fixed in 3.12). A publish acknowledged at the moment its task
    is cancelled then returns normally and the task runs on, so a TaskGroup or a shutdown
    waiting for it hangs (seen: the catalogue's announcer at test teardown). ``cancelling()``
    still counts the request: honour it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
