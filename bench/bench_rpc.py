"""Request/response through the hub against a bare echo through the same broker.

Baseline: a minimal MQTT 5 echo client (aiomqtt) that answers on the response topic with the
correlation data, nothing else. Measured: the hub's ``hub/rpc/ping`` (envelope decode, routing,
reply encode, metrics). Both run in this process and event loop, through the same Mosquitto, and
are driven by the same requester, one request at a time, so the difference is the hub's own
cost. Target (issue 2): the hub adds under 0.5 ms at p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Figure, Report, mosquitto, percentile
from edge.app import Hub
from edge.bus import Requester, Topics
from edge.settings import settings_from_dict

WARMUP = 200
SAMPLES = 3000


@contextlib.asynccontextmanager
async def bare_echo(port: int, topic: str) -> AsyncIterator[None]:
    async def serve(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]
            await client.publish(
                message.properties.ResponseTopic,  # type: ignore[union-attr]
                message.payload,
                qos=1,
                properties=props,
            )

    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(serve(client))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _latencies(requester: Requester, topic: str, payload: bytes, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await requester.request_raw(topic, payload)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def run(report: Report) -> None:
    print("rpc: hub request/response vs bare echo", flush=True)
    topics = Topics("bench")
    async with mosquitto() as port:
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_from_dict(
                {
                    "store_id": "bench",
                    "state_dir": str(Path(tmp) / "state"),
                    "broker": {"mode": "external", "port": port},
                    "http": {"port": 0},
                    "log": {"level": "WARNING"},
                },
                "bench",
            )
            hub = Hub(settings)
            hub_task = asyncio.create_task(hub.run(handle_signals=False))
            await asyncio.wait_for(hub.ready.wait(), 20)
            try:
                echo_topic = "bench/echo"
                payload = b'{"v":1,"id":"bench","data":{"n":1}}'
                async with (
                    bare_echo(port, echo_topic),
                    Requester(
                        "127.0.0.1", port, client_id="bench-lane", reply_topic="bench/reply"
                    ) as lane,
                ):
                    await _latencies(lane, echo_topic, payload, WARMUP)
                    await _latencies(lane, topics.hub_rpc("ping"), payload, WARMUP)
                    # Interleave rounds so drift (CPU frequency, GC) hits both alike.
                    base: list[float] = []
                    hub_s: list[float] = []
                    for _ in range(6):
                        base += await _latencies(lane, echo_topic, payload, SAMPLES // 6)
                        hub_s += await _latencies(
                            lane, topics.hub_rpc("ping"), payload, SAMPLES // 6
                        )
            finally:
                hub.request_stop()
                await hub_task
    b50, b99 = percentile(base, 50), percentile(base, 99)
    h50, h99 = percentile(hub_s, 50), percentile(hub_s, 99)
    added = h50 - b50
    report.add(
        Figure(
            "rpc p50 (hub ping)",
            h50,
            "ms",
            "bare echo p50",
            b50,
            "hub adds < 0.5 ms",
            added < 0.5,
            f"adds {added:.3f} ms; {SAMPLES} sequential requests each",
        )
    )
    report.add(
        Figure(
            "rpc p99 (hub ping)",
            h99,
            "ms",
            "bare echo p99",
            b99,
            "(reported)",
            True,
            f"adds {h99 - b99:.3f} ms",
        )
    )
