"""mDNS / DNS-SD: advertise the hub, browse registers and network printers (python-zeroconf).

Theory of operation
-------------------
- The hub advertises ``<store> <hub>._storehub._tcp.local.`` on the MQTT LAN port with TXT
  ``v`` (TXT format version), ``store``, ``hub``, ``proto`` (register protocol version),
  ``mqtt`` (plain port), ``api`` (HTTP port) and, once devices are enrolled over TLS, ``tls``
  and ``ca`` (the hub CA's SHA-256 fingerprint).
- It browses registers (``_posreg._tcp.local.``, TXT ``id`` = stable device id, ``lane``,
  ``sw``) and raw-socket printers (``_pdl-datastream._tcp.local.``, port 9100; TXT ``ty`` =
  make and model). Every resolved service becomes an :class:`Announcement` keyed by a stable
  identity (the register's ``id``; for a printer its instance name), so the same device on a
  new address is an update, not a new device.
- Interfaces are explicit (a list of IPv4 addresses): binding every interface blindly is the top
  source of python-zeroconf trouble (multi-homed hosts, container bridges, #54/#330). Tests
  bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger(__name__)

HUB_TYPE = "_storehub._tcp.local."
REGISTER_TYPE = "_posreg._tcp.local."
PRINTER_TYPE = "_pdl-datastream._tcp.local."
TXT_VERSION = "1"
PROTOCOL_VERSION = "1"
RESOLVE_TIMEOUT_MS = 3000


@dataclass(frozen=True, slots=True)
class Announcement:
    kind: Literal["register", "printer"]
    identity: str
    """Stable key: a register's ``id`` TXT value; a printer's service instance name."""
    name: str
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubAdvert:
    store_id: str
    hub_id: str
    address: str
    mqtt_port: int
    api_port: int
    tls_port: int | None = None
    ca_fingerprint: str | None = None

    def service_info(self) -> AsyncServiceInfo:
        props = {
            "v": TXT_VERSION,
            "store": self.store_id,
            "hub": self.hub_id,
            "proto": PROTOCOL_VERSION,
            "mqtt": str(self.mqtt_port),
            "api": str(self.api_port),
        }
        if self.tls_port is not None:
            props["tls"] = str(self.tls_port)
        if self.ca_fingerprint:
            props["ca"] = self.ca_fingerprint
        # Instance names are at most 63 bytes (RFC 6763 §4.1.1).
        instance = f"store-edge {self.store_id} {self.hub_id}"[:63]
        return AsyncServiceInfo(
            HUB_TYPE,
            f"{instance}.{HUB_TYPE}",
            parsed_addresses=[self.address],
            port=self.mqtt_port,
            properties=props,
            server=f"{self.hub_id}.local.",
        )


def _text(props: dict[bytes, bytes | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in props.items():
        try:
            out[key.decode()] = (value or b"").decode()
        except UnicodeDecodeError:
            continue
    return out


def announcement_from(service_type: str, info: AsyncServiceInfo) -> Announcement | None:
    """Map a resolved service to an announcement; None when it lacks what we need."""
    props = _text(info.properties)
    addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
    if not addresses or info.port is None:
        return None
    if service_type == REGISTER_TYPE:
        identity = props.get("id", "")
        if not identity:
            log.warning("discovery: register %s announces no id; ignored", info.name)
            return None
        return Announcement("register", identity, info.name, addresses, info.port, props)
    return Announcement("printer", info.name, info.name, addresses, info.port, props)


class Discovery:
    """Advertise the hub and report registers and printers as they come and go.

    Calling contract: ``on_found`` / ``on_lost`` run on the event loop and must not block.
    """

    def __init__(
        self,
        *,
        interfaces: list[str],
        advert: HubAdvert | None,
        on_found: Callable[[Announcement], None],
        on_lost: Callable[[str, str], None] | None = None,
        browse: tuple[str, ...] = (REGISTER_TYPE, PRINTER_TYPE),
    ) -> None:
        if not interfaces:
            raise ValueError("discovery needs explicit interface addresses")
        self._interfaces = interfaces
        self._advert = advert
        self._on_found = on_found
        self._on_lost = on_lost
        self._browse = browse
        self._tg: asyncio.TaskGroup | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        aiozc = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        info = self._advert.service_info() if self._advert else None
        browser: AsyncServiceBrowser | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if info is not None:
                    await aiozc.async_register_service(info)
                browser = AsyncServiceBrowser(
                    aiozc.zeroconf, list(self._browse), handlers=[self._on_change]
                )
                self.ready.set()
                await asyncio.Event().wait()  # until cancelled
        finally:
            self._tg = None
            if browser is not None:
                await browser.async_cancel()
            if info is not None:
                await aiozc.async_unregister_service(info)
            await aiozc.async_close()

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            if self._on_lost is not None:
                self._on_lost(service_type, name)
            return
        if self._tg is not None:
            self._tg.create_task(self._resolve(zeroconf, service_type, name))

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            log.info("discovery: %s did not resolve", name)
            return
        announcement = announcement_from(service_type, info)
        if announcement is not None:
            self._on_found(announcement)
