"""A network ESC/POS receipt printer (port-9100 style) for tests and the demo, with optional
USB ports on pseudo-terminals.

Theory of operation
-------------------
The emulator listens on ``127.0.0.1`` (port 0 = ephemeral, see :attr:`PrinterEmulator.port`)
and reads a raw byte stream from every client, as a JetDirect port-9100 printer does.
:meth:`PrinterEmulator.add_usb_port` gives it a USB side as well: a pseudo-terminal whose
device path stands in for the ``/dev/usb/lpN`` a USB printer is on Linux (usblp: a byte
stream both ways, the job out, the ``DLE EOT`` answers back). Whatever the transport, each
chunk received goes through the same two paths (``PrinterEmulator._take``):

1.  **The receive buffer.** The chunk is appended to it, and the print engine
    (:class:`EscPosDecoder`, sans-IO) executes the buffer at once if the printer *can
    print*: not offline, paper not out, cover closed and not hung (``fault="silent"``).
2.  **Real-time requests.** Then each ``DLE EOT n`` (``10 04 n``, n = 1..4) in the chunk is
    answered with one status byte built with :mod:`devices.escpos_status` (the codec the
    driver decodes with), even while the printer is offline or holding data (peripherals.md
    §1.3). Executing first makes the answer a barrier: a client holding its status byte
    knows that everything it sent before the request has been executed (or is held). Like a
    real Epson (§1.3: "bit-image data can accidentally contain ``10 04 n`` and be
    executed"), the scan does not know command boundaries: image bytes that happen to read
    ``10 04 n`` get an answer too. The decoder leaves a status request found between
    commands out of the job's raw bytes.

**Held, not discarded.** While the printer cannot print, received data stays in the receive
buffer and prints when the condition clears, as the ESC/POS receive buffer behaves: paper
end and cover open put an Epson offline (§1.3, "Many printers simply go offline at paper
end"; n = 2 bit 5 "printing stopped: paper end") and it resumes with the data it holds when
paper is loaded and the cover closed; only ``ESC @`` or a power cycle clears its buffers.
The receive buffer is bounded (``max_buffer`` bytes): when full, the emulator stops reading,
so TCP flow control pushes back on the sender, as a printer's BUSY does. A real printer's
buffer is a few KiB; the default here is larger so that tests can hold whole receipts.

**Jobs.** The decoder splits the stream into jobs: a job ends at a cut (``GS V …``, or the
obsolete ``ESC i`` / ``ESC m``). Each :class:`PrintedJob` keeps its raw bytes, the blocks of a
preview (text lines with their alignment and boldness; images, barcodes and QR codes as
labelled boxes), its cuts and its drawer kicks per pin. Its plain-text preview is
:attr:`PrintedJob.text`; :meth:`PrintedJob.preview_png` renders a PNG with Pillow on first
call. Data that never reaches a cut stays in the unfinished job; a drawer kick is counted in
:attr:`PrinterEmulator.drawer_kicks` when the print engine executes it, cut or not (a job
that is never cut cannot hold back a drawer).

**State knobs** (plain attributes, set from any coroutine on the emulator's loop; a change
takes effect at once, for the next status answer and for held data):

==================  =========================================================================
knob                effect
==================  =========================================================================
``paper_near_end``  n=4 answers ``0x1E``; printing goes on
``paper_out``       n=4 ``0x72``, n=2 bit 5, n=1 offline (``0x1A``); nothing prints (held)
``cover_open``      n=2 ``0x16``, n=1 offline; nothing prints (held)
``offline``         n=1 ``0x1A``; nothing prints (held)
``drawer_pin3_high``  n=1 bit 2 (``0x16``): the drawer switch level (open or closed per wiring)
``fault``           ``None``; ``"drop"``: open connections are reset (RST) and new ones reset
                    on accept; ``"silent"``: a hung printer, data is read and held, nothing is
                    answered or printed (a request sent meanwhile is never answered)
``next_job_fault``  ``"paper_out"`` or ``"silent"`` strikes when the next job arrives (before it
                    prints: it is held until the knob it set is cleared)
==================  =========================================================================

Waiting (no sleeps): :meth:`PrinterEmulator.wait_for_job` returns the Nth job once it is
printed and :meth:`PrinterEmulator.wait_until` waits for any condition on the emulator; both
wake on every change and give up after ``timeout`` seconds (TimeoutError).

Concurrency: one task per connection, started by ``asyncio.start_server`` and tracked here;
:meth:`PrinterEmulator.aclose` resets every connection, awaits those tasks (a reset ends
them) and closes the listener. Several clients may connect at once; their bytes share one receive
buffer in arrival order (interleaved jobs print interleaved, as on a real printer that
accepts more than one client, §1.5). Not re-entrant: an emulator runs once.

**USB ports.** The emulator owns both ends of each pty: it reads the controller side on the
event loop (``loop.add_reader``) and keeps the device side open itself, so the hub opening and
closing :attr:`UsbPort.path` for every exchange, as it does ``/dev/usb/lpN``, never hangs the
pty up. The pty is raw (no echo, no newline translation): a byte pipe, as usblp is. A full
receive buffer stops reading the pty (its kernel buffer then fills and the hub's writes wait).
:meth:`PrinterEmulator.remove_usb_port` closes both ends, as pulling the cable does.
``fault = "drop"`` concerns TCP connections only; ``"silent"`` and the knobs apply to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import tty
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self, TypeAlias

from devices.escpos_preview import (
    DLE,
    EOT,
    DecoderEvent,
    DrawerKicked,
    EscPosDecoder,
    JobEnded,
    PreviewBlock,
    PreviewGraphic,
    PreviewLine,
    PrintedJob,
    render_preview_png,
)
from devices.escpos_status import (
    ErrorCause,
    OfflineCause,
    PrinterStatus,
    RollPaperStatus,
    StatusRequest,
)

__all__ = [
    "DecoderEvent",
    "DrawerKicked",
    "EscPosDecoder",
    "JobEnded",
    "PreviewBlock",
    "PreviewGraphic",
    "PreviewLine",
    "PrintedJob",
    "PrinterEmulator",
    "PrinterFault",
    "UsbPort",
    "render_preview_png",
]

PrinterFault: TypeAlias = Literal["drop", "silent"]

# struct linger {int l_onoff; int l_linger;} = {1, 0}: close() sends RST (socket(7)).
_LINGER_RST: Final = struct.pack("ii", 1, 0)

# --- the network printer --------------------------------------------------------------------


class _RealtimeScanner:
    """Finds ``DLE EOT n`` (n = 1..4) in a stream cut into arbitrary chunks."""

    def __init__(self) -> None:
        self._state = 0  # 0: nothing, 1: after DLE, 2: after DLE EOT

    def feed(self, data: bytes) -> list[StatusRequest]:
        found: list[StatusRequest] = []
        for byte in data:
            if self._state == 2 and 1 <= byte <= 4:
                found.append(StatusRequest(byte))
                self._state = 0
            elif self._state == 1 and byte == EOT:
                self._state = 2
            else:
                self._state = 1 if byte == DLE else 0
        return found


class _Knob:
    """A bool state knob: setting it takes effect at once (status answers, held data)."""

    def __set_name__(self, owner: type[PrinterEmulator], name: str) -> None:
        self._attribute = f"_knob_{name}"

    def __get__(self, instance: PrinterEmulator | None, owner: type | None = None) -> bool:
        return bool(getattr(instance, self._attribute, False))

    def __set__(self, instance: PrinterEmulator, value: bool) -> None:
        setattr(instance, self._attribute, bool(value))
        instance._state_changed()


class PrinterEmulator:
    """A network receipt printer on loopback: ``async with PrinterEmulator() as printer:``.

    See the module docstring for what it answers, when it prints and its knobs.
    """

    paper_near_end = _Knob()
    paper_out = _Knob()
    next_job_fault: Literal["paper_out", "silent"] | None = None
    """Scripted trouble during the next job (the data holding print bytes): ``"paper_out"``
    (the roll ends mid-job: the job is held, the status answers say paper end) or
    ``"silent"`` (the printer hangs after taking the job: nothing more is answered)."""
    cover_open = _Knob()
    offline = _Knob()
    drawer_pin3_high = _Knob()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        columns: int = 42,
        max_buffer: int = 1 << 20,
        read_size: int = 4096,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.columns = columns
        self.max_buffer = max_buffer
        self._read_size = read_size
        self._fault: PrinterFault | None = None
        self._decoder = EscPosDecoder()
        self._held = bytearray()
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._changed = asyncio.Event()
        self._started = False
        self._closing = False
        self.jobs: list[PrintedJob] = []
        self.drawer_kicks: Counter[int] = Counter()
        """Pin → kicks executed so far (in finished jobs or not)."""
        self.status_requests: Counter[StatusRequest] = Counter()
        self.bytes_received = 0
        self.connections_accepted = 0
        self.usb_ports: list[UsbPort] = []

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the printer emulator is not started")
        return self._port

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("a PrinterEmulator runs once")
        self._started = True
        self._server = await asyncio.start_server(self._serve, self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        # Reset the connections and let their tasks end by themselves: cancelling a task
        # that asyncio.start_server started makes Python 3.11's stream callback log the
        # CancelledError as an error.
        self._closing = True
        for usb in list(self.usb_ports):
            self.remove_usb_port(usb)
        if self._server is not None:
            self._server.close()
        for writer in self._connections.values():
            self._reset(writer)
        self._notify()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- state ------------------------------------------------------------------------------

    @property
    def fault(self) -> PrinterFault | None:
        return self._fault

    @fault.setter
    def fault(self, value: PrinterFault | None) -> None:
        self._fault = value
        if value == "drop":
            for writer in self._connections.values():
                self._reset(writer)
        self._state_changed()

    @property
    def can_print(self) -> bool:
        return not (self.offline or self.paper_out or self.cover_open or self._fault == "silent")

    @property
    def open_connections(self) -> int:
        """TCP clients connected now."""
        return len(self._connections)

    @property
    def held_bytes(self) -> int:
        """Bytes received and not yet executed (held while the printer cannot print)."""
        return len(self._held)

    @property
    def unfinished_job(self) -> bytes:
        """Bytes executed since the last cut."""
        return self._decoder.unfinished

    def status_byte(self, request: StatusRequest) -> int:
        """The answer to ``DLE EOT request`` in the current state."""
        if request is StatusRequest.PRINTER:
            offline = self.offline or self.paper_out or self.cover_open
            return PrinterStatus(drawer_pin3_high=self.drawer_pin3_high, offline=offline).to_byte()
        if request is StatusRequest.OFFLINE_CAUSE:
            return OfflineCause(
                cover_open=self.cover_open, stopped_at_paper_end=self.paper_out
            ).to_byte()
        if request is StatusRequest.ERROR_CAUSE:
            return ErrorCause().to_byte()
        return RollPaperStatus(near_end=self.paper_near_end, paper_end=self.paper_out).to_byte()

    # --- waiting ----------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate()`` is true; it is re-checked after every change (bytes
        received, job printed, drawer kicked, knob set). TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            await self._wait(predicate)

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_for_job(self, number: int, timeout: float = 5.0) -> PrintedJob:
        """The ``number``-th job (1-based) once it is printed."""
        await self.wait_until(lambda: len(self.jobs) >= number, timeout)
        return self.jobs[number - 1]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the engine -------------------------------------------------------------------------

    def _state_changed(self) -> None:
        self._print_held()
        for usb in self.usb_ports:
            usb.resume_if_room()
        self._notify()

    def _take(self, chunk: bytes, scanner: _RealtimeScanner) -> bytes:
        """One chunk from a client, whatever its transport (module docstring): held and
        executed if the printer can print, then the answers to the real-time requests in it,
        to send back (b"": nothing to answer). ``scanner`` is the client's own."""
        self.bytes_received += len(chunk)
        requests = scanner.feed(chunk)
        if self.next_job_fault is not None and len(chunk) > 3 * len(requests):
            # A job arrives and the scripted trouble strikes while it prints: it is
            # held (printed when the trouble is cleared), the answers say why.
            if self.next_job_fault == "paper_out":
                self.paper_out = True
            else:
                self.fault = "silent"
            self.next_job_fault = None
        # Execute first (if the printer can), then answer: a client that has its
        # status byte knows that everything it sent before the request was executed.
        self._held += chunk
        self._state_changed()
        if not requests or self._fault is not None:
            return b""
        for request in requests:
            self.status_requests[request] += 1
        return bytes(self.status_byte(r) for r in requests)

    @property
    def has_room(self) -> bool:
        """The receive buffer can take more (else reading stops: the printer's BUSY)."""
        return len(self._held) < self.max_buffer

    # --- USB ports ----------------------------------------------------------------------------

    def add_usb_port(self) -> UsbPort:
        """A USB side on a new pseudo-terminal (module docstring, "USB ports"); its
        :attr:`UsbPort.path` stands in for ``/dev/usb/lpN``."""
        if not self._started or self._closing:
            raise RuntimeError("start the printer emulator first")
        usb = UsbPort(self)
        self.usb_ports.append(usb)
        return usb

    def remove_usb_port(self, usb: UsbPort) -> None:
        """Unplug: both ends of the pty are closed and the path disappears."""
        if usb in self.usb_ports:
            self.usb_ports.remove(usb)
            usb.close()
            self._notify()

    def _print_held(self) -> None:
        if not self.can_print or not self._held:
            return
        data = bytes(self._held)
        self._held.clear()
        for event in self._decoder.feed(data):
            if isinstance(event, DrawerKicked):
                self.drawer_kicks[event.pin] += 1
            else:
                self.jobs.append(
                    PrintedJob(
                        number=len(self.jobs) + 1,
                        raw=event.raw,
                        blocks=event.blocks,
                        cuts=event.cuts,
                        drawer_kicks=event.drawer_kicks,
                        unknown_commands=event.unknown_commands,
                        columns=self.columns,
                    )
                )

    # --- connections ------------------------------------------------------------------------

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.connections_accepted += 1
        scanner = _RealtimeScanner()
        try:
            if self._fault == "drop" or self._closing:
                self._reset(writer)
                return
            while True:
                # A full receive buffer stops reading: TCP flow control is the printer's BUSY.
                await self._wait(lambda: self._closing or self.has_room)
                chunk = b"" if self._closing else await reader.read(self._read_size)
                if not chunk:
                    break
                answers = self._take(chunk, scanner)
                if answers:
                    writer.write(answers)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            del self._connections[task]
            writer.close()
            self._notify()


