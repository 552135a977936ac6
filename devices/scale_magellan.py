"""Datalogic Magellan scanner-scale, single-cable protocol (sans-IO).

Theory of operation (peripherals.md §2.3, Datalogic KB KA-01089): on the single-cable RS-232
or USB-COM interface the scale shares the scanner's link, so its frames carry a prefix
(default ``S``) and a terminator (default ``CR``), both programmable in the scanner:

* ``S11 CR`` (weight request) → ``S11 wwww(w) CR``, sent only for a stable weight within range;
* ``S14 CR`` (scale monitor) → ``S14 s [wwww(w)] CR`` where ``s`` is the state:
  ``0`` cannot find zero, ``1`` unstable (motion), ``2`` over capacity, ``3`` stable zero,
  ``4`` stable non-zero weight (followed by the weight), ``5`` under zero.

The weight has **no decimal point**: the host places it. Imperial scales send 4 digits in
hundredths of a pound (``0150`` = 1.50 lb), metric ones 5 digits in grams of a kilogram
(``01234`` = 1.234 kg). The caller says which unit the scale is set to.

Uncertain in the reference, handled here as stated (configurable):

* the prefix and terminator are programmable: :class:`MagellanParser` takes both;
* the reference does not say what ``S11`` answers when the weight is not stable; no frame
  (the host's read times out) is what "only if stable" reads as, so the shell should ask
  ``S14`` for the reason, which always answers;
* a weight of a length other than 4 (lb) or 5 (kg) digits is refused (``FRAME_LENGTH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from devices._framing import FrameScanner, strip_parity
from devices.errors import FRAME_DELIMITER, FRAME_LENGTH, STATUS_UNKNOWN, WEIGHT_FORMAT, FrameError
from devices.scale import Reading

__all__ = [
    "MONITOR",
    "REQUEST_WEIGHT",
    "MagellanParser",
    "MagellanState",
    "decode_frame",
    "encode_monitor_frame",
    "encode_request",
    "encode_weight_frame",
]

Unit = Literal["kg", "lb"]
MAX_FRAME: Final = 16
REQUEST_WEIGHT: Final = b"S11\r"
MONITOR: Final = b"S14\r"
_DIGITS: Final[dict[str, int]] = {"lb": 4, "kg": 5}
_DECIMALS: Final[dict[str, int]] = {"lb": 2, "kg": 3}


@dataclass(frozen=True, slots=True)
class MagellanState:
    """A scale-monitor answer with no weight in it (states 0, 1, 2, 3, 5)."""

    code: int
    meaning: str


_STATES: Final[dict[int, str]] = {
    0: "cannot find zero",
    1: "unstable",
    2: "over capacity",
    3: "stable zero",
    5: "under zero",
}


def encode_request(
    command: Literal["11", "14"], *, prefix: bytes = b"S", end: bytes = b"\r"
) -> bytes:
    return prefix + command.encode() + end


def _weight(text: bytes, unit: Unit, frame: bytes) -> Decimal:
    if len(text) != _DIGITS[unit]:
        raise FrameError(
            FRAME_LENGTH,
            f"a {unit} weight has {_DIGITS[unit]} digits, got {len(text)}",
            frame=frame,
        )
    if not text.isdigit():
        raise FrameError(WEIGHT_FORMAT, f"not digits: {text!r}", frame=frame)
    return Decimal(int(text)).scaleb(-_DECIMALS[unit])


def decode_frame(
    frame: bytes, *, unit: Unit = "kg", prefix: bytes = b"S", end: bytes = b"\r"
) -> Reading | MagellanState:
    """One frame (prefix to terminator, both included)."""
    if not frame.startswith(prefix) or not frame.endswith(end):
        raise FrameError(FRAME_DELIMITER, "not a scale frame", frame=frame)
    body = frame[len(prefix) : len(frame) - len(end)]
    kind, rest = body[:2], body[2:]
    if kind == b"11":
        return Reading(weight=_weight(rest, unit, frame), unit=unit, stable=True)
    if kind != b"14" or not rest:
        raise FrameError(FRAME_DELIMITER, f"unknown scale answer {body[:3]!r}", frame=frame)
    state, digits = rest[0] - ord("0"), rest[1:]
    if state == 4:
        return Reading(weight=_weight(digits, unit, frame), unit=unit, stable=True)
    if state not in _STATES or digits:
        raise FrameError(STATUS_UNKNOWN, f"unknown scale state {rest!r}", frame=frame)
    if state == 3:
        return Reading(
            weight=Decimal(0).scaleb(-_DECIMALS[unit]), unit=unit, stable=True, at_zero=True
        )
    if state == 1:
        return Reading(weight=Decimal(0), unit=unit, stable=False)
    if state == 2:
        return Reading(weight=Decimal(0), unit=unit, stable=True, over_capacity=True)
    if state == 5:
        return Reading(weight=Decimal(0), unit=unit, stable=True, under_zero=True)
    return MagellanState(state, _STATES[state])


def encode_weight_frame(weight: Decimal, *, unit: Unit = "kg", monitor: bool = False) -> bytes:
    """What a scale sends for a stable ``weight`` (for emulators and tests)."""
    scaled = weight.scaleb(_DECIMALS[unit])
    if scaled != scaled.to_integral_value() or scaled < 0:
        raise ValueError(f"{weight} {unit} is not a {_DECIMALS[unit]}-decimal weight")
    digits = f"{int(scaled):0{_DIGITS[unit]}d}"
    if len(digits) != _DIGITS[unit]:
        raise ValueError(f"{weight} {unit} does not fit {_DIGITS[unit]} digits")
    return (b"S144" if monitor else b"S11") + digits.encode() + b"\r"


def encode_monitor_frame(state: int) -> bytes:
    """A scale-monitor answer without a weight (state 0, 1, 2, 3 or 5)."""
    if state not in _STATES:
        raise ValueError(f"state {state} carries a weight or is unknown")
    return b"S14" + str(state).encode() + b"\r"


class MagellanParser:
    """Frames from a byte stream (the scanner's barcode frames on the same link are not
    scale frames: they are dropped and counted in ``discarded``). ``feed`` never raises."""

    def __init__(self, *, unit: Unit = "kg", prefix: bytes = b"S", end: bytes = b"\r") -> None:
        if unit not in _DIGITS:
            raise ValueError("a Magellan scale weighs in kg or lb")
        self.unit: Unit = unit
        self._prefix, self._end = prefix, end
        self._scanner: FrameScanner[Reading | MagellanState] = FrameScanner(
            start=prefix, end=end, decode=self._decode, max_frame=MAX_FRAME
        )

    def _decode(self, frame: bytes) -> Reading | MagellanState:
        return decode_frame(frame, unit=self.unit, prefix=self._prefix, end=self._end)

    @property
    def discarded(self) -> int:
        return self._scanner.discarded

    @property
    def pending(self) -> int:
        return self._scanner.pending

    def feed(self, data: bytes) -> list[Reading | MagellanState]:
        return self._scanner.feed(strip_parity(data))
