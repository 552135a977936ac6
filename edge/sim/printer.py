"""A network ESC/POS receipt printer (port-9100 style) for tests and the demo.

Theory of operation
-------------------
The emulator listens on ``127.0.0.1`` (port 0 = ephemeral, see :attr:`PrinterEmulator.port`)
and reads a raw byte stream from every client, as a JetDirect port-9100 printer does. Each
chunk received goes through two paths:

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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
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
                await self._wait(lambda: self._closing or len(self._held) < self.max_buffer)
                chunk = b"" if self._closing else await reader.read(self._read_size)
                if not chunk:
                    break
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
                if requests and self._fault is None:
                    for request in requests:
                        self.status_requests[request] += 1
                    writer.write(bytes(self.status_byte(r) for r in requests))
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            del self._connections[task]
            writer.close()
            self._notify()
