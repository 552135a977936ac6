"""A receipt printer driven by the hub: status checks and jobs, over the network (raw TCP,
port 9100: :class:`NetworkPrinter`) or USB (Linux usblp, ``/dev/usb/lpN``:
:class:`UsbPrinter`). :func:`printer_driver` picks the one a ``[[devices.printers]]`` entry
asks for.

Theory of operation
-------------------
Every operation is bounded by ``timeout_s`` and starts with a status round trip on its
connection (:meth:`EscPosPrinter._session`). A USB printer is opened for each operation and
found again by its USB identity every time (:mod:`edge.relay.usblp`), so it keeps its name
when it moves to another port or ``lpN``. A network printer's connection is kept open
``keep_open_s`` after an operation for the next one (a sale's receipt then its drawer kick, a
rush of receipts: a connect saved each time), then closed, because store printers accept one
client at a time. A kept connection may have died meanwhile (the printer closed it, or was
switched off and on: it resets it): that shows in the first round trip, before anything but
status requests was sent on it, and the operation goes on once on a new connection. Any
failure, timeout or cancellation closes the connection it happened on: answers are matched
to requests by their order, so a connection that may still owe one is never used again.
Both transports carry the same bytes; everything below is transport-blind
(:class:`EscPosPrinter`):

- :meth:`EscPosPrinter.status` asks ``DLE EOT 1``, ``2`` and ``4`` (printer, offline cause,
  roll paper: peripherals.md §1.3) in one write, each answered by one byte in order (one round
  trip, not three), and decodes them with :mod:`devices.escpos_status` into a
  :class:`PrinterState`.
- :meth:`EscPosPrinter.print` first checks the status: paper out, cover open or offline refuse
  the job with a :class:`PrinterError` (a job sent then would be held inside the printer and
  print later, long after the customer left: the register must decide). Then it writes the
  job followed by the same three requests in one write: their answers arrive once the job's
  bytes have reached the printer, so their arrival means the job was taken, and their content
  says whether paper ran out during it. A print costs two round trips (and a connect when no
  connection was kept). Neither can go: the first is the promise of docs/protocol.md §10
  (checked first, refused rather than held; a state known from earlier, even from the last
  job's answers, says nothing of a cover opened or a printer switched off since), the second
  is what "done" means (the printer took the job, and the paper did not run out during it).

Errors: :class:`PrinterError` with a stable ``code`` (``OFFLINE``: no answer or no
connection, or no USB printer with the configured identity; ``PAPER_OUT``; ``COVER_OPEN``;
``PRINTER_ERROR``: a mechanical or cutter error) and ``retryable`` (every one of them clears
when someone fixes the printer).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from devices.errors import FrameError
from devices.escpos_status import (
    OfflineCause,
    PrinterStatus,
    RollPaperStatus,
    StatusRequest,
    decode_status,
    encode_status_request,
)
from edge.relay.usblp import (
    DEFAULT_DEV_DIR,
    DEFAULT_SYSFS_DIR,
    UsbDevice,
    UsbLookupError,
    UsbSelector,
    open_line,
)

if TYPE_CHECKING:
    from edge.settings import DevicesSettings, PrinterSettings

DEFAULT_PORT: Final = 9100


class PrinterError(Exception):
    """The printer cannot print now; ``code`` is stable (docs/protocol.md, devices)."""

    retryable = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PrinterState:
    online: bool
    paper_near_end: bool
    paper_out: bool
    cover_open: bool
    error: bool
    drawer_pin3_high: bool

    @property
    def summary(self) -> str:
        if not self.online and not (self.paper_out or self.cover_open):
            return "offline"
        problems = [
            text
            for flag, text in (
                (self.paper_out, "paper out"),
                (self.cover_open, "cover open"),
                (self.error, "error"),
                (self.paper_near_end, "paper near end"),
            )
            if flag
        ]
        return ", ".join(problems) or "ready"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}

    def refusal(self) -> PrinterError | None:
        """Why a job must not be sent now (None: print)."""
        if self.paper_out:
            return PrinterError("PAPER_OUT", "the printer is out of paper")
        if self.cover_open:
            return PrinterError("COVER_OPEN", "the printer's cover is open")
        if self.error:
            return PrinterError("PRINTER_ERROR", "the printer reports an error (cutter, jam)")
        if not self.online:
            return PrinterError("OFFLINE", "the printer is offline")
        return None


class Link(Protocol):
    """One open connection to a printer, as :class:`EscPosPrinter` uses it."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self, size: int) -> bytes:
        """Exactly ``size`` bytes; raises ``OSError`` (or IncompleteReadError) otherwise."""
        ...


