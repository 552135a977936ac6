"""The printer emulator over real loopback TCP (and its USB side on a pty): jobs, status answers,
held data, faults.

The emulator stands for the store's receipt printers in integration tests and the demo; if it
answers a status the real printer would not, or prints what a real printer would hold, the
hub's printer handling is tested against a fiction.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from devices.escpos_status import StatusRequest, decode_status, encode_status_request
from devices.receipt import (
    Barcode,
    Receipt,
    ReceiptLine,
    Tender,
    Total,
    encode_drawer_kick,
    encode_receipt,
)
from edge.relay.usblp import UsbDevice, UsbLine
from edge.sim.printer import EscPosDecoder, JobEnded, PreviewLine, PrinterEmulator, UsbPort

TIMEOUT = 5.0
SALE = Receipt(
    header=("Store 12", "1 High Street"),
    lines=(
        ReceiptLine("Coffee", Decimal("7.00"), Decimal(2)),
        ReceiptLine("Bananas", Decimal("1.05"), Decimal("0.350")),
    ),
    totals=(Total("TOTAL", Decimal("8.05")),),
    tenders=(Tender("Cash", Decimal("10")), Tender("Change", Decimal("-1.95"))),
    footer=("Thank you",),
    barcode=Barcode("EAN13", "4006381333931"),
    qr="https://example.com/r/42",
)


@pytest.fixture
async def printer() -> AsyncIterator[PrinterEmulator]:
    async with PrinterEmulator() as emulator:
        yield emulator


class Client:
    """One TCP connection to the emulator, as a driver would hold it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, printer: PrinterEmulator) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def status(self, request: StatusRequest) -> int:
        """Send DLE EOT n and read its one-byte answer (a barrier: see the emulator)."""
        await self.send(encode_status_request(request))
        async with asyncio.timeout(TIMEOUT):
            return (await self.reader.readexactly(1))[0]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# --- jobs ---------------------------------------------------------------------------------------


