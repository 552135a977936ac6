"""CAS scale protocols (sans-IO): the ECR "DC1" poll and the 22-byte continuous format.

Theory of operation (peripherals.md §2.5).

**ECR "DC1"** (CAS SW-II manual p.15 [P]; PD-II "Samsung ECR" emulation via TOTVS [S]):
the host sends ``DC1`` (0x11) and the scale answers::

    SOH STX STA SIGN W5..W0 UN1 UN2 BCC ETX EOT
    01  02  'S' stable / 'U' unstable; '-' or SP; weight; "KG"/"LB"; XOR; 03 04

What the reference leaves open is a parameter of :class:`EcrFormat`, defaulting to the
SW-II frame:

* ``has_sign`` / ``has_bcc``: the TOTVS PD-II description counts 15 bytes around a 7-char
  ``nnn.nnn`` weight, which fits the SW-II frame only if one of SIGN or BCC is missing.
  The weight field is read as whatever lies between SIGN and the unit, so 6 or 7 chars
  both work.
* ``verify_bcc`` (default off): the manual names the BCC an XOR but not which bytes it
  covers. When on, it is checked as the XOR of STA through UN2 (an unverified guess);
  off, the frame is still checked field by field.
* ``implied_decimals`` (default None): whether W5..W0 carries a decimal point is not
  stated. A weight without a point is rejected unless this says where the point goes: a
  guess of 0 would turn 1.234 kg into 1234 kg on a price.

**Continuous 22-byte format** (industrial indicators NT-200, CI-600, PDS [P]), streamed
without polling, one line per reading::

    ST|US|OL , GS|NT , <device id><lamp> , <weight> SP k g CR LF

``ST`` stable, ``US`` unstable, ``OL`` overload; ``GS`` gross, ``NT`` net. The reference
gives the weight as 8 bytes but its example has 9, so the field is read up to the unit.
The device id and lamp bytes have no documented meaning here and are not decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce

from devices._framing import FrameScanner
from devices.errors import (
    CHECKSUM,
    FRAME_DELIMITER,
    FRAME_LENGTH,
    STATUS_UNKNOWN,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import Reading, check_unit, parse_unit, parse_weight

__all__ = [
    "REQUEST_WEIGHT",
    "ContinuousParser",
    "EcrFormat",
    "EcrParser",
    "compute_bcc",
    "decode_continuous_line",
    "decode_ecr_frame",
    "encode_continuous_line",
    "encode_ecr_frame",
]

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04

REQUEST_WEIGHT = b"\x11"
"""DC1: ask an ECR-mode CAS scale for one weight frame."""

MAX_FRAME = 32
"""Longest frame either parser waits for; real ones are 15 (ECR) and 22 (continuous)."""

_DIGITS = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class EcrFormat:
    """The ECR frame's open questions (module docstring); defaults: CAS SW-II."""

    has_sign: bool = True
    has_bcc: bool = True
    verify_bcc: bool = False
    implied_decimals: int | None = None

    def __post_init__(self) -> None:
        if self.verify_bcc and not self.has_bcc:
            raise ValueError("verify_bcc needs has_bcc")
        if self.implied_decimals is not None and not 0 <= self.implied_decimals <= 6:
            raise ValueError("implied_decimals is 0..6 or None")


def compute_bcc(covered: bytes) -> int:
    """XOR of ``covered`` (STA through UN2 under the ``verify_bcc`` assumption)."""
    return reduce(lambda acc, byte: acc ^ byte, covered, 0)


def _weight(text: str, implied_decimals: int | None, frame: bytes) -> Decimal:
    stripped = text.strip(" ")
    if "." not in stripped and implied_decimals is not None and _DIGITS.fullmatch(stripped):
        return Decimal(int(stripped)).scaleb(-implied_decimals)
    if "." not in stripped:
        raise FrameError(
            WEIGHT_FORMAT,
            f"weight {text!r} has no decimal point and implied_decimals is not set",
            frame=frame,
        )
    return parse_weight(stripped, frame=frame)