class _TcpLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, size: int) -> bytes:
        return await self._reader.readexactly(size)

    @property
    def closed(self) -> bool:
        """Closed by us, or the printer's end of stream already arrived."""
        return self._writer.is_closing() or self._reader.at_eof()

    def close(self) -> None:
        self._writer.close()


class EscPosPrinter:
    """Status checks and jobs over any :class:`Link` (module docstring); a transport
    provides :attr:`address` and :meth:`_link`, or :meth:`_session` when it keeps its
    connection between operations."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    @property
    def address(self) -> str:
        raise NotImplementedError

    def _link(self) -> contextlib.AbstractAsyncContextManager[Link]:
        """Open a connection, closed when the block ends; raises :class:`PrinterError`
        ``OFFLINE`` when there is none."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[Link, PrinterState]]:
        """A connection and the printer's state read on it: how every operation starts."""
        async with self._link() as link:
            yield link, await self._state(link)

    def close_idle_connection(self) -> None:
        """Close the connection kept for the next operation, if any (the hub stops)."""

    async def _state(self, link: Link, before: bytes = b"") -> PrinterState:
        """The three real-time status requests in one write (after ``before``, e.g. a job),
        their three one-byte answers read in order: one round trip instead of three. DLE EOT
        is answered as it arrives, in order, even while the printer is busy."""
        asks = (StatusRequest.PRINTER, StatusRequest.OFFLINE_CAUSE, StatusRequest.ROLL_PAPER)
        await link.send(before + b"".join(encode_status_request(r) for r in asks))
        answers = await link.receive(len(asks))
        printer, cause, paper = (decode_status(r, answers[i : i + 1]) for i, r in enumerate(asks))
        assert isinstance(printer, PrinterStatus)
        assert isinstance(cause, OfflineCause)
        assert isinstance(paper, RollPaperStatus)
        return PrinterState(
            online=printer.online,
            paper_near_end=paper.near_end,
            paper_out=paper.paper_end or cause.stopped_at_paper_end,
            cover_open=cause.cover_open,
            error=cause.error,
            drawer_pin3_high=printer.drawer_pin3_high,
        )

    async def status(self) -> PrinterState:
        """The printer's state now. Raises :class:`PrinterError` ``OFFLINE`` when it does not
        answer within ``timeout_s``."""
        try:
            async with asyncio.timeout(self.timeout_s), self._session() as (_, state):
                return state
        except (TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            raise PrinterError("OFFLINE", f"{self.address} did not answer: {exc!r}") from None
        except FrameError as exc:
            raise PrinterError("OFFLINE", f"{self.address} answered garbage: {exc}") from None

    async def print(self, job: bytes) -> PrinterState:
        """Send one job; returns the state once the printer has taken it. Raises
        :class:`PrinterError`: before sending when it cannot print (``OFFLINE``,
        ``PAPER_OUT``, ...); after sending, ``PAPER_OUT_DURING_JOB`` when the paper ran out
        during it, ``UNCONFIRMED`` when the printer stopped answering. Those two are final:
        the job may well print (the rest, once paper is loaded), so a re-send must not."""
        sent = False
        try:
            async with asyncio.timeout(self.timeout_s), self._session() as (link, before):
                if (refused := before.refusal()) is not None:
                    raise refused
                # The answers to the requests after the job come once the job's bytes have
                # reached the printer (one stream, in order): the barrier and the state.
                sent = True
                after = await self._state(link, before=job)
        except (TimeoutError, asyncio.IncompleteReadError, OSError, FrameError) as exc:
            if sent:
                raise PrinterError(
                    "UNCONFIRMED", f"{self.address} stopped answering after the job: {exc!r}"
                ) from None
            raise PrinterError("OFFLINE", f"{self.address} stopped answering: {exc!r}") from None
        if after.paper_out:
            raise PrinterError(
                "PAPER_OUT_DURING_JOB",
                f"{self.address}: the paper ran out during the job; the rest prints once "
                "paper is loaded",
            )
        return after


class NetworkPrinter(EscPosPrinter):
    """A printer on the network: raw TCP (JetDirect / AppSocket), port 9100. Its connection
    is kept ``keep_open_s`` after an operation (module docstring; 0: one per operation).

    Calling contract: one operation at a time (the hub holds the printer's lock), on one
    event loop."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 5.0,
        keep_open_s: float = 0.0,
    ) -> None:
        super().__init__(timeout_s=timeout_s)
        self.host = host
        self.port = port
        self.keep_open_s = keep_open_s
        self._kept: _TcpLink | None = None
        self._closing_kept: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(self) -> _TcpLink:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise PrinterError("OFFLINE", f"no connection to {self.address}: {exc}") from None
        return _TcpLink(reader, writer)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[Link, PrinterState]]:
        """The kept connection when there is one, else a new one; the connection is kept
        again if the operation ends without an exception (module docstring)."""
        link = self._take_kept()
        state: PrinterState | None = None
        if link is not None:
            try:
                state = await self._state(link)
            except (ConnectionError, asyncio.IncompleteReadError):
                # Died while kept: only status requests went on it; go on on a new one.
                link.close()
                link = None
            except BaseException:
                link.close()
                raise
        try:
            if link is None:
                link = await self._connect()
                state = await self._state(link)
            assert state is not None
            yield link, state
        except BaseException:
            if link is not None:
                link.close()
            raise
        self._keep(link)

    def _take_kept(self) -> _TcpLink | None:
        if self._closing_kept is not None:
            self._closing_kept.cancel()
            self._closing_kept = None
        link, self._kept = self._kept, None
        if link is not None and link.closed:
            link.close()
            return None
        return link

    def _keep(self, link: _TcpLink) -> None:
        self.close_idle_connection()
        if self.keep_open_s <= 0 or link.closed:
            link.close()
            return
        self._kept = link
        loop = asyncio.get_running_loop()
        self._closing_kept = loop.call_later(self.keep_open_s, self.close_idle_connection)

    def close_idle_connection(self) -> None:
        """Close the kept connection (``keep_open_s`` passed without an operation, or the
        hub stops)."""
        if self._closing_kept is not None:
            self._closing_kept.cancel()
            self._closing_kept = None
        if self._kept is not None:
            self._kept.close()
            self._kept = None


class UsbPrinter(EscPosPrinter):
    """A USB printer (Linux usblp), found by its USB identity at every opening
    (:mod:`edge.relay.usblp`); :attr:`found` is the node it was last found at."""

    def __init__(
        self,
        selector: UsbSelector,
        *,
        sysfs_dir: str | Path = DEFAULT_SYSFS_DIR,
        dev_dir: str | Path = DEFAULT_DEV_DIR,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(timeout_s=timeout_s)
        self.selector = selector
        self.sysfs_dir = sysfs_dir
        self.dev_dir = dev_dir
        self.found: UsbDevice | None = None
        """The node the printer was last found at, with its identity (None: never found)."""

    @property
    def address(self) -> str:
        where = f" at {self.found.node}" if self.found is not None else ""
        return f"usb {self.selector}{where}"

    def _noted(self, device: UsbDevice) -> None:
        self.found = device

    @contextlib.asynccontextmanager
    async def _link(self) -> AsyncIterator[Link]:
        line = open_line(
            self.selector, sysfs_dir=self.sysfs_dir, dev_dir=self.dev_dir, on_found=self._noted
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                opened = await stack.enter_async_context(line)
            except UsbLookupError as exc:
                raise PrinterError("OFFLINE", str(exc)) from None
            except OSError as exc:
                busy = " (another program holds it: CUPS?)" if exc.errno == errno.EBUSY else ""
                reason = f"{self.address}: cannot open: {exc.strerror or exc}{busy}"
                raise PrinterError("OFFLINE", reason) from None
            yield opened


def printer_driver(printer: PrinterSettings, devices: DevicesSettings) -> EscPosPrinter:
    """The driver for one ``[[devices.printers]]`` entry: USB when it names ``usb``, else the
    network (the settings check that exactly one is given)."""
    if printer.usb is not None:
        selector = UsbSelector.parse(serial=printer.usb.serial, usb_id=printer.usb.id)
        return UsbPrinter(
            selector,
            sysfs_dir=devices.usb_sysfs_dir,
            dev_dir=devices.usb_dev_dir,
            timeout_s=devices.timeout_s,
        )
    return NetworkPrinter(
        printer.host,
        printer.port,
        timeout_s=devices.timeout_s,
        keep_open_s=devices.keep_open_s,
    )
