"""Customer displays through the hub: an Epson DM-D display emulated on a pseudo-terminal
(edge.sim.display, the devices codec seen from the display's side), a real hub and broker,
lanes sending display.show over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices.display_dmd import Initialized
from edge.app import Hub
from edge.bus import RequestContext, Topics
from edge.bus.errors import RequestError
from edge.relay.displays import Displays
from edge.relay.status import status_topic
from edge.settings import DevicesSettings, DisplaySettings
from edge.sim.display import DisplayEmulator
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
SHOW = TOPICS.lane_rpc("lane-1", "display.show")


@pytest.fixture
async def display() -> AsyncIterator[DisplayEmulator]:
    async with DisplayEmulator() as emulated:
        yield emulated


@contextlib.asynccontextmanager
async def hub_with_display(
    tmp_path: Path, broker: MosquittoProcess, port: str, **devices: Any
) -> AsyncIterator[Hub]:
    displays = [{"name": "pole", "port": port, "profile": "DM-D110"}]
    overrides = {f"devices__{key}": value for key, value in devices.items()}
    settings = hub_settings(
        tmp_path, broker_port=broker.port, devices__displays=displays,
        devices__timeout_s=1.0, **overrides,
    )  # fmt: skip
    async with run_hub(settings) as hub:
        yield hub


def show(command_id: str, *lines: str, **extra: Any) -> dict[str, Any]:
    return {"command_id": command_id, "device": "pole", "lines": list(lines), **extra}


async def ask(lane: Any, data: dict[str, Any], topic: str = SHOW) -> dict[str, Any]:
    answer: dict[str, Any] = msgspec.to_builtins(await lane.request(topic, data))
    return answer


async def test_a_lanes_text_appears_on_the_display(
    tmp_path: Path, broker: MosquittoProcess, display: DisplayEmulator
) -> None:
    async with (
        hub_with_display(tmp_path, broker, display.path) as hub,
        lane_client(hub) as lane,
    ):
        answer = await ask(lane, show("t1:display", "Coffee beans 250 g", "TOTAL  4.50 €"))
        assert answer["data"] == {
            "command_id": "t1:display",
            "device": "pole",
            "shown": ["Coffee beans 250 g", "TOTAL  4.50 ?"],
            "truncated": False,
            "duplicate": False,
        }
        await display.wait_until(lambda: display.text == ["Coffee beans 250 g", "TOTAL  4.50 ?"])
        assert isinstance(display.events[0], Initialized), "initialized when the line opened"

        long = await ask(lane, show("t2:display", "Organic free-range eggs x12"))
        assert long["data"]["truncated"] is True
        assert long["data"]["shown"] == ["Organic free-range e"]
        await display.wait_until(lambda: display.text == ["Organic free-range e", ""])

        keep = await ask(lane, show("t3:display", "Bananas", clear=False))
        assert keep["ok"], keep
        await display.wait_until(lambda: display.text == ["Bananas", ""])


async def test_a_retried_command_is_shown_once(
    tmp_path: Path, broker: MosquittoProcess, display: DisplayEmulator
) -> None:
    """A lane re-sending after a lost reply (or twice at once) must not flash the screen
    again: the re-send gets the first answer, marked duplicate."""
    async with (
        hub_with_display(tmp_path, broker, display.path) as hub,
        lane_client(hub) as lane,
    ):
        first = await ask(lane, show("t1:display", "Apples", "1.20"))
        again = await ask(lane, show("t1:display", "Apples", "1.20"))
        assert (first["data"]["duplicate"], again["data"]["duplicate"]) == (False, True)
        assert again["data"]["shown"] == first["data"]["shown"]
        both = await asyncio.gather(*(ask(lane, show("t2:display", "Pears")) for _ in range(2)))
        assert sorted(a["data"]["duplicate"] for a in both) == [False, True]
        conflict = await ask(lane, show("t1:display", "Something else"))
        assert (conflict["error"]["code"], conflict["error"]["retryable"]) == (
            "COMMAND_ID_CONFLICT",
            False,
        )
        # A barrier: once the next command's text is on the glass, anything the duplicates
        # had written would have arrived before it.
        await ask(lane, show("t3:display", "Done"))
        await display.wait_until(lambda: display.text == ["Done", ""])
        assert display.clears == 3, "t1, t2 and t3 once each"


async def test_an_unplugged_display_is_offline(
    tmp_path: Path, broker: MosquittoProcess, display: DisplayEmulator
) -> None:
    async with (
        hub_with_display(
            tmp_path, broker, display.path, misses_to_offline=1, status_every_s=0.05
        ) as hub,
        lane_client(hub) as lane,
        lane.subscription(status_topic(hub.topics, "pole")) as statuses,
    ):

        async def next_status(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    status: dict[str, Any] = msgspec.json.decode((await statuses.get()).payload)
                    if predicate(status):
                        return status

        online = await next_status(lambda s: s["online"])
        assert (online["kind"], online["summary"]) == ("display", "ready")
        assert (await ask(lane, show("t1:display", "Hello")))["ok"]
        display.unplug()
        error = (await ask(lane, show("t2:display", "Anyone?")))["error"]
        assert (error["code"], error["retryable"]) == ("OFFLINE", True)
        assert error["details"]["device"] == "pole"
        offline = await next_status(lambda s: not s["online"])
        assert offline["summary"] == "offline"


async def test_a_display_that_is_not_there_and_bad_requests(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with (
        hub_with_display(tmp_path, broker, str(tmp_path / "no-such-tty")) as hub,
        lane_client(hub) as lane,
    ):
        error = (await ask(lane, show("t1:display", "Hello")))["error"]
        assert (error["code"], error["retryable"]) == ("OFFLINE", True)
        too_many = (await ask(lane, show("t2:display", "1", "2", "3")))["error"]
        assert (too_many["code"], too_many["details"]["rows"]) == ("SCHEMA_INVALID", 2)
        unknown = (await ask(lane, {**show("t3:display", "x"), "device": "back"}))["error"]
        assert (unknown["code"], unknown["details"]["known"]) == ("DEVICE_UNKNOWN", ["pole"])


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=30),
    st.lists(st.one_of(st.text(max_size=30), st.integers(), st.none()), max_size=4),
)


@settings(max_examples=40, deadline=None)
@example(data={"command_id": "c1", "device": "pole", "lines": ["x"]})
@given(
    data=st.dictionaries(
        st.sampled_from(["command_id", "device", "lines", "clear", "x"]), JSON_VALUES, max_size=5
    )
)
def test_any_show_request_gets_a_structured_answer(data: dict[str, Any]) -> None:
    """Fuzzed through the hub's own decoder, relay core and worker: a structured error or a
    reply, never a crash. The display is unplugged (no such port): OFFLINE for valid ones."""

    async def ask_directly() -> dict[str, Any]:
        display = DisplaySettings(name="pole", port="/nonexistent/tty")
        devices = DevicesSettings(timeout_s=0.5, displays=[display])
        displays = Displays(devices, None, Topics("s1"))
        context = RequestContext("r", "display.show", "lane-1", "t", None)
        raw = msgspec.Raw(json.dumps(data).encode())
        running = asyncio.create_task(displays.run())
        try:
            return {"ok": await displays._rpc_show(context, raw)}
        except RequestError as exc:
            return {"code": exc.code}
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    answer = asyncio.run(ask_directly())
    assert answer.get("code") in {"SCHEMA_INVALID", "DEVICE_UNKNOWN", "OFFLINE"}, answer


async def test_line_settings_the_port_refuses_are_offline_not_a_crash(
    tmp_path: Path, broker: MosquittoProcess, display: DisplayEmulator
) -> None:
    displays = [{"name": "pole", "port": display.path, "profile": "DM-D110",
                 "bytesize": 7, "parity": "E"}]  # fmt: skip
    settings = hub_settings(
        tmp_path, broker_port=broker.port, devices__displays=displays, devices__timeout_s=1.0
    )
    async with run_hub(settings) as hub, lane_client(hub) as lane:
        answer = await ask(lane, show("t1:display", "Hello"))
        assert answer["error"]["code"] == "OFFLINE"