def decode_ecr_frame(frame: bytes, *, fmt: EcrFormat = EcrFormat()) -> Reading:
    """Decode one ``SOH STX … ETX EOT`` answer to DC1; FrameError if malformed."""
    raw = bytes(frame)
    if raw[:2] != b"\x01\x02" or raw[-2:] != b"\x03\x04" or len(raw) < 4:
        raise FrameError(FRAME_DELIMITER, "a CAS ECR frame is SOH STX … ETX EOT", frame=raw)
    body = raw[2:-2]
    if fmt.has_bcc:
        body, bcc = body[:-1], body[-1:]
    minimum = 1 + (1 if fmt.has_sign else 0) + 1 + 2  # STA, SIGN, one digit, unit
    if len(body) < minimum:
        raise FrameError(
            FRAME_LENGTH, f"a CAS ECR frame body is at least {minimum} bytes", frame=raw
        )
    if fmt.verify_bcc and bcc[0] != compute_bcc(body):
        raise FrameError(
            CHECKSUM,
            f"BCC 0x{bcc[0]:02X}, expected 0x{compute_bcc(body):02X} (XOR of STA..UN2)",
            frame=raw,
        )
    status, rest = body[:1], body[1:]
    if status not in (b"S", b"U"):
        raise FrameError(STATUS_UNKNOWN, f"STA {status!r} is neither 'S' nor 'U'", frame=raw)
    negative = False
    if fmt.has_sign:
        sign, rest = rest[:1], rest[1:]
        if sign not in (b"-", b" "):
            raise FrameError(WEIGHT_FORMAT, f"SIGN {sign!r} is neither '-' nor SP", frame=raw)
        negative = sign == b"-"
    weight_field, unit_field = rest[:-2], rest[-2:]
    try:
        weight_text, unit_text = weight_field.decode("ascii"), unit_field.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(WEIGHT_FORMAT, "non-ASCII weight or unit", frame=raw) from None
    weight = _weight(weight_text, fmt.implied_decimals, raw)
    if weight.is_signed() and fmt.has_sign:
        raise FrameError(WEIGHT_FORMAT, "a signed weight after the SIGN byte", frame=raw)
    if negative:
        weight = -weight
    return Reading(
        weight=weight,
        unit=parse_unit(unit_text, frame=raw),
        stable=status == b"S",
        under_zero=weight < 0,
    )


def encode_ecr_frame(
    weight: Decimal,
    *,
    unit: str = "kg",
    stable: bool = True,
    fmt: EcrFormat = EcrFormat(),
    width: int = 6,
) -> bytes:
    """An answer to DC1 (for emulators and tests), weight right-aligned in ``width``
    chars with its decimal point, BCC as ``compute_bcc`` (see ``verify_bcc``)."""
    check_unit(unit)
    # With a SIGN byte the field holds the magnitude; without one, a '-' leads the field.
    sign = "-" if weight < 0 and not fmt.has_sign else ""
    text = sign + f"{abs(weight):f}".rjust(width - len(sign), "0")
    if len(text) > width:
        raise ValueError(f"{weight} does not fit {width} characters")
    body = b"S" if stable else b"U"
    if fmt.has_sign:
        body += b"-" if weight < 0 else b" "
    body += text.encode("ascii")
    body += unit.upper().rjust(2).encode("ascii")
    bcc = bytes((compute_bcc(body),)) if fmt.has_bcc else b""
    return b"\x01\x02" + body + bcc + b"\x03\x04"


_LINE_STATUS = {b"ST": (True, False), b"US": (False, False), b"OL": (False, True)}
"""Header → (stable, over capacity)."""
_LINE_MODE = {b"GS": False, b"NT": True}
"""Header → net."""


