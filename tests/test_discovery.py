"""mDNS discovery on loopback only: the hub finds registers and printers, registers find the
hub, and a register on a new address keeps its identity."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge.discovery import (
    HUB_TYPE,
    PRINTER_TYPE,
    REGISTER_TYPE,
    Announcement,
    Discovery,
    HubAdvert,
)

LOOPBACK = ["127.0.0.1"]


@contextlib.asynccontextmanager
async def discovery(advert: HubAdvert | None = None) -> AsyncIterator[asyncio.Queue[Announcement]]:
    found: asyncio.Queue[Announcement] = asyncio.Queue()
    d = Discovery(interfaces=LOOPBACK, advert=advert, on_found=found.put_nowait)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 5)
    try:
        yield found
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def register_info(device: str, address: str, lane: str = "lane-3") -> AsyncServiceInfo:
    return AsyncServiceInfo(
        REGISTER_TYPE,
        f"Register {device}.{REGISTER_TYPE}",
        parsed_addresses=[address],
        port=7000,
        properties={"id": device, "lane": lane, "sw": "pos-4.2"},
        server=f"{device}.local.",
    )


async def next_of(queue: asyncio.Queue[Announcement], kind: str) -> Announcement:
    while True:
        item = await asyncio.wait_for(queue.get(), 10)
        if item.kind == kind:
            return item


async def test_hub_discovers_a_register_and_a_printer() -> None:
    async with discovery() as found:
        peer = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            await peer.async_register_service(register_info("reg-0003", "127.0.0.1"))
            printer = AsyncServiceInfo(
                PRINTER_TYPE,
                f"EPSON TM-T88VI.{PRINTER_TYPE}",
                parsed_addresses=["127.0.0.1"],
                port=9100,
                properties={"ty": "EPSON TM-T88VI"},
                server="tm-t88vi.local.",
            )
            await peer.async_register_service(printer)
            register = await next_of(found, "register")
            assert register.identity == "reg-0003"
            assert register.properties["lane"] == "lane-3"
            assert register.addresses == ("127.0.0.1",)
            assert register.port == 7000
            printed = await next_of(found, "printer")
            assert printed.port == 9100
            assert printed.properties["ty"] == "EPSON TM-T88VI"
        finally:
            await peer.async_close()


async def test_register_on_new_address_keeps_identity() -> None:
    """A register that reboots onto a new DHCP address (goodbye, then a new announcement) is
    reported with the same identity, so the hub updates it instead of creating a twin."""
    async with discovery() as found:
        peer = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            info = register_info("reg-0004", "127.0.0.1")
            await peer.async_register_service(info)
            first = await next_of(found, "register")
            await peer.async_unregister_service(info)
            await peer.async_register_service(register_info("reg-0004", "127.0.0.44"))
            second = await next_of(found, "register")
        finally:
            await peer.async_close()
    assert first.addresses == ("127.0.0.1",)
    assert second.addresses == ("127.0.0.44",)
    assert first.identity == second.identity == "reg-0004"


async def test_registers_find_the_hub_with_its_txt() -> None:
    advert = HubAdvert(store_id="s1", hub_id="hub-1", address="127.0.0.1", mqtt_port=11884,
                       api_port=8780)  # fmt: skip
    async with discovery(advert):
        peer = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            info = AsyncServiceInfo(HUB_TYPE, f"store-edge s1 hub-1.{HUB_TYPE}")
            assert await info.async_request(peer.zeroconf, 5000)
        finally:
            await peer.async_close()
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    assert props == {"v": "1", "store": "s1", "hub": "hub-1", "proto": "1", "mqtt": "11884",
                     "api": "8780"}  # fmt: skip
    assert info.port == 11884
    assert info.parsed_addresses() == ["127.0.0.1"]
