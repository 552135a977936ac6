"""Receipt printers driven by the hub: status over the network, jobs refused before they would
be held inside a printer, debounced presence, retained status on MQTT, and the lanes' commands
through the relay core (de-duplication, priorities, deadlines, one writer per printer).
Against the printer emulator over real TCP."""

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
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices.receipt import Receipt, ReceiptLine, encode_receipt
from edge.app import Hub
from edge.bus import Topics
from edge.bus.envelope import encode
from edge.bus.errors import RequestError
from edge.bus.rpc import RequestContext
from edge.relay.printer import NetworkPrinter, PrinterError
from edge.relay.printers import DrawerRequest, Printers, PrintRequest, preview_png
from edge.relay.status import status_topic
from edge.settings import DevicesSettings, PrinterSettings
from edge.sim.printer import PrinterEmulator
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
RECEIPT = Receipt(lines=(ReceiptLine(text="Coffee beans 250 g", amount=Decimal("4.50")),))


@pytest.fixture
async def emulator() -> AsyncIterator[PrinterEmulator]:
    async with PrinterEmulator() as printer:
        yield printer


class Clock:
    """The relay's clock, moved by the test (deadlines without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def printers_for(
    emulator: PrinterEmulator, misses: int = 3, clock: Callable[[], float] | None = None
) -> Printers:
    settings = DevicesSettings(
        misses_to_offline=misses,
        timeout_s=0.5,
        printers=[PrinterSettings(name="front", host="127.0.0.1", port=emulator.port)],
    )
    if clock is None:
        return Printers(settings, None, Topics("s1"), store_id="s1")
    return Printers(settings, None, Topics("s1"), store_id="s1", clock=clock)


@contextlib.asynccontextmanager
async def running(printers: Printers) -> AsyncIterator[Printers]:
    """The printers' workers, expiry timer and status checks, as the hub runs them."""
    task = asyncio.create_task(printers.run())
    try:
        yield printers
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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


async def test_a_rush_of_receipts_shares_one_connection_closed_when_idle_or_stopping(
    emulator: PrinterEmulator,
) -> None:
    """A connect per receipt is a round trip more for every customer at the rush hour; a
    connection held while nothing prints keeps every other client off a printer that takes
    one at a time, and one left open at shutdown leaks."""
    printers = printers_for(emulator)
    async with running(printers):
        for n in range(3):
            await printers.print_receipt(print_request(f"r{n}", f"Receipt {n}"), "lane-1")
        await printers.check(printers.printers["front"])
        assert emulator.connections_accepted == 1, "the checks and jobs shared one connection"
        assert emulator.open_connections == 1
    await emulator.wait_until(lambda: emulator.open_connections == 0)
    assert len(emulator.jobs) == 3

    idle = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=2, keep_open_s=0.05)
    await idle.status()
    await emulator.wait_until(lambda: emulator.open_connections == 0)
    assert emulator.connections_accepted == 2, "closed after keep_open_s without a command"


async def test_a_kept_connection_the_printer_dropped_is_replaced_before_the_job(
    emulator: PrinterEmulator,
) -> None:
    """Switched off and on between two receipts, the printer resets the connection kept
    from the first: the second must print once on a new connection, not be answered OFFLINE
    (or counted as a missed check) for a printer that is there."""
    driver = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=2, keep_open_s=60)
    await driver.print(encode_receipt(RECEIPT))
    emulator.fault = "drop"  # resets the open connection, the hub has not seen it yet
    emulator.fault = None
    state = await driver.print(encode_receipt(RECEIPT))
    assert state.summary == "ready"
    assert emulator.connections_accepted == 2
    assert len(emulator.jobs) == 2
    driver.close_idle_connection()


async def test_a_connection_that_timed_out_is_never_used_again(
    emulator: PrinterEmulator,
) -> None:
    """Answers are matched to requests by their order: a connection on which a status
    request went unanswered may deliver that answer later, as the answer to the next job's
    request (a job confirmed by a stale byte)."""
    driver = NetworkPrinter("127.0.0.1", emulator.port, timeout_s=0.3, keep_open_s=60)
    await driver.status()
    emulator.fault = "silent"
    with pytest.raises(PrinterError) as hung:
        await driver.print(encode_receipt(RECEIPT))
    assert hung.value.code == "OFFLINE", "nothing was sent but the status requests"
    emulator.fault = None
    await driver.print(encode_receipt(RECEIPT))
    assert emulator.connections_accepted == 2
    assert len(emulator.jobs) == 1
    driver.close_idle_connection()


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
    async with running(printers):
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
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator, **extra: Any
) -> AsyncIterator[Hub]:
    printers = [{"name": "front", "host": "127.0.0.1", "port": emulator.port}]
    settings = hub_settings(tmp_path, broker_port=broker.port, devices__printers=printers, **extra)
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


