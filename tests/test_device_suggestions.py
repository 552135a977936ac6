"""Which model each printer is, as the technician sees it: the console's Devices page and
``edge device list`` suggest a device profile for a network printer found on mDNS (configured
or not) and for a configured USB printer, on a real hub with discovery bound to loopback, a
TCP printer emulator and a USB one behind a fake sysfs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge.app import Hub
from edge.discovery import PRINTER_TYPE
from edge.sim.printer import PrinterEmulator, UsbPort
from tests.conftest import MosquittoProcess, hub_settings, run_hub
from tests.test_cli import _edge
from tests.test_console_pages import console_session
from tests.test_usb_printers import SERIAL, FakeUsb, fake_usb, usb_printer

__all__ = ["fake_usb", "usb_printer"]  # fixtures

LOOPBACK = ["127.0.0.1"]


def advert(instance: str, port: int, make_and_model: str) -> AsyncServiceInfo:
    """A raw-socket printer's advert (Bonjour Printing: ``ty`` = make and model)."""
    return AsyncServiceInfo(
        PRINTER_TYPE,
        f"{instance}.{PRINTER_TYPE}",
        parsed_addresses=["127.0.0.1"],
        port=port,
        properties={"ty": make_and_model, "product": f"({make_and_model})"},
        server=f"{instance.replace(' ', '-').lower()}.local.",
    )


async def discovered(hub: Hub, count: int) -> None:
    """Until the hub lists ``count`` printers found on mDNS."""
    async with asyncio.timeout(10):
        while True:
            changed = hub.printer_discovered
            if len(hub.discovered_printers) == count:
                return
            await changed.wait()


def row_of(page: str, device: str) -> str:
    """The Devices page's table row of ``device``."""
    return page.split(f'<tr data-device="{device}">')[1].split("</tr>")[0]


async def test_discovered_and_usb_printers_show_the_profile_they_look_like(
    tmp_path: Path,
    broker: MosquittoProcess,
    fake_usb: FakeUsb,
    usb_printer: tuple[PrinterEmulator, UsbPort],
) -> None:
    async with PrinterEmulator() as on_lan:
        settings = hub_settings(
            tmp_path,
            broker_port=broker.port,
            discovery__enabled=True,
            discovery__interfaces=LOOPBACK,
            devices__printers=[
                {"name": "front", "host": "127.0.0.1", "port": on_lan.port},
                {"name": "back", "usb": {"serial": SERIAL}},
            ],
            **fake_usb.settings(),
        )
        async with run_hub(settings) as hub:
            peer = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
            try:
                # One printer nobody configured yet; one that is "front" (same address).
                await peer.async_register_service(advert("EPSON TM-T88VI", 9100, "EPSON TM-T88VI"))
                await peer.async_register_service(advert("Front", on_lan.port, "EPSON TM-T88V"))
                await discovered(hub, 2)
                await hub.printers.check(hub.printers.printers["back"])  # found on lp0 once

                async with console_session(hub) as http:
                    async with http.get(f"{hub.http.url}/devices") as response:
                        page = await response.text()
                code, out, err = await _edge("device", "--url", hub.http.url, "list", "--json")
                assert code == 0, err
                listed = {d["name"]: d for d in json.loads(out)["peripherals"]}
                code, human, err = await _edge("device", "--url", hub.http.url, "list")
                assert code == 0, err
                # The unconfigured printer is unplugged (it says goodbye on mDNS): it leaves
                # the list; "front" stays configured.
                await peer.async_unregister_service(
                    advert("EPSON TM-T88VI", 9100, "EPSON TM-T88VI")
                )
                await discovered(hub, 1)
                code, out, err = await _edge("device", "--url", hub.http.url, "list", "--json")
                after = {d["name"] for d in json.loads(out)["peripherals"]}
            finally:
                await peer.async_close()

    # The page: a column with the model, the runner-up and the reasons on hover.
    new = row_of(page, "EPSON TM-T88VI")
    assert 'data-suggested="TM-T88VI"' in new
    assert "discovered, not configured" in new
    assert "mDNS TXT ty=&#39;EPSON TM-T88VI&#39;" in new
    assert 'data-suggested="TM-T88V"' in row_of(page, "front")
    assert 'data-suggested="TM-T88V"' in row_of(page, "back")
    assert page.count("<tr data-device=") == 3, "the advert of 'front' is not a second printer"

    # The CLI: the same rows.
    suggested: dict[str, Any] = {name: d["suggested"] for name, d in listed.items()}
    assert set(suggested) == {"front", "back", "EPSON TM-T88VI"}
    assert suggested["EPSON TM-T88VI"]["model"] == "TM-T88VI"
    assert suggested["EPSON TM-T88VI"]["others"] == ["TM-T88V"]
    assert suggested["EPSON TM-T88VI"]["ambiguous"] is False
    assert suggested["front"]["model"] == "TM-T88V"
    assert suggested["back"]["model"] == "TM-T88V"
    assert suggested["back"]["reasons"] == ["USB id 04b8:0202 (unconfirmed)"]
    assert listed["back"]["address"] == f"usb serial {SERIAL} at {fake_usb.dev / 'lp0'}"
    assert "no enrolled devices: the hub has no identity yet" in human
    assert "TM-T88VI (unconfirmed): mDNS TXT ty='EPSON TM-T88VI'" in human
    assert after == {"front", "back"}, "a printer gone from the network is not listed"