def decode_continuous_line(line: bytes) -> Reading:
    """Decode one ``ST,GS,<id><lamp>,<weight> kg CR LF`` line; FrameError if malformed."""
    raw = bytes(line)
    if not raw.endswith(b"\r\n"):
        raise FrameError(FRAME_DELIMITER, "a CAS continuous line ends with CR LF", frame=raw)
    if len(raw) < 15 or raw[2:3] != b"," or raw[5:6] != b"," or raw[8:9] != b",":
        raise FrameError(FRAME_LENGTH, "expected ST,GS,<id><lamp>,<weight> unit", frame=raw)
    status, mode = raw[0:2], raw[3:5]
    if status not in _LINE_STATUS or mode not in _LINE_MODE:
        raise FrameError(
            STATUS_UNKNOWN, f"headers {status!r},{mode!r} are not ST|US|OL,GS|NT", frame=raw
        )
    field = raw[9:-2]
    try:
        text = field.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(WEIGHT_FORMAT, "non-ASCII weight field", frame=raw) from None
    weight_text, unit_text = text[:-2], text[-2:]
    stable, over_capacity = _LINE_STATUS[status]
    weight = parse_weight(weight_text, frame=raw)
    return Reading(
        weight=weight,
        unit=parse_unit(unit_text, frame=raw),
        stable=stable,
        over_capacity=over_capacity,
        under_zero=weight < 0,
        net=_LINE_MODE[mode],
    )


def encode_continuous_line(
    weight: Decimal,
    *,
    unit: str = "kg",
    status: str = "ST",
    net: bool = False,
    device_id: int = ord("0"),
    lamp: int = ord("0"),
) -> bytes:
    """One line as an indicator streams it (for emulators and tests): weight signed and
    zero-padded to 8 characters, then SP and the unit."""
    check_unit(unit)
    if status.encode("ascii") not in _LINE_STATUS:
        raise ValueError(f"status is ST, US or OL, got {status!r}")
    text = ("-" if weight < 0 else "+") + f"{abs(weight):f}".rjust(7, "0")
    if len(text) > 8:
        raise ValueError(f"{weight} does not fit 8 characters")
    return (
        status.encode("ascii")
        + b","
        + (b"NT" if net else b"GS")
        + b","
        + bytes((device_id, lamp))
        + b","
        + text.encode("ascii")
        + b" "
        + unit.rjust(2).encode("ascii")
        + b"\r\n"
    )


class EcrParser:
    """Answers to DC1 from a byte stream: ``feed`` never raises, whatever arrives."""

    def __init__(self, *, fmt: EcrFormat = EcrFormat()) -> None:
        self.fmt = fmt
        self._scanner: FrameScanner[Reading] = FrameScanner(
            start=b"\x01\x02", end=b"\x03\x04", decode=self._decode, max_frame=MAX_FRAME
        )

    def _decode(self, frame: bytes) -> Reading:
        return decode_ecr_frame(frame, fmt=self.fmt)

    @property
    def discarded(self) -> int:
        """Bytes dropped so far (garbage, undecodable or overlong frames)."""
        return self._scanner.discarded

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame (at most ``MAX_FRAME``)."""
        return self._scanner.pending

    def feed(self, data: bytes) -> list[Reading]:
        return self._scanner.feed(data)


class ContinuousParser:
    """Lines from a streaming indicator: ``feed`` never raises, whatever arrives.

    Framed by CR LF alone, so after noise every offset is tried as a line start.
    """

    def __init__(self) -> None:
        self._scanner: FrameScanner[Reading] = FrameScanner(
            start=b"", end=b"\r\n", decode=decode_continuous_line, max_frame=MAX_FRAME
        )

    @property
    def discarded(self) -> int:
        """Bytes dropped so far (garbage, undecodable or overlong lines)."""
        return self._scanner.discarded

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished line (at most ``MAX_FRAME``)."""
        return self._scanner.pending

    def feed(self, data: bytes) -> list[Reading]:
        return self._scanner.feed(data)
