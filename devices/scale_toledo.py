"""Mettler-Toledo 8217 ("Toledo") scale protocol (sans-IO).

Theory of operation (peripherals.md §2.2, METTLER TOLEDO DIVA service manual): the host
sends a one-letter command and the scale answers one frame ``STX … CR``:

* ``W`` → ``STX WW.WWW CR`` (kg) or ``STX WW.WW CR`` (lb), with a trailing ``N`` when the
  weight is net. A weight frame is only sent for a stable, in-range, non-negative weight;
  otherwise the answer is a status frame:
* ``STX ? s CR`` where ``s`` is one ASCII character of bits: 0 motion, 1 over capacity,
  2 under zero, 3 outside zero-capture range, 4 center of zero, 5 net, 6 always 1,
  7 parity. ``?@`` (0x40) is "no condition" (also the confidence test's "all passed").
  ``Z``, ``T``, ``C`` and ``B`` are answered with a status frame too.

The weight frame does not say its unit; it is the unit the scale is configured for, which
the caller passes in (``kg`` or ``lb``). Frames from a 7E1 line are accepted with bit 7
either clear or holding the parity bit (see ``_framing.strip_parity``).

Uncertain in the reference, handled here as stated:

* whether ``T`` is followed by ``CR`` (the manual's table is ambiguous): ``TARE`` is the
  bare letter, like Odoo's ``tareCommand``;
* the Datalogic KB maps ``?C``/``?D`` to under zero / outside zero, which contradicts the
  bit table; the bit table (the Mettler manual) is what this decodes [NV];
* a status character with bit 6 clear is rejected as not a Toledo status (Odoo's driver
  calls bit 6 "bad command from host"; the manual says it is always 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Self

from devices._framing import FrameScanner, strip_parity
from devices.errors import (
    FRAME_DELIMITER,
    FRAME_LENGTH,
    STATUS_FIXED_BITS,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import Reading, check_unit

__all__ = [
    "CLEAR_TARE",
    "CONFIDENCE_TEST_RESULT",
    "CONFIDENCE_TEST_START",
    "ECHO_START",
    "ECHO_STOP",
    "REQUEST_WEIGHT",
    "TARE",
    "ZERO",
    "ToledoParser",
    "ToledoStatus",
    "decode_frame",
    "encode_digital_tare",
    "encode_status_frame",
    "encode_weight_frame",
]

STX = 0x02
CR = 0x0D

# Host → scale commands (§2.2 table). No terminator except for the digital tare.
REQUEST_WEIGHT = b"W"
ZERO = b"Z"
"""Zero the scale; only honoured when stable, within capture range and with no tare."""
TARE = b"T"
CLEAR_TARE = b"C"
CONFIDENCE_TEST_START = b"A"
CONFIDENCE_TEST_RESULT = b"B"
ECHO_START = b"E"
ECHO_STOP = b"F"

TOLEDO_UNITS = frozenset({"kg", "lb"})
_DECIMALS = {"kg": 3, "lb": 2}
"""Digits after the point: WW.WWW kg, WW.WW lb (weight frames and the digital tare)."""

MAX_FRAME = 32
"""Longest frame the parser waits for; real frames are at most 9 bytes."""

_MOTION = 0x01
_OVER_CAPACITY = 0x02
_UNDER_ZERO = 0x04
_OUTSIDE_ZERO_RANGE = 0x08
_CENTER_OF_ZERO = 0x10
_NET = 0x20
_ALWAYS_ONE = 0x40

_WEIGHT_BODY = re.compile(rb" *([0-9]+\.[0-9]+)(N?)")


def _check_toledo_unit(unit: str) -> str:
    check_unit(unit)
    if unit not in TOLEDO_UNITS:
        raise ValueError(f"the 8217 protocol weighs in kg or lb, not {unit!r}")
    return unit


@dataclass(frozen=True, slots=True)
class ToledoStatus:
    """A ``STX ? s CR`` frame: why there is no weight, or the answer to Z/T/C/B."""

    in_motion: bool = False
    over_capacity: bool = False
    under_zero: bool = False
    outside_zero_capture_range: bool = False
    center_of_zero: bool = False
    net: bool = False

    @property
    def clear(self) -> bool:
        """No condition reported (``?@``)."""
        return self == ToledoStatus()

    @classmethod
    def from_char(cls, value: int, *, frame: bytes | None = None) -> Self:
        """Decode the status character; bit 7 (parity) is ignored."""
        value &= 0x7F
        if not value & _ALWAYS_ONE:
            raise FrameError(
                STATUS_FIXED_BITS,
                f"Toledo status 0x{value:02X} has bit 6 clear (always 1)",
                frame=frame,
            )
        return cls(
            in_motion=bool(value & _MOTION),
            over_capacity=bool(value & _OVER_CAPACITY),
            under_zero=bool(value & _UNDER_ZERO),
            outside_zero_capture_range=bool(value & _OUTSIDE_ZERO_RANGE),
            center_of_zero=bool(value & _CENTER_OF_ZERO),
            net=bool(value & _NET),
        )

    def to_char(self) -> int:
        return (
            _ALWAYS_ONE
            | (_MOTION if self.in_motion else 0)
            | (_OVER_CAPACITY if self.over_capacity else 0)
            | (_UNDER_ZERO if self.under_zero else 0)
            | (_OUTSIDE_ZERO_RANGE if self.outside_zero_capture_range else 0)
            | (_CENTER_OF_ZERO if self.center_of_zero else 0)
            | (_NET if self.net else 0)
        )


def decode_frame(frame: bytes, *, unit: str = "kg") -> Reading | ToledoStatus:
    """Decode one complete ``STX … CR`` frame.

    A weight frame gives a stable, in-range ``Reading`` in ``unit`` (the scale's configured
    unit). Raises ``FrameError`` for anything else; ValueError for a unit other than kg/lb.
    """
    _check_toledo_unit(unit)
    raw = bytes(frame)
    frame = strip_parity(raw)
    if len(frame) < 2 or frame[0] != STX or frame[-1] != CR:
        raise FrameError(FRAME_DELIMITER, "a Toledo frame is STX … CR", frame=raw)
    body = frame[1:-1]
    if body[:1] == b"?":
        if len(body) != 2:
            raise FrameError(FRAME_LENGTH, "a Toledo status frame is STX ? s CR", frame=raw)
        return ToledoStatus.from_char(body[1], frame=raw)
    match = _WEIGHT_BODY.fullmatch(body)
    if match is None:
        raise FrameError(WEIGHT_FORMAT, "expected STX WW.WWW[N] CR", frame=raw)
    return Reading(
        weight=Decimal(match[1].decode("ascii")),
        unit=unit,
        stable=True,
        net=bool(match[2]),
    )


def _digits(weight: Decimal, unit: str, width: int) -> str:
    """``weight`` as ``width`` digits with the unit's implied decimals; ValueError if it
    does not fit or would need rounding (a tare must be exact)."""
    decimals = _DECIMALS[_check_toledo_unit(unit)]
    scaled = weight.scaleb(decimals)
    if weight.is_signed() or scaled != scaled.to_integral_value() or scaled >= 10**width:
        raise ValueError(
            f"{weight} {unit} is not a non-negative weight with at most {decimals} decimals "
            f"that fits {width} digits"
        )
    return f"{int(scaled):0{width}d}"


def encode_digital_tare(tare: Decimal, *, unit: str = "kg") -> bytes:
    """``T WWWWW CR``: preset a tare of 5 digits, WW.WWW kg or WWW.WW lb (§2.2)."""
    return b"T" + _digits(tare, unit, 5).encode("ascii") + b"\r"


def encode_weight_frame(weight: Decimal, *, unit: str = "kg", net: bool = False) -> bytes:
    """What a scale answers to ``W`` with a stable weight (for emulators and tests)."""
    digits = _digits(weight, unit, 32)
    decimals = _DECIMALS[unit]
    whole, frac = digits[:-decimals].lstrip("0").rjust(2, "0"), digits[-decimals:]
    return b"\x02" + f"{whole}.{frac}{'N' if net else ''}".encode("ascii") + b"\r"


def encode_status_frame(status: ToledoStatus) -> bytes:
    """``STX ? s CR`` with bit 7 clear, as a 7-bit UART delivers it."""
    return bytes((STX, ord("?"), status.to_char(), CR))


class ToledoParser:
    """Frames from a byte stream: ``feed`` never raises, whatever arrives.

    Bytes may arrive split anywhere; garbage between frames, frames that do not decode and
    unfinished frames longer than ``MAX_FRAME`` are dropped and counted in ``discarded``.
    The buffer never holds more than ``MAX_FRAME`` bytes between calls.
    """

    def __init__(self, *, unit: str = "kg") -> None:
        self.unit = _check_toledo_unit(unit)
        self._scanner: FrameScanner[Reading | ToledoStatus] = FrameScanner(
            start=b"\x02", end=b"\r", decode=self._decode, max_frame=MAX_FRAME
        )

    def _decode(self, frame: bytes) -> Reading | ToledoStatus:
        return decode_frame(frame, unit=self.unit)

    @property
    def discarded(self) -> int:
        """Bytes dropped so far (garbage, undecodable or overlong frames)."""
        return self._scanner.discarded

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame (at most ``MAX_FRAME``)."""
        return self._scanner.pending

    def feed(self, data: bytes) -> list[Reading | ToledoStatus]:
        return self._scanner.feed(strip_parity(data))
