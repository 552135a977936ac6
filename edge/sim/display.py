"""An Epson DM-D customer display on a pseudo-terminal, for tests and the demo.

Theory of operation
-------------------
The emulator owns both ends of a pty: the hub opens the device side (:attr:`path`, like
``/dev/ttyUSB1``) with its serial settings, and the emulator reads the controller side on
the event loop (``loop.add_reader``) and executes every byte with
:class:`devices.display_dmd.DmdDecoder`, the same codec the hub encodes with, seen from the
display's side. Use 8N1: this kernel's ptys refuse 7 data bits and parity
(peripherals.md §4.3); the baud rate is not enforced on a pty.

The emulator keeps the device side open itself, so the hub closing and reopening its line
does not hang the pty up. :meth:`unplug` closes both ends: the path disappears and the hub's
open line fails its next write, as a USB-serial display pulled out of its socket does.

What a test looks at: :attr:`lines` (the glass), :attr:`events` (everything executed,
:data:`devices.display_dmd.DisplayEvent`), :attr:`clears` (screens cleared by ``CLR``: one
per ``display.show``), :attr:`received` (the raw bytes). Waiting, without sleeps:
:meth:`wait_until` wakes on every chunk received and gives up after ``timeout`` seconds
(TimeoutError).

Calling contract: use it as an async context manager, on the loop the hub runs on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from types import TracebackType
from typing import Self

from devices.display_dmd import COLUMNS, ROWS, Cleared, DisplayEvent, DmdDecoder

MAX_RECEIVED = 1 << 20
"""Raw bytes kept for inspection (the oldest are dropped beyond this)."""


class DisplayEmulator:
    def __init__(
        self, *, columns: int = COLUMNS, rows: int = ROWS, encoding: str = "cp437"
    ) -> None:
        self.decoder = DmdDecoder(columns=columns, rows=rows, encoding=encoding)
        self.events: list[DisplayEvent] = []
        self.received = bytearray()
        self._master: int | None = None
        self._slave: int | None = None
        self.path = ""
        self._changed = asyncio.Event()

    @property
    def lines(self) -> list[str]:
        """The text on the glass, one string per row, padded to the width."""
        return self.decoder.lines

    @property
    def text(self) -> list[str]:
        """:attr:`lines` without the padding."""
        return [line.rstrip(" ") for line in self.lines]

    @property
    def clears(self) -> int:
        return sum(isinstance(event, Cleared) for event in self.events)

    @property
    def plugged(self) -> bool:
        return self._master is not None

    async def __aenter__(self) -> Self:
        self._master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug()

    def unplug(self) -> None:
        """The display is gone: both ends closed, the path no longer exists."""
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None
        self._changed.set()

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except OSError:  # pragma: no cover - EIO: no device side open (we hold one)
            return
        self.received += data
        del self.received[:-MAX_RECEIVED]
        self.events.extend(self.decoder.feed(data))
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``condition()`` holds, checked after every chunk received."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()