@pytest.mark.parametrize(
    ("trouble", "code"), [("paper_out", "PAPER_OUT_DURING_JOB"), ("silent", "UNCONFIRMED")]
)
async def test_trouble_after_the_job_was_sent_is_final_and_a_resend_never_prints_twice(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator, trouble: str, code: str
) -> None:
    """The roll ends mid-job, or the printer hangs once it has the job: the job is in the
    printer (it prints when the trouble is cleared), so the answer is an error that is not
    retryable, a re-send of the same command gets it again, and the receipt prints once
    (the Odoo double-print lesson; issue 6, "paper out mid-job")."""
    async with (
        hub_with_printer(tmp_path, broker, emulator, devices__timeout_s=0.5) as hub,
        lane_client(hub, "lane-1") as lane,
    ):
        emulator.next_job_fault = trouble  # type: ignore[assignment]
        first = msgspec.to_builtins(await lane.request(PRINT, print_command("t7:receipt")))
        assert (first["error"]["code"], first["error"]["retryable"]) == (code, False)
        assert emulator.jobs == [], "held in the printer, not printed yet"
        if trouble == "paper_out":
            emulator.paper_out = False  # paper loaded: the rest of the job prints
        else:
            emulator.fault = None  # the printer wakes up and prints what it holds
        await emulator.wait_for_job(1)
        again = msgspec.to_builtins(await lane.request(PRINT, print_command("t7:receipt")))
        assert again["error"]["code"] == code, "the same answer, not a second print"
        following = await lane.request(PRINT, print_command("t8:receipt", text="Tea"))
        assert following.ok, following.error
        await emulator.wait_for_job(2)
    assert [("Tea" in job.text) for job in emulator.jobs] == [False, True]


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
@example(data=print_command("c1"))
@example(data={**print_command("c2"), "priority": "report"})
@given(
    data=st.dictionaries(
        st.sampled_from(["command_id", "device", "receipt", "priority", "pin", "x"]),
        JSON_VALUES,
        max_size=6,
    )
)
def test_any_print_request_gets_a_structured_answer(data: dict[str, Any]) -> None:
    """Fuzzed through the hub's own decoder, relay core and worker: a structured error, never
    a crash (a valid request reaches no printer: nothing listens on port 1, OFFLINE)."""

    async def ask() -> dict[str, Any]:
        printer = PrinterSettings(name="front", host="127.0.0.1", port=1)
        printers = Printers(
            DevicesSettings(timeout_s=0.2, printers=[printer]), None, Topics("s1"), store_id="s1"
        )
        context = RequestContext("r", "device.print", "lane-1", "t", None)
        raw = msgspec.Raw(json.dumps(data).encode())
        async with running(printers):
            try:
                return {"ok": await printers._rpc_print(context, raw)}
            except RequestError as exc:
                return {"code": exc.code}

    answer = asyncio.run(ask())
    assert answer.get("code") in {"SCHEMA_INVALID", "DEVICE_UNKNOWN", "OFFLINE"}, answer


def print_request(command_id: str, text: str, **extra: Any) -> PrintRequest:
    return msgspec.convert({**print_command(command_id, text), **extra}, PrintRequest)


