"""NCI / Avery Weigh-Tronix SCP-01 ("NCI standard", 3825) scale protocol (sans-IO).

Theory of operation (peripherals.md §2.4): the host sends a letter and ``CR``; the scale
answers one frame that starts with ``LF`` and ends with ``ETX``, holding one or two fields,
each ended by ``CR`` and separated by ``CR LF``:

=============  ==============================================  =======================
command        answer                                          decoded as
=============  ==============================================  =======================
``W CR``       ``LF xxxx.xxuu CR LF hh… CR ETX``                ``Reading``
               (lb-oz: ``LF xxlb SP xx.xoz CR LF hh… CR ETX``)
``H CR``       same, high resolution (×10, not legal for trade)  ``Reading``
``S CR``       ``LF hh… CR ETX``                                ``Scp01Status``
``Z CR``       ``LF hh… CR ETX`` (after zeroing)                ``Scp01Status``
``U CR``       ``LF uu CR LF hh… CR ETX``                       ``UnitChange``
anything else  ``LF ? CR ETX``                                  ``CommandRejected``
=============  ==============================================  =======================

``uu`` is the unit (lb, kg, oz, g). ``hh…`` is two or more status bytes, bit 7 parity
(ignored), bits 4 and 5 always 1:

===  ===================  ====================  ==========================
bit  byte 1               byte 2                byte 3 (optional)
===  ===================  ====================  ==========================
0    in motion            under capacity        range (bits 0-1: 00 low,
1    at zero              over capacity         11 high)
2    RAM error            ROM error             net weight
3    EEPROM error         faulty calibration    initial zero error
6    always 0             another byte follows  another byte follows
===  ===================  ====================  ==========================

The METTLER TOLEDO DIVA variant prefixes the status with ``S`` (``LF Shh CR ETX``) and may
add a 4th byte (weight change / zero seen / metric; bit positions not in the reference):
the prefix is accepted and bytes after the 3rd are kept raw in ``Scp01Status.extra``.

Mapped onto ``Reading``: ``under capacity`` → ``under_zero`` (the scale reads below its
zero / under range), and the four error bits plus "initial zero error" → ``faults``.

A limit of the framing itself: fields are ``LF``-led like frames, so if a scale loses the
status part of a weight answer, the weight and the *next* status-only answer can join
into one weight frame. Poll ``W`` rather than mixing ``W`` and ``S`` on a noisy line.
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
    UNIT_UNKNOWN,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import (
    FAULT_CALIBRATION,
    FAULT_EEPROM,
    FAULT_INITIAL_ZERO,
    FAULT_RAM,
    FAULT_ROM,
    Reading,
    check_unit,
    parse_unit,
    parse_weight,
)

__all__ = [
    "CHANGE_UNITS",
    "REQUEST_HIGH_RESOLUTION",
    "REQUEST_STATUS",
    "REQUEST_WEIGHT",
    "ZERO",
    "CommandRejected",
    "Scp01Event",
    "Scp01Parser",
    "Scp01Status",
    "UnitChange",
    "decode_frame",
    "encode_rejected_frame",
    "encode_status_field",
    "encode_status_frame",
    "encode_unit_frame",
    "encode_weight_frame",
]

LF = 0x0A
CR = 0x0D
ETX = 0x03

REQUEST_WEIGHT = b"W\r"
REQUEST_STATUS = b"S\r"
ZERO = b"Z\r"
REQUEST_HIGH_RESOLUTION = b"H\r"
"""Weight at ×10 resolution with status; for diagnostics, not for pricing."""
CHANGE_UNITS = b"U\r"

MAX_FRAME = 64
"""Longest frame the parser waits for; real frames are under 30 bytes."""

_FIXED_MASK = 0x30  # bits 4 and 5: always 1
_FOLLOWS = 0x40  # bit 6: byte 1 always 0; bytes 2+ "another byte follows"

_WEIGHT_FIELD = re.compile(rb" *([+-]? *[0-9.]+) *([A-Za-z]{1,2}) *")
_LB_OZ_FIELD = re.compile(rb" *([0-9]+) *lb +([0-9]+(?:\.[0-9]+)?) *oz *")
_UNIT_FIELD = re.compile(rb" *([A-Za-z]{1,2}) *")


@dataclass(frozen=True, slots=True)
class Scp01Status:
    """The ``hh…`` status bytes (§2.4 table). ``range`` is byte 3's bits 0-1 (0 when the
    scale sends no byte 3); ``extra`` holds bytes after the 3rd, bit 7 cleared."""

    in_motion: bool = False
    at_zero: bool = False
    ram_error: bool = False
    eeprom_error: bool = False
    under_capacity: bool = False
    over_capacity: bool = False
    rom_error: bool = False
    faulty_calibration: bool = False
    range: int = 0
    net: bool = False
    initial_zero_error: bool = False
    extra: bytes = b""

    @property
    def faults(self) -> frozenset[str]:
        found = (
            (self.ram_error, FAULT_RAM),
            (self.eeprom_error, FAULT_EEPROM),
            (self.rom_error, FAULT_ROM),
            (self.faulty_calibration, FAULT_CALIBRATION),
            (self.initial_zero_error, FAULT_INITIAL_ZERO),
        )
        return frozenset(name for flag, name in found if flag)

    @classmethod
    def from_field(cls, data: bytes, *, frame: bytes | None = None) -> Self:
        """Decode a status field (without its ``CR``); FrameError if malformed."""
        raw = strip_parity(data)
        if raw[:1] == b"S":  # DIVA prefix; 'S' (0x53) cannot be a status byte: bit 5 clear
            raw = raw[1:]
        if len(raw) < 2:
            raise FrameError(FRAME_LENGTH, "SCP-01 status is at least 2 bytes", frame=frame)
        for index, byte in enumerate(raw):
            if byte & _FIXED_MASK != _FIXED_MASK:
                raise FrameError(
                    STATUS_FIXED_BITS,
                    f"status byte {index + 1} = 0x{byte:02X}: bits 4 and 5 must be 1",
                    frame=frame,
                )
            follows = bool(byte & _FOLLOWS)
            last = index == len(raw) - 1
            if index == 0 and follows:
                raise FrameError(
                    STATUS_FIXED_BITS, "status byte 1 has bit 6 set (always 0)", frame=frame
                )
            if index > 0 and follows == last:
                raise FrameError(
                    FRAME_LENGTH,
                    f"status byte {index + 1}: 'another byte follows' bit disagrees with "
                    f"the {len(raw)} bytes sent",
                    frame=frame,
                )
        b1, b2 = raw[0], raw[1]
        b3 = raw[2] if len(raw) > 2 else _FIXED_MASK
        return cls(
            in_motion=bool(b1 & 0x01),
            at_zero=bool(b1 & 0x02),
            ram_error=bool(b1 & 0x04),
            eeprom_error=bool(b1 & 0x08),
            under_capacity=bool(b2 & 0x01),
            over_capacity=bool(b2 & 0x02),
            rom_error=bool(b2 & 0x04),
            faulty_calibration=bool(b2 & 0x08),
            range=b3 & 0x03,
            net=bool(b3 & 0x04),
            initial_zero_error=bool(b3 & 0x08),
            extra=bytes(raw[3:]),
        )


def encode_status_field(status: Scp01Status) -> bytes:
    """The status bytes a scale sends for ``status`` (bit 7 clear); byte 3 only if needed.

    ValueError if ``range`` is not 0..3 or ``extra`` is not a valid tail of the chain.
    """
    if not 0 <= status.range <= 3:
        raise ValueError(f"range is two bits, got {status.range}")
    b1 = (
        _FIXED_MASK
        | (0x01 if status.in_motion else 0)
        | (0x02 if status.at_zero else 0)
        | (0x04 if status.ram_error else 0)
        | (0x08 if status.eeprom_error else 0)
    )
    b2 = (
        _FIXED_MASK
        | (0x01 if status.under_capacity else 0)
        | (0x02 if status.over_capacity else 0)
        | (0x04 if status.rom_error else 0)
        | (0x08 if status.faulty_calibration else 0)
    )
    b3 = (
        _FIXED_MASK
        | status.range
        | (0x04 if status.net else 0)
        | (0x08 if status.initial_zero_error else 0)
    )
    if status.extra:
        out = bytes((b1, b2 | _FOLLOWS, b3 | _FOLLOWS)) + status.extra
    elif b3 != _FIXED_MASK:
        out = bytes((b1, b2 | _FOLLOWS, b3))
    else:
        out = bytes((b1, b2))
    Scp01Status.from_field(out)  # validates ``extra``
    return out


@dataclass(frozen=True, slots=True)
class UnitChange:
    """Answer to ``U``: the unit the scale now weighs in."""

    unit: str
    status: Scp01Status


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """``LF ? CR ETX``: the scale did not understand the last command."""


Scp01Event = Reading | Scp01Status | UnitChange | CommandRejected


def _reading(weight_field: bytes, status: Scp01Status, frame: bytes) -> Reading:
    lb_oz = _LB_OZ_FIELD.fullmatch(weight_field)
    if lb_oz is not None:
        pounds = parse_weight(lb_oz[1].decode("ascii"), frame=frame)
        ounces = parse_weight(lb_oz[2].decode("ascii"), frame=frame)
        weight, unit = pounds + ounces / 16, "lb"  # exact: xx.x / 16 terminates
    else:
        match = _WEIGHT_FIELD.fullmatch(weight_field)
        if match is None:
            raise FrameError(WEIGHT_FORMAT, "expected a weight and a unit", frame=frame)
        number = match[1].decode("ascii").replace(" ", "")
        weight = parse_weight(number, frame=frame)
        unit = parse_unit(match[2].decode("ascii"), frame=frame)
    return Reading(
        weight=weight,
        unit=unit,
        stable=not status.in_motion,
        over_capacity=status.over_capacity,
        under_zero=status.under_capacity,
        net=status.net,
        at_zero=status.at_zero,
        faults=status.faults,
    )


def decode_frame(frame: bytes) -> Scp01Event:
    """Decode one complete ``LF … ETX`` frame; FrameError if it breaks the protocol."""
    raw = bytes(frame)
    data = strip_parity(raw)
    if len(data) < 3 or data[0] != LF or data[-1] != ETX or data[-2] != CR:
        raise FrameError(FRAME_DELIMITER, "an SCP-01 frame is LF … CR ETX", frame=raw)
    fields = data[1:-2].split(b"\r\n")
    if fields == [b"?"]:
        return CommandRejected()
    if len(fields) == 1:
        return Scp01Status.from_field(fields[0], frame=raw)
    if len(fields) != 2:
        raise FrameError(FRAME_LENGTH, f"{len(fields)} fields; SCP-01 sends 1 or 2", frame=raw)
    first, status_field = fields
    status = Scp01Status.from_field(status_field, frame=raw)
    unit_only = _UNIT_FIELD.fullmatch(first)
    if unit_only is not None:
        try:
            return UnitChange(parse_unit(unit_only[1].decode("ascii")), status)
        except FrameError:
            raise FrameError(UNIT_UNKNOWN, f"unknown unit {first!r}", frame=raw) from None
    return _reading(first, status, raw)


def _frame(*fields: bytes) -> bytes:
    return b"\n" + b"\r\n".join(fields) + b"\r\x03"


def encode_weight_frame(weight: Decimal, unit: str, status: Scp01Status) -> bytes:
    """An answer to ``W`` (for emulators and tests): ``weight`` right-aligned in 7
    characters, as many decimals as the Decimal carries, then the unit in 2."""
    check_unit(unit)
    return _frame(f"{weight:>7f}{unit:>2}".encode("ascii"), encode_status_field(status))


def encode_status_frame(status: Scp01Status) -> bytes:
    """An answer to ``S`` or ``Z``."""
    return _frame(encode_status_field(status))


def encode_unit_frame(unit: str, status: Scp01Status) -> bytes:
    """An answer to ``U``."""
    check_unit(unit)
    return _frame(f"{unit:>2}".encode("ascii"), encode_status_field(status))


def encode_rejected_frame() -> bytes:
    """The answer to a command the scale does not know."""
    return _frame(b"?")


class Scp01Parser:
    """Frames from a byte stream: ``feed`` never raises, whatever arrives.

    Bytes may arrive split anywhere; garbage, undecodable frames and unfinished frames
    longer than ``MAX_FRAME`` are dropped and counted in ``discarded``.
    """

    def __init__(self) -> None:
        self._scanner: FrameScanner[Scp01Event] = FrameScanner(
            start=b"\n", end=b"\x03", decode=decode_frame, max_frame=MAX_FRAME
        )

    @property
    def discarded(self) -> int:
        """Bytes dropped so far (garbage, undecodable or overlong frames)."""
        return self._scanner.discarded

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame (at most ``MAX_FRAME``)."""
        return self._scanner.pending

    def feed(self, data: bytes) -> list[Scp01Event]:
        return self._scanner.feed(strip_parity(data))
