"""Serial scales through the hub: a Mettler-Toledo 8217 scale emulated on a pseudo-terminal
(8N1: this kernel's ptys refuse 7E1), a real hub and broker, lanes asking over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devices.scale_toledo import ToledoStatus, encode_status_frame, encode_weight_frame
from edge.app import Hub
from edge.bus import Topics
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
MOTION = encode_status_frame(ToledoStatus(in_motion=True))


class ToledoOnPty:
    """The scale's side of a pty: answers each ``W`` with the next scripted frame (then the
    last one again), ``Z``/``T`` with a clear status; ``silent`` answers nothing."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self._slave = slave
        self.script: list[bytes] = [encode_weight_frame(Decimal("1.234"))]
        self.requests: list[bytes] = []
        self.silent = False

    def _readable(self) -> None:
        for byte in os.read(self.master, 256):
            self.requests.append(bytes([byte]))
            if self.silent:
                continue
            if byte == ord("W"):
                frame = self.script.pop(0) if len(self.script) > 1 else self.script[0]
                os.write(self.master, frame)
            elif byte in b"ZT":
                os.write(self.master, encode_status_frame(ToledoStatus()))

    def __enter__(self) -> ToledoOnPty:
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
async def scale() -> AsyncIterator[ToledoOnPty]:
    with ToledoOnPty() as emulated:
        yield emulated


@contextlib.asynccontextmanager
async def hub_with_scale(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty, **extra: Any
) -> AsyncIterator[Hub]:
    scales = [{
        "name": "deli", "port": scale.path, "bytesize": 8, "parity": "N", "poll_s": 0.01,
        "settle_s": 0.5, **extra,
    }]  # fmt: skip
    settings = hub_settings(
        tmp_path, broker_port=broker.port, devices__scales=scales, devices__timeout_s=0.5
    )
    async with run_hub(settings) as hub:
        yield hub


async def weigh(lane: Any, lane_id: str = "lane-1") -> dict[str, Any]:
    reply = await lane.request(TOPICS.lane_rpc(lane_id, "scale.weigh"), {"device": "deli"})
    answer: dict[str, Any] = msgspec.to_builtins(reply)
    return answer


async def test_a_stable_weight_after_motion_settles(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty
) -> None:
    scale.script = [MOTION, MOTION, encode_weight_frame(Decimal("0.455"))]
    async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
        answer = await weigh(lane)
        assert answer["data"] == {"device": "deli", "weight": "0.455", "unit": "kg", "net": False}
        assert scale.requests.count(b"W") == 3, "polled until stable, not guessed"
        zero = await lane.request(TOPICS.lane_rpc("lane-1", "scale.zero"), {"device": "deli"})
        assert zero.ok
        assert b"Z" in scale.requests


@pytest.mark.parametrize(
    ("frame", "code", "retryable"),
    [
        (MOTION, "WEIGHT_UNSTABLE", True),
        (encode_status_frame(ToledoStatus(over_capacity=True)), "OVER_CAPACITY", False),
        (encode_status_frame(ToledoStatus(under_zero=True)), "UNDER_ZERO", True),
    ],
)
async def test_no_weight_is_ever_guessed(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty, frame: bytes, code: str,
    retryable: bool,
) -> None:  # fmt: skip
    scale.script = [frame]
    async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
        error = (await weigh(lane))["error"]
    assert (error["code"], error["retryable"]) == (code, retryable)


async def test_a_silent_scale_is_offline(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty
) -> None:
    scale.silent = True
    async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
        error = (await weigh(lane))["error"]
        assert (error["code"], error["retryable"]) == ("OFFLINE", True)
        scale.silent = False
        assert (await weigh(lane))["data"]["weight"] == "1.234", "the line is reopened"


async def test_one_lane_at_a_time_released_when_the_holder_goes_offline(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty
) -> None:
    async with (
        hub_with_scale(tmp_path, broker, scale, claim_ttl_s=600) as hub,
        lane_client(hub, "lane-1") as one,
        lane_client(hub, "lane-2") as two,
    ):
        assert (await weigh(one, "lane-1"))["data"]["weight"] == "1.234"
        refused = (await weigh(two, "lane-2"))["error"]
        assert (refused["code"], refused["details"]["holder"]) == (
            "CLAIMED_BY_OTHER_LANE",
            "lane-1",
        )
        # Lane 1 closes (its retained presence says offline): the scale is free.
        await one.publish(
            TOPICS.lane_status("lane-1"), b'{"v": 1, "state": "offline"}', retain=True
        )
        async with asyncio.timeout(10):
            while "error" in (answer := await weigh(two, "lane-2")):
                assert answer["error"]["code"] == "CLAIMED_BY_OTHER_LANE"
        assert answer["data"]["weight"] == "1.234"
        released = await one.request(TOPICS.lane_rpc("lane-2", "scale.release"), {"device": "deli"})
        assert released.ok


async def test_line_settings_the_port_refuses_are_offline_not_a_crash(
    tmp_path: Path, broker: MosquittoProcess, scale: ToledoOnPty
) -> None:
    """The 8217's own 7E1 on a port that refuses 7 data bits with parity (a pseudo-terminal
    here; some USB adapters in stores): a structured OFFLINE naming the port, the hub runs on."""
    async with (
        hub_with_scale(tmp_path, broker, scale, bytesize=7, parity="E") as hub,
        lane_client(hub) as lane,
    ):
        answer = await weigh(lane)
        assert answer["error"]["code"] == "OFFLINE"
        assert scale.path in answer["error"]["message"]
        assert (await lane.request(TOPICS.hub_rpc("ping"), {})).ok
