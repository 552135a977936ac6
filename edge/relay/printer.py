"""A network receipt printer (raw TCP, port 9100) driven by the hub: status checks and jobs.

Theory of operation
-------------------
Every operation opens its own connection (store printers accept one client at a time, and a
connection kept open across a power cycle of the printer dies silently), and is bounded by
``timeout_s``:

- :meth:`NetworkPrinter.status` asks ``DLE EOT 1``, ``2`` and ``4`` (printer, offline cause,
  roll paper: peripherals.md §1.3) in one write, each answered by one byte in order (one round
  trip, not three), and decodes them with :mod:`devices.escpos_status` into a
  :class:`PrinterState`.
- :meth:`NetworkPrinter.print` first checks the status: paper out, cover open or offline refuse
  the job with a :class:`PrinterError` (a job sent then would be held inside the printer and
  print later, long after the customer left: the register must decide). Then it writes the
  job followed by the same three requests in one write: their answers arrive once the job's
  bytes have reached the printer, so their arrival means the job was taken, and their content
  says whether paper ran out during it. A print costs a connect and two round trips.

Errors: :class:`PrinterError` with a stable ``code`` (``OFFLINE``: no answer or no
connection; ``PAPER_OUT``; ``COVER_OPEN``; ``PRINTER_ERROR``: a mechanical or cutter error) and
``retryable`` (every one of them clears when someone fixes the printer).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Final

from devices.errors import FrameError
from devices.escpos_status import (
    OfflineCause,
    PrinterStatus,
    RollPaperStatus,
    StatusRequest,
    decode_status,
    encode_status_request,
)

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


class NetworkPrinter:
    def __init__(self, host: str, port: int = DEFAULT_PORT, *, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @contextlib.asynccontextmanager
    async def _connection(self) -> Any:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise PrinterError("OFFLINE", f"no connection to {self.address}: {exc}") from None
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _state(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, before: bytes = b""
    ) -> PrinterState:
        """The three real-time status requests in one write (after ``before``, e.g. a job),
        their three one-byte answers read in order: one round trip instead of three. DLE EOT
        is answered as it arrives, in order, even while the printer is busy."""
        asks = (StatusRequest.PRINTER, StatusRequest.OFFLINE_CAUSE, StatusRequest.ROLL_PAPER)
        writer.write(before + b"".join(encode_status_request(r) for r in asks))
        await writer.drain()
        answers = await reader.readexactly(len(asks))
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
            async with asyncio.timeout(self.timeout_s), self._connection() as (reader, writer):
                return await self._state(reader, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
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
            async with asyncio.timeout(self.timeout_s), self._connection() as (reader, writer):
                before = await self._state(reader, writer)
                if (refused := before.refusal()) is not None:
                    raise refused
                # The answers to the requests after the job come once the job's bytes have
                # reached the printer (one TCP stream, in order): the barrier and the state.
                sent = True
                after = await self._state(reader, writer, before=job)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
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
