"""The shared devices' status on MQTT: the retained document and the loop that publishes it.

Theory of operation
-------------------
Each kind of device (:mod:`edge.relay.printers`, :mod:`edge.relay.displays`,
:mod:`edge.relay.scales`) checks its devices and debounces what it learns
(:class:`edge.relay.core.StatusDebouncer`); this module only publishes. A
:class:`StatusPublisher` is given, per device name, a callable returning the device's
:class:`DeviceStatus` (None: nothing to say yet) and retains it on :func:`status_topic`:

* when the component calls :meth:`StatusPublisher.changed` (a device went online or offline,
  its flags changed);
* every ``every_s`` anyway (a document that depends on time, e.g. a scale's claim lapsing);
* after every reconnection of the bus (``Bus.connects`` changed), so a broker that restarted
  without its retained store learns every device's state again.

A document equal to the one already published on this connection is not sent again. A
publication that fails (the bus went down meanwhile) is retried after the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Literal

import msgspec

from edge.bus.client import Bus
from edge.bus.errors import BusUnavailable
from edge.bus.topics import Topics


class DeviceStatus(msgspec.Struct, kw_only=True):
    """Retained on ``store/{store}/device/{name}/status`` (docs/protocol.md, devices)."""

    v: int = 1
    device: str
    kind: Literal["printer", "display", "scale"]
    online: bool
    """Debounced: false only after several missed checks in a row."""
    summary: str
    """``ready``, ``offline``, ``paper out``, ``cover open``, ``paper near end``, ...
    (a display: ``ready`` or ``offline``, from its serial line: edge.relay.displays; a scale:
    ``ready``, ``offline``, ``over capacity``, ``faults: ...``: edge.relay.scales)"""
    paper_near_end: bool = False
    paper_out: bool = False
    cover_open: bool = False
    since: str
    """RFC 3339: when ``online`` last changed."""
    claimed_by: str | msgspec.UnsetType | None = msgspec.UNSET
    """A scale only: the lane holding it (null: free)."""
    over_capacity: bool | msgspec.UnsetType = msgspec.UNSET
    """A scale only: its last answer said over capacity (a CAS scale cannot say it)."""
    faults: list[str] | msgspec.UnsetType = msgspec.UNSET
    """A scale only: the internal faults its last answer reported (SCP-01 only)."""


def rfc3339(at: float) -> str:
    """A wall-clock time as the documents write it (``since``)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def status_topic(topics: Topics, name: str) -> str:
    return f"{topics.root}/device/{name}/status"


class StatusPublisher:
    """Retains the status documents of one component's devices (module docstring)."""

    def __init__(
        self,
        bus: Bus | None,
        topics: Topics,
        documents: Mapping[str, Callable[[], DeviceStatus | None]],
        *,
        every_s: float,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._documents = documents
        self._every_s = every_s
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Something a document shows may have changed: publish soon. Safe to call often."""
        self._changed.set()

    async def run(self) -> None:
        """Publish until cancelled; returns at once without a bus."""
        bus = self._bus
        if bus is None:
            return
        published: dict[str, tuple[int, bytes]] = {}
        while True:
            self._changed.clear()
            await bus.wait_connected()
            for name, document in self._documents.items():
                status = document()
                if status is None:
                    continue
                body = msgspec.json.encode(status)
                stamp = (bus.connects, body)
                if published.get(name) == stamp:
                    continue
                try:
                    await bus.publish(status_topic(self._topics, name), body, retain=True)
                    published[name] = stamp
                except BusUnavailable:
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_s):
                    await self._changed.wait()
