"""USB receipt printers on Linux (the ``usblp`` driver): find a printer's ``/dev/usb/lpN`` by
its USB identity, and exchange bytes with it without blocking the event loop.

Theory of operation
-------------------
A USB printer-class device is a character device, ``/dev/usb/lpN``: a write is a job's bytes
(bulk OUT), a read returns what the printer sent back (bulk IN: the one-byte ``DLE EOT``
answers). ``N`` is handed out in plug-in order, so it changes when the printer moves to
another port, when another printer is plugged in first, or across a reboot. The hub therefore
configures a printer by what does not change, its USB **serial number** (iSerial) and/or its
**vendor:product id**, and finds the node again every time it opens it.

Where that identity is (Linux; drivers/usb/core/file.c ``usb_register_dev``,
drivers/usb/class/usblp.c)::

    /sys/class/usbmisc/lpN              the printer interface's class device ("lp%d", class usbmisc)
    /sys/class/usbmisc/lpN/device       -> the USB interface (e.g. 1-2:1.0)
    /sys/class/usbmisc/lpN/device/..    the USB device (1-2): idVendor, idProduct, serial
                                        (absent when the device has no iSerial),
                                        manufacturer, product
    /dev/usb/lpN                        the node (usblp's devnode: "usb/%s")

1. :func:`scan` lists every ``lpN`` of the sysfs directory with its identity (blocking file
   reads: call it in a thread). ``dev_dir`` is where the nodes are (``/dev/usb``; tests point
   it at a directory of links to pseudo-terminals).
2. :func:`choose` (pure) picks the one entry matching a :class:`UsbSelector`: none is
   :class:`UsbNotFound` (unplugged, switched off, or the usblp driver not loaded), several
   is :class:`UsbAmbiguous` (two printers of one model and no serial configured).
3. :func:`open_line` does both and opens the node ``O_RDWR | O_NONBLOCK`` in a worker thread
   (usblp's open may wake the device up), discarding bytes left unread by an earlier,
   abandoned exchange. :class:`UsbLine` then writes and reads on the event loop with
   ``loop.add_writer`` / ``loop.add_reader``: a printer that stops taking data or answering
   never blocks the loop, and the caller bounds every exchange with a timeout.

Errors: :class:`UsbLookupError` (``UsbNotFound``, ``UsbAmbiguous``) when no node can be
chosen; ``OSError`` from the node itself (``EBUSY``: another program, e.g. CUPS, holds the
printer; ``ENODEV`` / ``EIO``: unplugged mid-exchange); :class:`ConnectionError` when the
node reports end of file. A retry can help with all of them once the printer is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_SYSFS_DIR: Final = "/sys/class/usbmisc"
DEFAULT_DEV_DIR: Final = "/dev/usb"

_LP_NAME: Final = re.compile(r"^lp([0-9]+)$")
_USB_ID: Final = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{4})$")
_STALE_LIMIT: Final = 64 * 1024
"""At most this much left-over input is discarded when a node is opened."""
_READ_SIZE: Final = 4096


class UsbLookupError(Exception):
    """No ``/dev/usb/lpN`` can be chosen for a printer; a retry helps once it is plugged in
    (or, for :class:`UsbAmbiguous`, once the configuration names its serial)."""


class UsbNotFound(UsbLookupError):
    pass


class UsbAmbiguous(UsbLookupError):
    pass


@dataclass(frozen=True, slots=True)
class UsbDevice:
    """One ``lpN`` entry of sysfs and what it says about the device behind it."""

    name: str
    """``lp0``, ``lp1``, ..."""
    node: Path
    """The character device to open (``<dev_dir>/<name>``)."""
    vid: str
    """idVendor, 4 lower-case hex digits."""
    pid: str
    serial: str = ""
    """iSerial ("" when the device reports none)."""
    manufacturer: str = ""
    product: str = ""

    @property
    def usb_id(self) -> str:
        return f"{self.vid}:{self.pid}"

    def describe(self) -> str:
        serial = f" serial {self.serial}" if self.serial else ""
        return f"{self.name} ({self.usb_id}{serial})"


@dataclass(frozen=True, slots=True)
class UsbSelector:
    """Which USB printer: its serial number, its vendor:product id, or both (all that is
    given must match)."""

    serial: str = ""
    vid: str = ""
    pid: str = ""

    @classmethod
    def parse(cls, *, serial: str = "", usb_id: str = "") -> UsbSelector:
        """``usb_id`` is ``"vvvv:pppp"`` (hex, any case) or ""; raises ValueError."""
        vid = pid = ""
        if usb_id:
            match = _USB_ID.match(usb_id.strip().lower())
            if match is None:
                raise ValueError(f"{usb_id!r} is not a USB id (vendor:product, e.g. 04b8:0202)")
            vid, pid = match.groups()
        if not serial and not vid:
            raise ValueError("give the printer's USB serial number, its id (vid:pid), or both")
        return cls(serial=serial, vid=vid, pid=pid)

    def matches(self, device: UsbDevice) -> bool:
        if self.serial and device.serial != self.serial:
            return False
        return not self.vid or (device.vid, device.pid) == (self.vid, self.pid)

    def __str__(self) -> str:
        parts = [f"{self.vid}:{self.pid}"] if self.vid else []
        parts += [f"serial {self.serial}"] if self.serial else []
        return " ".join(parts)


def _attribute(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:  # not there (no iSerial), or the device left while we read
        return None


def scan(
    sysfs_dir: str | Path = DEFAULT_SYSFS_DIR, dev_dir: str | Path = DEFAULT_DEV_DIR
) -> list[UsbDevice]:
    """Every ``lpN`` under ``sysfs_dir``, in number order (step 1). Blocking: run it in a
    thread. A missing directory (usblp not loaded, no USB printer ever) is an empty list."""
    sysfs, dev = Path(sysfs_dir), Path(dev_dir)
    try:
        names = os.listdir(sysfs)
    except (FileNotFoundError, NotADirectoryError):
        return []
    numbered = sorted((int(m.group(1)), name) for name in names if (m := _LP_NAME.match(name)))
    found: list[UsbDevice] = []
    for _, name in numbered:
        # "device" is the USB interface; its parent directory is the USB device. The path is
        # resolved by the kernel (physically), so ".." is the real parent of the link target.
        usb = sysfs / name / "device" / ".."
        vid, pid = _attribute(usb / "idVendor"), _attribute(usb / "idProduct")
        if not vid or not pid:
            continue  # gone while scanning, or not a USB device
        found.append(
            UsbDevice(
                name=name,
                node=dev / name,
                vid=vid.lower(),
                pid=pid.lower(),
                serial=_attribute(usb / "serial") or "",
                manufacturer=_attribute(usb / "manufacturer") or "",
                product=_attribute(usb / "product") or "",
            )
        )
    return found


def choose(selector: UsbSelector, devices: Sequence[UsbDevice], *, where: str = "") -> UsbDevice:
    """The one device ``selector`` names (step 2). Pure."""
    matching = [device for device in devices if selector.matches(device)]
    if len(matching) == 1:
        return matching[0]
    seen = ", ".join(device.describe() for device in devices) or "none"
    place = f" under {where}" if where else ""
    if not matching:
        raise UsbNotFound(f"no USB printer {selector}{place} (present: {seen})")
    names = ", ".join(device.describe() for device in matching)
    raise UsbAmbiguous(
        f"{len(matching)} USB printers match {selector}{place}: {names}; "
        "configure the printer's serial number to tell them apart"
    )


def _open_node(node: Path) -> int:
    """Open ``node`` non-blocking and discard input left over from an earlier exchange (a
    status answer that came after its asker gave up must not answer the next question)."""
    fd = os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        dropped = 0
        while dropped < _STALE_LIMIT:
            try:
                chunk = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:
        os.close(fd)
        raise
    return fd


def find(
    selector: UsbSelector,
    sysfs_dir: str | Path = DEFAULT_SYSFS_DIR,
    dev_dir: str | Path = DEFAULT_DEV_DIR,
) -> UsbDevice:
    """Steps 1 and 2: the node ``selector`` names now. Blocking: run it in a thread."""
    return choose(selector, scan(sysfs_dir, dev_dir), where=str(sysfs_dir))


class UsbLine:
    """One open ``lpN`` node, driven on the event loop (step 3). Not safe for two concurrent
    writers or readers: the caller holds one exchange at a time (the printer's lock)."""

    def __init__(self, fd: int, device: UsbDevice) -> None:
        self._fd = fd
        self.device = device
        self._loop = asyncio.get_running_loop()
        self._input = bytearray()

    async def send(self, data: bytes) -> None:
        """Write all of ``data``, waiting for the device to take more whenever it is full."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._ready(self._loop.add_writer, self._loop.remove_writer)
                continue
            view = view[written:]

    async def receive(self, size: int) -> bytes:
        """Exactly ``size`` bytes. ConnectionError at end of file; OSError from the node."""
        while len(self._input) < size:
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                await self._ready(self._loop.add_reader, self._loop.remove_reader)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # a pty's other side closed; usblp unplugged
                    raise ConnectionError(f"{self.device.node}: {exc.strerror}") from None
                raise
            if not chunk:
                raise ConnectionError(f"{self.device.node}: end of file")
            self._input += chunk
        answer = bytes(self._input[:size])
        del self._input[:size]
        return answer

    async def _ready(
        self,
        add: Callable[..., object],
        remove: Callable[[int], object],
    ) -> None:
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(self._fd, wake)
        try:
            await ready
        finally:
            remove(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


@contextlib.asynccontextmanager
async def open_line(
    selector: UsbSelector,
    *,
    sysfs_dir: str | Path = DEFAULT_SYSFS_DIR,
    dev_dir: str | Path = DEFAULT_DEV_DIR,
    on_found: Callable[[UsbDevice], None] | None = None,
) -> AsyncIterator[UsbLine]:
    """Find the printer again and open its node (steps 1-3); closed when the block ends.
    ``on_found`` learns which node was chosen before it is opened (so also when the open
    fails). Raises :class:`UsbLookupError` or ``OSError``."""
    device = await asyncio.to_thread(find, selector, sysfs_dir, dev_dir)
    if on_found is not None:
        on_found(device)
    opening = asyncio.ensure_future(asyncio.to_thread(_open_node, device.node))
    try:
        fd = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The thread cannot be stopped: close what it opens once it is done.
        opening.add_done_callback(_close_abandoned)
        raise
    line = UsbLine(fd, device)
    try:
        yield line
    finally:
        line.close()


def _close_abandoned(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        os.close(future.result())