async def test_a_receipt_prints_as_one_job_with_its_lines_totals_and_codes(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    wire = encode_receipt(SALE)
    await client.send(wire)
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()

    assert job.raw == wire
    assert job.cuts == 1
    assert job.drawer_kicks == {}
    assert job.unknown_commands == 0
    text = job.text.splitlines()
    assert "Store 12".center(42).rstrip() in text
    assert "2 x Coffee" + " " * 28 + "7.00" in text
    assert "0.350 x Bananas" + " " * 23 + "1.05" in text
    assert "TOTAL" + " " * 33 + "8.05" in text
    assert "Change" + " " * 31 + "-1.95" in text
    assert "[EAN13 4006381333931]".center(42).rstrip() in text
    assert "[QR https://example.com/r/42]".center(42).rstrip() in text
    assert "Thank you".center(42).rstrip() in text
    bold = [b.text for b in job.blocks if isinstance(b, PreviewLine) and b.bold]
    assert bold == ["TOTAL" + " " * 33 + "8.05"]
    assert len(printer.jobs) == 1


async def test_receipts_sent_together_split_into_jobs_at_each_cut(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    first = Receipt(header=("first",))
    second = Receipt(header=("second",), barcode=Barcode("CODE128", "A{1"))
    await client.send(encode_receipt(first) + encode_receipt(second))
    job2 = await printer.wait_for_job(2, TIMEOUT)
    await client.close()

    job1 = printer.jobs[0]
    assert (job1.number, job2.number) == (1, 2)
    assert "first" in job1.text
    assert "second" not in job1.text
    assert "second" in job2.text
    assert "[CODE128 A{1]" in job2.text


async def test_a_job_split_into_single_bytes_is_still_one_job(printer: PrinterEmulator) -> None:
    client = await Client.connect(printer)
    wire = encode_receipt(SALE)
    for index in range(len(wire)):
        await client.send(wire[index : index + 1])
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()
    assert job.raw == wire
    assert "TOTAL" in job.text


async def test_status_requests_between_jobs_are_not_part_of_the_next_job(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    assert await client.status(StatusRequest.ROLL_PAPER) == 0x12
    wire = encode_receipt(SALE)
    await client.send(wire)
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()
    assert job.raw == wire


# --- status -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "request_", "answer"),
    [
        # peripherals.md §1.3: an idle, healthy Epson answers 0x12 to each n.
        ({}, StatusRequest.PRINTER, 0x12),
        ({}, StatusRequest.OFFLINE_CAUSE, 0x12),
        ({}, StatusRequest.ERROR_CAUSE, 0x12),
        ({}, StatusRequest.ROLL_PAPER, 0x12),
        # §1.3 examples: offline → n=1 0x1A; near end → n=4 0x1E; paper out → n=4 0x72.
        ({"offline": True}, StatusRequest.PRINTER, 0x1A),
        ({"paper_near_end": True}, StatusRequest.ROLL_PAPER, 0x1E),
        ({"paper_near_end": True}, StatusRequest.PRINTER, 0x12),
        ({"paper_out": True}, StatusRequest.ROLL_PAPER, 0x72),
        # Paper end stops printing and takes the printer offline (n=2 bit 5, n=1 bit 3).
        ({"paper_out": True}, StatusRequest.OFFLINE_CAUSE, 0x32),
        ({"paper_out": True}, StatusRequest.PRINTER, 0x1A),
        # §6: cover open → n=2 0x16.
        ({"cover_open": True}, StatusRequest.OFFLINE_CAUSE, 0x16),
        ({"cover_open": True}, StatusRequest.PRINTER, 0x1A),
        # §1.3: drawer pin 3 HIGH → n=1 0x16.
        ({"drawer_pin3_high": True}, StatusRequest.PRINTER, 0x16),
    ],
)
async def test_status_answers_follow_the_state(
    printer: PrinterEmulator, knobs: dict[str, bool], request_: StatusRequest, answer: int
) -> None:
    for name, value in knobs.items():
        setattr(printer, name, value)
    client = await Client.connect(printer)
    got = await client.status(request_)
    await client.close()
    assert got == answer, f"0x{got:02X} != 0x{answer:02X}"
    decode_status(request_, bytes((got,)))  # a valid status byte for the driver's codec


async def test_a_status_change_shows_in_the_next_answer_on_the_same_connection(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    assert await client.status(StatusRequest.ROLL_PAPER) == 0x12
    printer.paper_out = True
    assert await client.status(StatusRequest.ROLL_PAPER) == 0x72
    printer.paper_out = False
    assert await client.status(StatusRequest.ROLL_PAPER) == 0x12
    await client.close()


# --- held data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("knob", ["paper_out", "cover_open", "offline"])
async def test_a_job_sent_while_the_printer_cannot_print_is_held_then_printed(
    printer: PrinterEmulator, knob: str
) -> None:
    setattr(printer, knob, True)
    client = await Client.connect(printer)
    wire = encode_receipt(SALE)
    await client.send(wire)
    # The answer comes after everything sent before the request was taken in.
    await client.status(StatusRequest.PRINTER)
    assert printer.jobs == []
    assert printer.held_bytes == len(wire) + 3

    setattr(printer, knob, False)
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()
    assert job.raw == wire
    assert "TOTAL" in job.text


async def test_a_drawer_kick_sent_while_paper_is_out_does_not_open_the_drawer(
    printer: PrinterEmulator,
) -> None:
    printer.paper_out = True
    client = await Client.connect(printer)
    await client.send(encode_drawer_kick(2))
    await client.status(StatusRequest.PRINTER)
    assert printer.drawer_kicks[2] == 0
    printer.paper_out = False
    await printer.wait_until(lambda: printer.drawer_kicks[2] == 1, TIMEOUT)
    await client.close()


# --- drawer -------------------------------------------------------------------------------------


async def test_drawer_kicks_are_counted_per_pin_with_or_without_a_cut(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    await client.send(encode_drawer_kick(2) + encode_drawer_kick(5) + encode_drawer_kick(2))
    await printer.wait_until(lambda: sum(printer.drawer_kicks.values()) == 3, TIMEOUT)
    assert printer.drawer_kicks == {2: 2, 5: 1}
    assert printer.jobs == []  # no cut: no job

    await client.send(encode_receipt(Receipt(header=("sale",), open_drawer=True)))
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()
    # The kicks sent before the receipt belong to the same (first) job: nothing cut them.
    assert job.drawer_kicks == {2: 3, 5: 1}
    assert printer.drawer_kicks == {2: 3, 5: 1}


# --- preview PNG --------------------------------------------------------------------------------


async def test_the_preview_is_a_valid_png_of_the_paper_width(printer: PrinterEmulator) -> None:
    client = await Client.connect(printer)
    await client.send(encode_receipt(SALE))
    job = await printer.wait_for_job(1, TIMEOUT)
    await client.close()

    png = job.preview_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        rows = len(job.text.splitlines())
        assert width == 2 * 10 + 42 * 10
        assert rows * 20 <= height <= 20_000
        assert image.convert("L").getextrema() == (0, 255)  # something is drawn on white
    assert job.preview_png() is png  # rendered once


# --- python-escpos as the client ----------------------------------------------------------------


async def test_python_escpos_network_printer_prints_and_reads_status(
    printer: PrinterEmulator,
) -> None:
    from escpos.printer import Network

    printer.paper_near_end = True

    def print_with_python_escpos() -> int:
        network = Network("127.0.0.1", port=printer.port, timeout=TIMEOUT)
        try:
            network.hw("INIT")
            network.textln("Hello from python-escpos")
            network.cashdraw(5)
            paper = int(network.paper_status())  # DLE EOT 4: 1 = near end
            network.cut()
        finally:
            network.close()
        return paper

    assert await asyncio.to_thread(print_with_python_escpos) == 1
    job = await printer.wait_for_job(1, TIMEOUT)
    assert "Hello from python-escpos" in job.text
    assert job.drawer_kicks == {5: 1}


# --- faults -------------------------------------------------------------------------------------


async def test_a_silent_printer_answers_nothing_and_prints_nothing_until_it_recovers(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    printer.fault = "silent"
    printer.offline = True  # an answer given now would read 0x1A
    await client.send(encode_receipt(SALE) + encode_status_request(StatusRequest.PRINTER))
    await printer.wait_until(lambda: printer.held_bytes == len(encode_receipt(SALE)) + 3)
    assert printer.jobs == []

    printer.offline = False
    printer.fault = None
    # The first byte the client ever gets is the answer to this request: the one sent
    # while silent was never answered.
    assert await client.status(StatusRequest.PRINTER) == 0x12
    await printer.wait_for_job(1, TIMEOUT)
    await client.close()
    assert printer.status_requests[StatusRequest.PRINTER] == 1


async def test_drop_resets_open_connections_and_new_ones_until_cleared(
    printer: PrinterEmulator,
) -> None:
    client = await Client.connect(printer)
    assert await client.status(StatusRequest.PRINTER) == 0x12
    printer.fault = "drop"
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await client.reader.readexactly(1)
    await client.close()

    second = await Client.connect(printer)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await second.reader.readexactly(1)
    await second.close()

    printer.fault = None
    third = await Client.connect(printer)
    assert await third.status(StatusRequest.PRINTER) == 0x12
    await third.close()


async def test_a_full_receive_buffer_stops_reading_until_the_printer_prints() -> None:
    async with PrinterEmulator(max_buffer=1024, read_size=512) as printer:
        printer.paper_out = True
        client = await Client.connect(printer)
        wire = encode_receipt(Receipt(header=tuple(f"line {i}" for i in range(400))))
        client.writer.write(wire)
        await printer.wait_until(lambda: printer.held_bytes >= 1024, TIMEOUT)
        assert printer.bytes_received < len(wire)  # the rest waits in TCP buffers
        printer.paper_out = False
        job = await printer.wait_for_job(1, TIMEOUT)
        await client.close()
        assert job.raw == wire


# --- the decoder alone --------------------------------------------------------------------------


def test_the_decoder_gives_the_same_job_whatever_the_chunking() -> None:
    wire = encode_receipt(SALE)
    whole = EscPosDecoder().feed(wire)
    decoder = EscPosDecoder()
    pieces = [event for i in range(0, len(wire), 7) for event in decoder.feed(wire[i : i + 7])]
    assert whole == pieces
    assert [type(e) for e in whole] == [JobEnded]


def test_unknown_commands_are_skipped_and_counted_never_raised() -> None:
    events = EscPosDecoder().feed(b"\x1b\x7fA\x1d\x7fB\n\x1dV\x00")
    assert len(events) == 1
    job = events[0]
    assert isinstance(job, JobEnded)
    assert job.unknown_commands == 2
    assert [b.text for b in job.blocks if isinstance(b, PreviewLine)] == ["AB"]


def test_a_column_mode_image_is_one_graphic_without_blank_lines() -> None:
    from escpos.printer import Dummy

    dummy = Dummy()
    dummy.textln("before")
    dummy.image(Image.new("RGB", (100, 60), "black"), impl="bitImageColumn")
    dummy.textln("after")
    dummy.cut()
    (job,) = EscPosDecoder().feed(dummy.output)
    assert isinstance(job, JobEnded)
    assert [getattr(b, "label", getattr(b, "text", None)) for b in job.blocks] == [
        "before",
        "IMAGE 100x72",  # three 24-dot stripes
        "after",
    ]


# --- the USB side (a pty standing in for /dev/usb/lpN) ------------------------------------------


@contextlib.asynccontextmanager
async def usb_line(port: UsbPort) -> AsyncIterator[UsbLine]:
    """The hub's end of the emulator's USB port, opened as the hub opens /dev/usb/lpN."""
    fd = os.open(port.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    line = UsbLine(fd, UsbDevice(name="lp0", node=Path(port.path), vid="04b8", pid="0202"))
    try:
        yield line
    finally:
        line.close()


async def test_a_usb_port_prints_and_answers_as_the_network_side_does(
    printer: PrinterEmulator,
) -> None:
    port = printer.add_usb_port()
    printer.paper_near_end = True
    async with usb_line(port) as line:
        wire = encode_receipt(SALE)
        await line.send(wire + encode_status_request(StatusRequest.ROLL_PAPER))
        async with asyncio.timeout(TIMEOUT):
            assert await line.receive(1) == b"\x1e"  # near end, after the job was taken
    job = await printer.wait_for_job(1, TIMEOUT)
    assert job.raw == wire, "the pty is raw: no byte translated (no CR added to LF)"
    assert "TOTAL" in job.text


async def test_a_full_receive_buffer_stops_reading_the_usb_port_until_it_prints() -> None:
    async with PrinterEmulator(max_buffer=1024, read_size=512) as printer:
        printer.paper_out = True
        port = printer.add_usb_port()
        wire = encode_receipt(Receipt(header=tuple(f"line {i}" for i in range(20_000))))
        async with usb_line(port) as line:
            sending = asyncio.create_task(line.send(wire))
            await printer.wait_until(lambda: printer.held_bytes >= 1024, TIMEOUT)
            assert not port.reading, "a full buffer stops reading: the printer's BUSY"
            assert printer.held_bytes < 1024 + 512
            assert printer.bytes_received < len(wire)  # the rest waits in the pty and the hub
            printer.paper_out = False
            async with asyncio.timeout(TIMEOUT):
                await sending  # the hub's write waited (add_writer); it did not fail
            assert port.reading
            job = await printer.wait_for_job(1, TIMEOUT)
        assert job.raw == wire


async def test_removing_a_usb_port_is_pulling_the_cable(printer: PrinterEmulator) -> None:
    port = printer.add_usb_port()
    async with usb_line(port) as line:
        printer.remove_usb_port(port)
        with pytest.raises(OSError):  # ConnectionError (EIO) on the hub's open node
            async with asyncio.timeout(TIMEOUT):
                await line.receive(1)
    assert printer.usb_ports == []
