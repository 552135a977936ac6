"""A bare MQTT 5 echo responder in its own process: the baseline for request/response figures.

It answers every request on ``--topic`` (a filter) to its response topic with the correlation
data and a fixed small payload, nothing else: what any responder must at least do.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPLY = b'{"v":1,"ok":true,"data":{"seq":1}}'


async def serve(port: int, topic: str) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-echo",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=256,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        client.pending_calls_threshold = 100_000
        await client.subscribe(topic, qos=1)
        print("ready", flush=True)

        async def answer(message: aiomqtt.Message) -> None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]
            await client.publish(
                message.properties.ResponseTopic,  # type: ignore[union-attr]
                REPLY,
                qos=1,
                properties=props,
            )

        # Concurrent answers, as the hub handles requests: the baseline must not be slower
        # for being serial.
        async with asyncio.TaskGroup() as tg:
            async for message in client.messages:
                tg.create_task(answer(message))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.topic))
