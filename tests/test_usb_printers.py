"""USB receipt printers (Linux usblp): the hub finds ``/dev/usb/lpN`` by the printer's USB
identity in sysfs, prints and reads status through it without blocking, finds the printer
again when it comes back on another ``lpN``, and answers OFFLINE when it is not there.

The sysfs tree is a fake one in tmp_path, laid out as the kernel lays it out (class device
``usbmisc/lpN`` under the USB interface, identity files on the USB device); each ``lpN`` node
is a link to a pseudo-terminal served by the printer emulator with the same ESC/POS engine
as its TCP side (edge/sim/printer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devices.receipt import encode_receipt
from edge.app import Hub
from edge.bus import Topics
from edge.relay.printer import PrinterError, UsbPrinter
from edge.relay.printers import PrintRequest
from edge.relay.usblp import (
    UsbAmbiguous,
    UsbDevice,
    UsbNotFound,
    UsbSelector,
    choose,
    scan,
)
from edge.settings import SettingsError
from edge.sim.printer import PrinterEmulator, UsbPort
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
PRINT = TOPICS.lane_rpc("lane-1", "device.print")
EPSON = ("04b8", "0202")
SERIAL = "X8QF012345"


class FakeUsb:
    """A sysfs ``class/usbmisc`` and a ``/dev/usb`` under ``root``, as the kernel makes them
    for usblp (drivers/usb/core/file.c, drivers/usb/class/usblp.c)::

        sys/class/usbmisc/lpN -> ../../devices/usb1/1-P/1-P:1.0/usbmisc/lpN
        sys/devices/usb1/1-P/{idVendor,idProduct,serial,manufacturer,product}
        sys/devices/usb1/1-P/1-P:1.0/usbmisc/lpN/device -> ../..   (the interface)
        dev/usb/lpN -> the emulator's pty (the node the hub opens)
    """

    def __init__(self, root: Path) -> None:
        self.sysfs = root / "sys" / "class" / "usbmisc"
        self.devices = root / "sys" / "devices" / "usb1"
        self.dev = root / "dev" / "usb"
        for directory in (self.sysfs, self.devices, self.dev):
            directory.mkdir(parents=True, exist_ok=True)
        self._ports: dict[str, Path] = {}

    def plug(
        self,
        lp: str,
        node: str,
        *,
        port: str,
        usb_id: tuple[str, str] = EPSON,
        serial: str | None = SERIAL,
    ) -> None:
        usb = self.devices / f"1-{port}"
        interface = usb / f"1-{port}:1.0"
        lp_dir = interface / "usbmisc" / lp
        lp_dir.mkdir(parents=True)
        (usb / "idVendor").write_text(f"{usb_id[0]}\n")
        (usb / "idProduct").write_text(f"{usb_id[1]}\n")
        (usb / "manufacturer").write_text("EPSON\n")
        (usb / "product").write_text("TM-T88V\n")
        if serial is not None:
            (usb / "serial").write_text(f"{serial}\n")
        (lp_dir / "device").symlink_to(os.path.relpath(interface, lp_dir))
        (self.sysfs / lp).symlink_to(os.path.relpath(lp_dir, self.sysfs))
        (self.dev / lp).symlink_to(node)
        self._ports[lp] = usb

    def unplug(self, lp: str) -> None:
        (self.sysfs / lp).unlink()
        (self.dev / lp).unlink()
        shutil.rmtree(self._ports.pop(lp))

    def settings(self) -> dict[str, Any]:
        return {"devices__usb_sysfs_dir": str(self.sysfs), "devices__usb_dev_dir": str(self.dev)}

    def driver(self, selector: UsbSelector, timeout_s: float = 2.0) -> UsbPrinter:
        return UsbPrinter(selector, sysfs_dir=self.sysfs, dev_dir=self.dev, timeout_s=timeout_s)


@pytest.fixture
def fake_usb(tmp_path: Path) -> FakeUsb:
    return FakeUsb(tmp_path / "usb")


@pytest.fixture
async def usb_printer(fake_usb: FakeUsb) -> AsyncIterator[tuple[PrinterEmulator, UsbPort]]:
    """A TM-T88V-like printer on lp0 (serial :data:`SERIAL`)."""
    async with PrinterEmulator() as emulator:
        port = emulator.add_usb_port()
        fake_usb.plug("lp0", port.path, port="2")
        yield emulator, port


def receipt_command(command_id: str, device: str) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "device": device,
        "receipt": {
            "header": ["Store 1"],
            "lines": [{"text": "Coffee beans 250 g", "amount": "4.50"}],
            "totals": [{"label": "TOTAL", "amount": "4.50"}],
            "barcode": {"symbology": "CODE128", "data": "T-42"},
        },
    }


@contextlib.asynccontextmanager
async def hub_with(
    tmp_path: Path, broker: MosquittoProcess, fake_usb: FakeUsb, printers: list[dict[str, Any]]
) -> AsyncIterator[Hub]:
    settings = hub_settings(
        tmp_path,
        broker_port=broker.port,
        devices__printers=printers,
        devices__timeout_s=2.0,
        **fake_usb.settings(),
    )
    async with run_hub(settings) as hub:
        yield hub


# --- through the hub ------------------------------------------------------------------------


async def test_a_receipt_over_mqtt_comes_out_of_a_usb_printer_as_out_of_a_network_one(
    tmp_path: Path,
    broker: MosquittoProcess,
    fake_usb: FakeUsb,
    usb_printer: tuple[PrinterEmulator, UsbPort],
) -> None:
    """The transport must not change the receipt: same bytes, same printed text."""
    on_usb, _ = usb_printer
    async with PrinterEmulator() as on_lan:
        printers = [
            {"name": "front", "host": "127.0.0.1", "port": on_lan.port},
            {"name": "back", "usb": {"serial": SERIAL}},
        ]
        async with (
            hub_with(tmp_path, broker, fake_usb, printers) as hub,
            lane_client(hub, "lane-1") as lane,
        ):
            for device in ("front", "back"):
                reply = await lane.request(PRINT, receipt_command(f"t1:{device}", device))
                assert reply.ok, reply.error
                assert msgspec.to_builtins(reply)["data"]["state"] == "ready"
            address = hub.printers.printers["back"].driver.address
            assert address == f"usb serial {SERIAL} at {fake_usb.dev / 'lp0'}"
        lan_job = await on_lan.wait_for_job(1)
        usb_job = await on_usb.wait_for_job(1)
    request = msgspec.convert(receipt_command("x", "back"), PrintRequest)
    assert usb_job.raw == lan_job.raw == encode_receipt(request.receipt)
    assert usb_job.text == lan_job.text
    assert "Coffee beans 250 g" in usb_job.text
    assert "[CODE128 T-42]" in usb_job.text
    assert len(on_usb.jobs) == 1


async def test_a_printer_moved_from_lp0_to_lp1_is_found_again_by_its_serial(
    tmp_path: Path,
    broker: MosquittoProcess,
    fake_usb: FakeUsb,
    usb_printer: tuple[PrinterEmulator, UsbPort],
) -> None:
    """Re-plugged into another port after another printer of the same model took lp0: the
    hub must print on *its* printer (found by serial), not on whatever is lp0 now."""
    emulator, first_port = usb_printer
    printers = [{"name": "back", "usb": {"serial": SERIAL, "id": "04B8:0202"}}]
    async with PrinterEmulator() as stranger:
        async with (
            hub_with(tmp_path, broker, fake_usb, printers) as hub,
            lane_client(hub, "lane-1") as lane,
        ):
            first = await lane.request(PRINT, receipt_command("t1", "back"))
            assert first.ok, first.error
            await emulator.wait_for_job(1)

            fake_usb.unplug("lp0")
            emulator.remove_usb_port(first_port)
            fake_usb.plug("lp0", stranger.add_usb_port().path, port="3", serial="OTHER-1")
            fake_usb.plug("lp1", emulator.add_usb_port().path, port="4")

            second = await lane.request(PRINT, receipt_command("t2", "back"))
            assert second.ok, second.error
            await emulator.wait_for_job(2)
            driver = hub.printers.printers["back"].driver
            assert isinstance(driver, UsbPrinter)
            assert driver.found is not None
            assert (driver.found.name, driver.found.serial) == ("lp1", SERIAL)
        assert stranger.jobs == []
        assert stranger.bytes_received == 0, "nothing, not even a status request, went to lp0"


async def test_a_missing_usb_printer_answers_offline_naming_what_it_looked_for(
    tmp_path: Path,
    broker: MosquittoProcess,
    fake_usb: FakeUsb,
    usb_printer: tuple[PrinterEmulator, UsbPort],
) -> None:
    emulator, _ = usb_printer
    printers = [{"name": "back", "usb": {"serial": "NOT-PLUGGED"}}]
    async with (
        hub_with(tmp_path, broker, fake_usb, printers) as hub,
        lane_client(hub, "lane-1") as lane,
    ):
        reply = msgspec.to_builtins(await lane.request(PRINT, receipt_command("t1", "back")))
        assert (reply["error"]["code"], reply["error"]["retryable"]) == ("OFFLINE", True)
        printer = hub.printers.printers["back"]
        await hub.printers.check(printer)
        assert printer.last_error is not None
        assert "no USB printer serial NOT-PLUGGED" in printer.last_error
        assert f"lp0 (04b8:0202 serial {SERIAL})" in printer.last_error  # what is there
    assert emulator.bytes_received == 0


# --- the driver -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "summary"),
    [(None, "ready"), ("paper_near_end", "paper near end"), ("paper_out", "paper out"),
     ("cover_open", "cover open")],
)  # fmt: skip
async def test_status_is_read_through_the_usb_node(
    fake_usb: FakeUsb,
    usb_printer: tuple[PrinterEmulator, UsbPort],
    knob: str | None,
    summary: str,
) -> None:
    emulator, _ = usb_printer
    if knob is not None:
        setattr(emulator, knob, True)
    state = await fake_usb.driver(UsbSelector(serial=SERIAL)).status()
    assert state.summary == summary
    assert emulator.status_requests[1] == 1


async def test_a_job_is_refused_not_held_when_a_usb_printer_is_out_of_paper(
    fake_usb: FakeUsb, usb_printer: tuple[PrinterEmulator, UsbPort]
) -> None:
    emulator, _ = usb_printer
    emulator.paper_out = True
    driver = fake_usb.driver(UsbSelector(serial=SERIAL))
    job = encode_receipt(msgspec.convert(receipt_command("x", "back"), PrintRequest).receipt)
    with pytest.raises(PrinterError) as refused:
        await driver.print(job)
    assert refused.value.code == "PAPER_OUT"
    assert emulator.held_bytes < len(job)
    emulator.paper_out = False
    await driver.print(job)
    assert (await emulator.wait_for_job(1)).raw == job


async def test_a_usb_printer_that_stops_answering_is_offline_and_the_loop_keeps_running(
    fake_usb: FakeUsb, usb_printer: tuple[PrinterEmulator, UsbPort]
) -> None:
    """Reads are non-blocking: while the hub waits for a status byte that never comes, the
    event loop keeps serving others (here: a ticker), and the wait ends at the timeout."""
    emulator, _ = usb_printer
    emulator.fault = "silent"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(PrinterError) as refused:
            await fake_usb.driver(UsbSelector(serial=SERIAL), timeout_s=0.3).status()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert refused.value.code == "OFFLINE"
    assert time.monotonic() - started < 2.0
    assert ticks > 10


async def test_an_answer_that_came_too_late_does_not_answer_the_next_question(
    fake_usb: FakeUsb, usb_printer: tuple[PrinterEmulator, UsbPort]
) -> None:
    """A status answer left unread in the node (its asker gave up) is discarded at the next
    opening: otherwise every later status would be off by one exchange."""
    emulator, port = usb_printer
    emulator.offline = True
    fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\x10\x04\x01")  # answered 0x1A (offline), never read
        await emulator.wait_until(lambda: emulator.status_requests[1] == 1)
    finally:
        os.close(fd)
    emulator.offline = False
    state = await fake_usb.driver(UsbSelector(serial=SERIAL)).status()
    assert state.summary == "ready"


# --- finding the node (sysfs) -------------------------------------------------------------------


@pytest.fixture
def three_printers(fake_usb: FakeUsb) -> FakeUsb:
    fake_usb.plug("lp10", "/dev/null", port="5", serial="B")
    fake_usb.plug("lp2", "/dev/null", port="6", serial=None, usb_id=("0519", "0003"))
    fake_usb.plug("lp0", "/dev/null", port="7", serial="A")
    (fake_usb.sysfs / "hiddev0").mkdir()  # another usbmisc device: not a printer
    return fake_usb


def test_scan_reads_each_lp_identity_from_its_usb_device(three_printers: FakeUsb) -> None:
    found = scan(three_printers.sysfs, three_printers.dev)
    assert [(d.name, d.usb_id, d.serial) for d in found] == [
        ("lp0", "04b8:0202", "A"),
        ("lp2", "0519:0003", ""),  # no iSerial
        ("lp10", "04b8:0202", "B"),
    ]
    assert found[0].node == three_printers.dev / "lp0"
    assert found[0].product == "TM-T88V"


def test_no_usblp_at_all_is_an_empty_scan(tmp_path: Path) -> None:
    assert scan(tmp_path / "nothing", tmp_path) == []


def test_choose_by_serial_by_id_or_both_and_refuse_ambiguity(three_printers: FakeUsb) -> None:
    found = scan(three_printers.sysfs, three_printers.dev)
    by = {
        "serial": UsbSelector.parse(serial="B"),
        "id": UsbSelector.parse(usb_id="0519:0003"),
        "both": UsbSelector.parse(serial="A", usb_id="04B8:0202"),
    }
    assert [choose(selector, found).name for selector in by.values()] == ["lp10", "lp2", "lp0"]
    with pytest.raises(UsbAmbiguous, match="configure the printer's serial"):
        choose(UsbSelector.parse(usb_id="04b8:0202"), found)
    with pytest.raises(UsbNotFound, match="no USB printer 04b8:0202 serial C"):
        choose(UsbSelector.parse(serial="C", usb_id="04b8:0202"), found)
    with pytest.raises(UsbNotFound, match=r"present: none"):
        choose(by["serial"], [])


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({"name": "p"}, "devices.printers[0].host", "either host"),
        ({"name": "p", "host": "10.0.0.9", "usb": {"serial": "A"}}, "devices.printers[0].host",
         "either host"),
        ({"name": "p", "usb": {}}, "devices.printers[0].usb", "serial number"),
        ({"name": "p", "usb": {"id": "4b8:202"}}, "devices.printers[0].usb", "not a USB id"),
        ({"name": "p", "usb": {"serial": "A", "vid": "04b8"}}, "devices.printers[0].usb.vid",
         "unknown key"),
    ],
)  # fmt: skip
def test_a_printer_entry_names_host_or_usb(
    tmp_path: Path, entry: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        hub_settings(tmp_path, broker_port=1883, devices__printers=[entry])
    assert refused.value.key == key
    assert reason in refused.value.reason


def test_usb_device_describes_itself_for_technicians() -> None:
    device = UsbDevice(name="lp3", node=Path("/dev/usb/lp3"), vid="04b8", pid="0202", serial="Z")
    assert device.describe() == "lp3 (04b8:0202 serial Z)"
    assert str(UsbSelector.parse(serial="Z", usb_id="04b8:0202")) == "04b8:0202 serial Z"