async def test_three_lanes_printing_at_once_get_every_receipt_once_in_their_order(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> None:
    """Issue 6, "Done when": three registers sharing one printer, each sending its receipts
    back-to-back without waiting for the replies. Two jobs interleaved on the wire would print
    as one mangled receipt; a lost or doubled command is a customer without a receipt or with
    two; a lane's receipts out of order are a cashier handing out the wrong one."""
    lanes, receipts = ("lane-1", "lane-2", "lane-3"), 5
    async with (
        hub_with_printer(tmp_path, broker, emulator) as hub,
        lane_client(hub, "lane-1") as one,
        lane_client(hub, "lane-2") as two,
        lane_client(hub, "lane-3") as three,
    ):

        async def send_all(lane: Any, name: str) -> list[dict[str, Any]]:
            topic = TOPICS.lane_rpc(name, "device.print")
            replies = []
            for n in range(receipts):  # each sent as soon as the broker has the previous one
                data = print_command(f"{name}:t{n}", text=f"{name} receipt {n}")
                replies.append(await lane.send(topic, encode({"v": 1, "id": f"{n}", "data": data})))
            async with asyncio.timeout(20):
                return [msgspec.json.decode(await reply) for reply in replies]

        answers = await asyncio.gather(*(
            send_all(lane, name) for lane, name in zip((one, two, three), lanes, strict=True)
        ))  # fmt: skip
        for replies in answers:
            assert all(r["ok"] and r["data"]["duplicate"] is False for r in replies), replies
        await emulator.wait_for_job(len(lanes) * receipts)
    printed = [job.text for job in emulator.jobs]
    assert len(printed) == len(lanes) * receipts, "nothing printed twice, nothing merged"
    for name in lanes:
        mine = [n for text in printed for n in range(receipts) if f"{name} receipt {n}" in text]
        assert mine == list(range(receipts)), f"{name}: every receipt once, in its order"


async def test_a_receipt_goes_before_a_drawer_kick_before_a_report(
    emulator: PrinterEmulator,
) -> None:
    """A customer's receipt must not wait behind an end-of-day report queued first; the drawer
    opens right after the receipts (edge.relay.core's PRIORITY_*). Queued before the worker
    starts, as they are behind a busy printer."""
    printers = printers_for(emulator)
    report = asyncio.create_task(
        printers.print_receipt(print_request("r1", "End of day", priority="report"), "lane-1")
    )
    drawer = asyncio.create_task(
        printers.kick_drawer(DrawerRequest(command_id="d1", device="front", pin=5), "lane-1")
    )
    receipt = asyncio.create_task(printers.print_receipt(print_request("c1", "Customer"), "lane-2"))
    async with running(printers):
        answers = await asyncio.gather(report, drawer, receipt)
    assert [a["command_id"] for a in answers] == ["r1", "d1", "c1"]
    first, second = emulator.jobs
    assert "Customer" in first.text
    assert not first.drawer_kicks
    assert "End of day" in second.text
    assert second.drawer_kicks == {5: 1}, "the kick ran between the receipt and the report"


async def test_a_print_still_queued_at_its_deadline_is_answered_timeout_and_never_printed(
    emulator: PrinterEmulator,
) -> None:
    """A receipt stuck behind a hung printer must not come out minutes later for the next
    customer: TIMEOUT (retryable, nothing printed), answered once; the re-send prints it once.
    The relay's clock is the test's, so no sleeping: the deadline passes when we say."""
    clock = Clock()
    printers = printers_for(emulator, clock=clock)
    emulator.fault = "silent"  # a hung printer: takes the connection, never answers
    first = asyncio.create_task(printers.print_receipt(print_request("t1", "First"), "lane-1"))
    second = asyncio.create_task(printers.print_receipt(print_request("t2", "Second"), "lane-1"))
    async with running(printers):
        await emulator.wait_until(lambda: emulator.bytes_received > 0)  # the worker is stuck
        assert printers.relay.state_of("t2") == "queued"
        clock.now += 60  # t2's deadline has passed
        with pytest.raises(RequestError) as timed_out:
            await second
        assert (timed_out.value.code, timed_out.value.retryable) == ("TIMEOUT", True)
        with pytest.raises(RequestError) as hung:
            await first
        assert hung.value.code == "OFFLINE", "t1 met the hung printer: nothing was sent"
        emulator.fault = None
        again = await printers.print_receipt(print_request("t2", "Second"), "lane-1")
        assert again["duplicate"] is False, "a retryable answer lets the re-send run"
        repeat = await printers.print_receipt(print_request("t2", "Second"), "lane-1")
        assert repeat["duplicate"] is True
    assert [job.text.count("Second") for job in emulator.jobs] == [1]
    assert not any("First" in job.text for job in emulator.jobs)


async def test_a_printer_going_offline_fails_its_queue_with_offline(
    emulator: PrinterEmulator,
) -> None:
    """Commands queued for a printer declared offline are answered OFFLINE at once (the lane
    offers an e-receipt) instead of each waiting out its deadline; new ones are refused."""
    printers = printers_for(emulator, misses=1, clock=Clock())
    emulator.fault = "silent"
    first = asyncio.create_task(printers.print_receipt(print_request("t1", "First"), "lane-1"))
    queued = asyncio.create_task(printers.print_receipt(print_request("t2", "Second"), "lane-2"))
    async with running(printers):
        for task in (first, queued):
            with pytest.raises(RequestError) as offline:
                await task
            assert (offline.value.code, offline.value.retryable) == ("OFFLINE", True)
        assert not printers.printers["front"].online
        with pytest.raises(RequestError) as refused:
            await printers.print_receipt(print_request("t3", "Third"), "lane-1")
        assert refused.value.code == "OFFLINE"
        assert printers.relay.depth("front") == 0
    emulator.fault = None
    assert emulator.jobs == []


async def test_the_console_tests_share_the_queue_and_retry_an_offline_printer(
    emulator: PrinterEmulator,
) -> None:
    """The technician's drawer test and test print go through the printer's one worker, and a
    printer last seen offline is checked again first (the technician just fixed it)."""
    printers = printers_for(emulator, misses=1)
    emulator.fault = "drop"
    async with running(printers):
        front = printers.printers["front"]
        await printers.check(front)
        assert not front.online
        emulator.fault = None
        state = await printers.test_drawer("front", by="tester")
        assert state.summary == "ready"
        await emulator.wait_until(lambda: emulator.drawer_kicks[2] == 1)
        emulator.paper_out = True
        with pytest.raises(PrinterError) as refused:
            await printers.test_print("front", by="tester")
        assert refused.value.code == "PAPER_OUT"
    assert emulator.jobs == []
