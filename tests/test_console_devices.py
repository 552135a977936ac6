"""The console's Devices page drives every kind of shared device: a drawer test on the
printer, a scale reading (refused while a lane holds the scale), a test text on the customer
display; each on a real hub with the emulators (TCP printer, pty scale, pty display)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge.app import Hub
from edge.sim.display import DisplayEmulator
from edge.sim.printer import PrinterEmulator
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub
from tests.test_console_pages import console_session, csrf_of
from tests.test_scales import TOPICS, ToledoOnPty


@pytest.fixture
async def devices_hub(tmp_path: Path, broker: MosquittoProcess) -> AsyncIterator[
    tuple[Hub, PrinterEmulator, ToledoOnPty, DisplayEmulator]
]:  # fmt: skip
    async with PrinterEmulator() as printer, DisplayEmulator() as display:
        with ToledoOnPty() as scale:
            settings = hub_settings(
                tmp_path,
                broker_port=broker.port,
                devices__printers=[{"name": "front", "host": "127.0.0.1", "port": printer.port}],
                devices__scales=[{"name": "deli", "port": scale.path, "bytesize": 8,
                                  "parity": "N", "poll_s": 0.01, "settle_s": 0.5}],
                devices__displays=[{"name": "pole", "port": display.path,
                                    "profile": "DM-D110"}],
                devices__timeout_s=1.0,
            )  # fmt: skip
            async with run_hub(settings) as hub:
                yield hub, printer, scale, display


async def act(http: aiohttp.ClientSession, hub: Hub, device: str, action: str) -> str:
    """Press a device's button; the notice the page comes back with."""
    csrf = await csrf_of(http, f"{hub.http.url}/devices")
    async with http.post(
        f"{hub.http.url}/devices/{device}/{action}", data={"csrf": csrf}, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        location = response.headers["Location"]
    notice = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("notice", [""])
    return notice[0]


async def test_drawer_scale_and_display_from_the_devices_page(
    devices_hub: tuple[Hub, PrinterEmulator, ToledoOnPty, DisplayEmulator],
) -> None:
    hub, printer, _scale, display = devices_hub
    async with console_session(hub) as http:
        async with http.get(f"{hub.http.url}/devices") as response:
            page = await response.text()
        for device, action in (("front", "drawer-test"), ("deli", "weigh"),
                               ("pole", "test-display")):  # fmt: skip
            assert f'data-device="{device}"' in page
            assert f"/devices/{device}/{action}" in page

        assert "drawer kicked" in await act(http, hub, "front", "drawer-test")
        await printer.wait_until(lambda: printer.drawer_kicks[2] == 1)

        assert await act(http, hub, "deli", "weigh") == "deli: 1.234 kg (stable)"
        # A lane weighing holds the scale: the technician is told who, the lane keeps it.
        async with lane_client(hub, "lane-2") as lane:
            held = await lane.request(TOPICS.lane_rpc("lane-2", "scale.weigh"), {"device": "deli"})
            assert held.ok
            notice = await act(http, hub, "deli", "weigh")
        assert "CLAIMED_BY_OTHER_LANE" in notice

        assert await act(http, hub, "pole", "test-display") == "pole: test text shown"
        await display.wait_until(lambda: display.text[0] == "store-edge test")
        assert display.text[1].startswith("by console:")
