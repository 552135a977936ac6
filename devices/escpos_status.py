"""ESC/POS real-time status: ``DLE EOT n`` requests and their one-byte answers (sans-IO).

Theory of operation (peripherals.md §1.3, "Real-time status" and "DLE EOT response bytes"):
the host sends ``DLE EOT n`` = ``10 04 n`` and the printer answers with exactly one byte,
even while it is offline or its buffer is full. ``n`` picks what the byte describes:

==  ===============  ===================  ==================  ==================  ===============
n   request          bit 2 (0x04)         bit 3 (0x08)        bit 5 (0x20)        bit 6 (0x40)
==  ===============  ===================  ==================  ==================  ===============
1   printer          drawer pin 3 HIGH    offline             waiting for online  FEED pressed
                                                              recovery
2   offline cause    cover open           paper fed by FEED   stopped: paper end  error occurred
3   error cause      mechanical error     autocutter error    unrecoverable       auto-recoverable
4   roll paper       near end (0x0C)      near end (0x0C)     paper end (0x60)    paper end (0x60)
==  ===============  ===================  ==================  ==================  ===============

Every valid answer has bit 0 = 0, bit 1 = 1, bit 4 = 1 and bit 7 = 0 (the pattern
``0xx1xx10``, python-escpos master's ``_check_valid_response``): a byte that breaks it is not
a status answer and raises ``FrameError(STATUS_FIXED_BITS)``. An idle, healthy Epson answers
``0x12`` to each n.

Calling contract (Epson, §1.3): send one request, then wait for its byte before sending any
more data; never put ``DLE EOT`` inside another command's parameters. Matching an answer to
its request is the caller's job: the byte does not say which n it answers.

The dataclasses also encode themselves (``to_byte``) so that a test printer emulator answers
with the same codec the driver decodes with.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Self, overload

from devices.errors import STATUS_FIXED_BITS, STATUS_LENGTH, FrameError

__all__ = [
    "FIXED_BITS_MASK",
    "FIXED_BITS_VALUE",
    "ErrorCause",
    "OfflineCause",
    "PrinterStatus",
    "RollPaperStatus",
    "Status",
    "StatusRequest",
    "check_fixed_bits",
    "decode_status",
    "encode_status_request",
]

DLE = 0x10
EOT = 0x04

FIXED_BITS_MASK = 0x93
"""Bits 0, 1, 4 and 7: the bits that are the same in every status answer."""
FIXED_BITS_VALUE = 0x12
"""Their required values: bit 1 and bit 4 set, bit 0 and bit 7 clear."""

_BIT2 = 0x04
_BIT3 = 0x08
_BIT5 = 0x20
_BIT6 = 0x40
_NEAR_END = _BIT2 | _BIT3
_PAPER_END = _BIT5 | _BIT6


class StatusRequest(IntEnum):
    """The ``n`` of ``DLE EOT n``."""

    PRINTER = 1
    OFFLINE_CAUSE = 2
    ERROR_CAUSE = 3
    ROLL_PAPER = 4


def encode_status_request(request: StatusRequest | int) -> bytes:
    """``DLE EOT n``. Raises ValueError for an n outside 1..4."""
    n = StatusRequest(request)  # ValueError for anything else
    return bytes((DLE, EOT, n))


def check_fixed_bits(value: int) -> None:
    """Raise ``FrameError(STATUS_FIXED_BITS)`` unless ``value`` matches ``0xx1xx10``.

    Raises ValueError for an int that is not a byte at all (a caller's bug).
    """
    if not 0 <= value <= 0xFF:
        raise ValueError(f"a status byte is 0..255, got {value}")
    if value & FIXED_BITS_MASK != FIXED_BITS_VALUE:
        raise FrameError(
            STATUS_FIXED_BITS,
            f"status byte 0x{value:02X} does not match the fixed-bit pattern 0xx1xx10",
            frame=bytes((value,)),
        )


def _flag(value: int, bit: int) -> bool:
    return value & bit != 0


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """Answer to n = 1.

    ``drawer_pin3_high`` is the level of pin 3 of the drawer-kick connector, not "drawer
    open": which level means open depends on the drawer's switch wiring (§1.3, [NV]), so
    a site setting must map it.
    """

    drawer_pin3_high: bool = False
    offline: bool = False
    waiting_for_online_recovery: bool = False
    feed_button_pressed: bool = False

    @property
    def online(self) -> bool:
        return not self.offline

    @classmethod
    def from_byte(cls, value: int) -> Self:
        check_fixed_bits(value)
        return cls(
            drawer_pin3_high=_flag(value, _BIT2),
            offline=_flag(value, _BIT3),
            waiting_for_online_recovery=_flag(value, _BIT5),
            feed_button_pressed=_flag(value, _BIT6),
        )

    def to_byte(self) -> int:
        return (
            FIXED_BITS_VALUE
            | (_BIT2 if self.drawer_pin3_high else 0)
            | (_BIT3 if self.offline else 0)
            | (_BIT5 if self.waiting_for_online_recovery else 0)
            | (_BIT6 if self.feed_button_pressed else 0)
        )


@dataclass(frozen=True, slots=True)
class OfflineCause:
    """Answer to n = 2: why the printer is offline."""

    cover_open: bool = False
    paper_fed_by_button: bool = False
    stopped_at_paper_end: bool = False
    error: bool = False

    @classmethod
    def from_byte(cls, value: int) -> Self:
        check_fixed_bits(value)
        return cls(
            cover_open=_flag(value, _BIT2),
            paper_fed_by_button=_flag(value, _BIT3),
            stopped_at_paper_end=_flag(value, _BIT5),
            error=_flag(value, _BIT6),
        )

    def to_byte(self) -> int:
        return (
            FIXED_BITS_VALUE
            | (_BIT2 if self.cover_open else 0)
            | (_BIT3 if self.paper_fed_by_button else 0)
            | (_BIT5 if self.stopped_at_paper_end else 0)
            | (_BIT6 if self.error else 0)
        )


@dataclass(frozen=True, slots=True)
class ErrorCause:
    """Answer to n = 3.

    Bit 2 is a mechanical error on Epson TM-U220 but a black-mark error on Citizen (§1.3):
    both mean "not printing until someone looks at it". An autocutter error can be cleared
    with ``DLE ENQ 1/2``; an auto-recoverable one (head too hot) clears by itself.
    """

    mechanical_error: bool = False
    autocutter_error: bool = False
    unrecoverable_error: bool = False
    auto_recoverable_error: bool = False

    @classmethod
    def from_byte(cls, value: int) -> Self:
        check_fixed_bits(value)
        return cls(
            mechanical_error=_flag(value, _BIT2),
            autocutter_error=_flag(value, _BIT3),
            unrecoverable_error=_flag(value, _BIT5),
            auto_recoverable_error=_flag(value, _BIT6),
        )

    def to_byte(self) -> int:
        return (
            FIXED_BITS_VALUE
            | (_BIT2 if self.mechanical_error else 0)
            | (_BIT3 if self.autocutter_error else 0)
            | (_BIT5 if self.unrecoverable_error else 0)
            | (_BIT6 if self.auto_recoverable_error else 0)
        )


@dataclass(frozen=True, slots=True)
class RollPaperStatus:
    """Answer to n = 4.

    The reference gives each condition as a pair of bits (0x0C near end, 0x60 paper end)
    and does not say what one bit of a pair alone means; python-escpos tests for both. We
    report the condition when *either* bit is set: a false "paper low" costs a glance, a
    missed "paper out" costs a lost receipt.
    """

    near_end: bool = False
    paper_end: bool = False

    @classmethod
    def from_byte(cls, value: int) -> Self:
        check_fixed_bits(value)
        return cls(near_end=_flag(value, _NEAR_END), paper_end=_flag(value, _PAPER_END))

    def to_byte(self) -> int:
        return (
            FIXED_BITS_VALUE
            | (_NEAR_END if self.near_end else 0)
            | (_PAPER_END if self.paper_end else 0)
        )


Status = PrinterStatus | OfflineCause | ErrorCause | RollPaperStatus

_DECODERS: dict[StatusRequest, type[Status]] = {
    StatusRequest.PRINTER: PrinterStatus,
    StatusRequest.OFFLINE_CAUSE: OfflineCause,
    StatusRequest.ERROR_CAUSE: ErrorCause,
    StatusRequest.ROLL_PAPER: RollPaperStatus,
}


@overload
def decode_status(request: Literal[StatusRequest.PRINTER], response: bytes) -> PrinterStatus: ...
@overload
def decode_status(
    request: Literal[StatusRequest.OFFLINE_CAUSE], response: bytes
) -> OfflineCause: ...
@overload
def decode_status(request: Literal[StatusRequest.ERROR_CAUSE], response: bytes) -> ErrorCause: ...
@overload
def decode_status(
    request: Literal[StatusRequest.ROLL_PAPER], response: bytes
) -> RollPaperStatus: ...
@overload
def decode_status(request: StatusRequest | int, response: bytes) -> Status: ...
def decode_status(request: StatusRequest | int, response: bytes) -> Status:
    """Decode the answer to ``DLE EOT request``.

    Raises ``FrameError(STATUS_LENGTH)`` unless ``response`` is exactly one byte and
    ``FrameError(STATUS_FIXED_BITS)`` if that byte is not a status byte; ValueError for a
    request outside 1..4.
    """
    kind = _DECODERS[StatusRequest(request)]
    if len(response) != 1:
        raise FrameError(
            STATUS_LENGTH,
            f"a DLE EOT answer is one byte, got {len(response)}",
            frame=bytes(response),
        )
    return kind.from_byte(response[0])