class UsbPort:
    """The printer's USB side on a pseudo-terminal (module docstring, "USB ports"). Made by
    :meth:`PrinterEmulator.add_usb_port`; runs on the loop it was made on."""

    def __init__(self, printer: PrinterEmulator) -> None:
        self._printer = printer
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # shared by every opener of the device side
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        """The device side: what the hub opens as it opens ``/dev/usb/lpN``."""
        self._scanner = _RealtimeScanner()
        self._reading = False
        self.plugged = True
        self._resume()

    @property
    def reading(self) -> bool:
        """The emulator reads the pty now (False: its receive buffer is full, or unplugged)."""
        return self._reading

    def _resume(self) -> None:
        if self.plugged and not self._reading:
            self._loop.add_reader(self._master, self._readable)
            self._reading = True

    def resume_if_room(self) -> None:
        if self._printer.has_room:
            self._resume()

    def _readable(self) -> None:
        try:
            chunk = os.read(self._master, self._printer._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no device side open (cannot happen while we hold it)
            return
        if not chunk:
            return
        answers = self._printer._take(chunk, self._scanner)
        if answers:
            # A few bytes; if the hub left thousands unread, the pty is full and these are
            # lost, as a printer's answers are when nobody reads them.
            with contextlib.suppress(BlockingIOError):
                os.write(self._master, answers)
        if not self._printer.has_room and self._reading:
            self._loop.remove_reader(self._master)
            self._reading = False

    def close(self) -> None:
        if not self.plugged:
            return
        self.plugged = False
        if self._reading:
            self._loop.remove_reader(self._master)
            self._reading = False
        os.close(self._master)
        os.close(self._slave)
