"""Receipt printers driven by the hub: status over the network, jobs refused before they would
be held inside a printer, debounced presence, retained status on MQTT. Against the printer
emulator over real TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.receipt import Receipt, ReceiptLine, encode_receipt
from edge.app import Hub
from edge.bus import Topics
from edge.bus.errors import RequestError
from edge.bus.rpc import RequestContext
from edge.relay.printer import NetworkPrinter, PrinterError
from edge.relay.printers import Printers, preview_png, status_topic
from edge.settings import DevicesSettings, PrinterSettings
from edge.sim.printer import PrinterEmulator
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
RECEIPT = Receipt(lines=(ReceiptLine(text="Coffee beans 250 g", amount=Decimal("4.50")),))


@pytest.fixture
async def emulator() -> AsyncIterator[PrinterEmulator]:
    async with PrinterEmulator() as printer:
        yield printer


def printers_for(emulator: PrinterEmulator, misses: int = 3) -> Printers:
    settings = DevicesSettings(
        misses_to_offline=misses,
        timeout_s=0.5,
        printers=[PrinterSettings(name="front", host="127.0.0.1", port=emulator.port)],
    )
    return Printers(settings, None, Topics("s1"), store_id="s1")


async def test_status_and_a_job_printed(emulator: PrinterEmulator) -> None:
    driver = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=2)
    state = await driver.status()
    assert (state.online, state.summary) == (True, "ready")
    emulator.paper_near_end = True
    after = await driver.print(encode_receipt(RECEIPT))
    assert after.paper_near_end
    assert after.summary == "paper near end"
    job = await emulator.wait_for_job(1)
    assert "Coffee beans 250 g" in job.text


@pytest.mark.parametrize(
    ("knob", "code"),
    [("paper_out", "PAPER_OUT"), ("cover_open", "COVER_OPEN"), ("offline", "OFFLINE")],
)
async def test_a_job_is_refused_not_held_when_the_printer_cannot_print(
    emulator: PrinterEmulator, knob: str, code: str
) -> None:
    """A receipt held inside the printer would print minutes later for the next customer."""
    setattr(emulator, knob, True)
    driver = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=2)
    with pytest.raises(PrinterError) as refused:
        await driver.print(encode_receipt(RECEIPT))
    assert refused.value.code == code
    job = encode_receipt(RECEIPT)
    assert emulator.held_bytes < len(job), "only status requests reached it, not the job"
    setattr(emulator, knob, False)
    await driver.print(job)  # returns once the printer has executed it (the status barrier)
    assert "Coffee beans" in (await emulator.wait_for_job(1)).text
    assert len(emulator.jobs) == 1, "the refused receipt never prints"


async def test_a_printer_that_stops_answering_is_offline_not_hung(
    emulator: PrinterEmulator,
) -> None:
    emulator.fault = "silent"
    driver = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=0.3)
    with pytest.raises(PrinterError) as refused:
        await driver.status()
    assert refused.value.code == "OFFLINE"


async def test_presence_is_debounced_over_missed_checks(emulator: PrinterEmulator) -> None:
    printers = printers_for(emulator, misses=3)
    front = printers.printers["front"]
    await printers.check(front)
    assert front.online
    emulator.fault = "drop"
    for _ in range(2):
        await printers.check(front)
        assert front.online, "one or two missed checks do not flap the printer"
    await printers.check(front)
    assert not front.online
    assert front.summary == "offline"
    emulator.fault = None
    await printers.check(front)
    assert front.online, "one answer brings it back"


async def test_the_test_print_preview_is_drawn_from_the_bytes_sent(
    emulator: PrinterEmulator,
) -> None:
    printers = printers_for(emulator)
    await printers.test_print("front", by="tester")
    job = await emulator.wait_for_job(1)
    preview = printers.printers["front"].preview
    assert preview is not None
    assert preview.startswith(b"\x89PNG")
    assert preview == preview_png(job.raw, 42), "the hub's preview is what the printer printed"
    assert "TEST PRINT" in job.text
    assert "by tester" in job.text


async def test_the_hub_retains_each_printers_status_on_mqtt(
    tmp_path: Path,
    broker: MosquittoProcess,
    emulator: PrinterEmulator,
    free_port: Callable[[], int],
) -> None:
    printers = [{"name": "front", "host": "127.0.0.1", "port": emulator.port}]
    settings = hub_settings(
        tmp_path, broker_port=broker.port, devices__printers=printers,
        devices__status_every_s=0.05,
    )  # fmt: skip
    async with run_hub(settings) as hub, lane_client(hub, "lane-1") as lane:
        topic = status_topic(hub.topics, "front")
        async with lane.subscription(topic) as queue:

            async def next_status(predicate: Callable[[dict[str, object]], bool]) -> None:
                async with asyncio.timeout(10):
                    while not predicate(msgspec.json.decode((await queue.get()).payload)):
                        pass

            await next_status(lambda s: s["online"] is True and s["summary"] == "ready")
            emulator.paper_out = True
            await next_status(lambda s: s["paper_out"] is True and s["summary"] == "paper out")
            emulator.paper_out = False
            await next_status(lambda s: s["summary"] == "ready")


@contextlib.asynccontextmanager
async def hub_with_printer(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> AsyncIterator[Hub]:
    printers = [{"name": "front", "host": "127.0.0.1", "port": emulator.port}]
    settings = hub_settings(tmp_path, broker_port=broker.port, devices__printers=printers)
    async with run_hub(settings) as hub:
        yield hub


def print_command(command_id: str, text: str = "Coffee beans 250 g") -> dict[str, Any]:
    return {
        "command_id": command_id,
        "device": "front",
        "receipt": {
            "header": ["Store 1"],
            "lines": [{"text": text, "amount": "4.50"}],
            "totals": [{"label": "TOTAL", "amount": "4.50"}],
        },
    }


PRINT = TOPICS.lane_rpc("lane-1", "device.print")
DRAWER = TOPICS.lane_rpc("lane-1", "device.drawer")


async def test_a_retried_print_never_prints_twice(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> None:
    async with (
        hub_with_printer(tmp_path, broker, emulator) as hub,
        lane_client(hub, "lane-1") as lane,
    ):
        first = await lane.request(PRINT, print_command("t1:receipt"))
        assert first.ok, first.error
        again = await lane.request(PRINT, print_command("t1:receipt"))
        assert msgspec.to_builtins(again)["data"]["duplicate"] is True
        # Two copies of a new command at once (a register retrying on a timeout): one print.
        both = await asyncio.gather(
            lane.request(PRINT, print_command("t2:receipt")),
            lane.request(PRINT, print_command("t2:receipt")),
        )
        assert all(r.ok for r in both)
        assert sorted(msgspec.to_builtins(r)["data"]["duplicate"] for r in both) == [False, True]
        conflict = await lane.request(PRINT, print_command("t1:receipt", text="Other"))
        assert msgspec.to_builtins(conflict)["error"]["code"] == "COMMAND_ID_CONFLICT"
        drawer = await lane.request(
            DRAWER, {"command_id": "t2:drawer", "device": "front", "pin": 2}
        )
        assert drawer.ok, drawer.error
        await emulator.wait_until(lambda: emulator.drawer_kicks[2] == 1)
    assert len(emulator.jobs) == 2
    assert "Coffee beans 250 g" in emulator.jobs[0].text


async def test_a_print_refused_for_paper_out_prints_once_when_resent_after_the_fix(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> None:
    async with (
        hub_with_printer(tmp_path, broker, emulator) as hub,
        lane_client(hub, "lane-1") as lane,
    ):
        emulator.paper_out = True
        refused = msgspec.to_builtins(await lane.request(PRINT, print_command("t3:receipt")))
        assert (refused["error"]["code"], refused["error"]["retryable"]) == ("PAPER_OUT", True)
        unknown = await lane.request(PRINT, {**print_command("t4"), "device": "back"})
        error = msgspec.to_builtins(unknown)["error"]
        assert (error["code"], error["details"]["known"]) == ("DEVICE_UNKNOWN", ["front"])
        emulator.paper_out = False
        done = msgspec.to_builtins(await lane.request(PRINT, print_command("t3:receipt")))
        assert done["data"]["duplicate"] is False
    assert len(emulator.jobs) == 1


JSON_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.dictionaries(
        st.sampled_from(["lines", "columns", "qr", "cut"]),
        st.one_of(st.integers(), st.text(max_size=10), st.lists(st.text(max_size=5), max_size=2)),
        max_size=3,
    ),
)


@settings(max_examples=40, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(["command_id", "device", "receipt", "pin", "x"]), JSON_VALUES, max_size=5
    )
)
def test_any_print_request_gets_a_structured_answer(data: dict[str, Any]) -> None:
    """Fuzzed through the hub's own decoder and de-duplication: a structured error, never a
    crash (a valid request reaches no printer: nothing listens on port 1, OFFLINE)."""

    async def ask() -> dict[str, Any]:
        printer = PrinterSettings(name="front", host="127.0.0.1", port=1)
        printers = Printers(
            DevicesSettings(timeout_s=0.2, printers=[printer]), None, Topics("s1"), store_id="s1"
        )
        context = RequestContext("r", "device.print", "lane-1", "t", None)
        raw = msgspec.Raw(json.dumps(data).encode())
        try:
            return {"ok": await printers._rpc_print(context, raw)}
        except RequestError as exc:
            return {"code": exc.code}

    answer = asyncio.run(ask())
    assert answer.get("code") in {"SCHEMA_INVALID", "DEVICE_UNKNOWN", "OFFLINE"}, answer
