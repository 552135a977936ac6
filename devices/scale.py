"""What every scale codec produces: a :class:`Reading`, plus the helpers they share.

A reading's weight is a ``Decimal`` exactly as the scale sent it (``"01.230"`` stays
``Decimal("1.230")``, precision kept); a float never appears anywhere in a scale codec,
because a price is computed from it.

Each protocol module (``scale_toledo``, ``scale_scp01``, ``scale_cas``) has a pure
``decode_frame(frame) -> ...`` that raises :class:`devices.errors.FrameError`, and a stream
parser whose ``feed(data) -> list[...]`` never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from devices.errors import UNIT_UNKNOWN, WEIGHT_FORMAT, FrameError

__all__ = [
    "FAULT_CALIBRATION",
    "FAULT_EEPROM",
    "FAULT_INITIAL_ZERO",
    "FAULT_RAM",
    "FAULT_ROM",
    "UNITS",
    "Reading",
    "check_unit",
    "parse_unit",
    "parse_weight",
]

UNITS = frozenset({"kg", "g", "lb", "oz"})
"""Units a reading can carry, lower case as they are written on a label."""

# Faults a scale reports next to its weight (SCP-01 status bytes, §2.4). A reading with any
# fault must not be used for a sale: the scale itself says it cannot be trusted.
FAULT_RAM = "ram"
FAULT_ROM = "rom"
FAULT_EEPROM = "eeprom"
FAULT_CALIBRATION = "calibration"
FAULT_INITIAL_ZERO = "initial-zero"


@dataclass(frozen=True, slots=True)
class Reading:
    """One weight from a scale.

    ``stable`` is false while the scale reports motion. ``over_capacity`` and
    ``under_zero`` mean the number is not the load on the platter. ``net`` is true when a
    tare was subtracted; ``at_zero`` when the scale says it sits at its zero point (not
    every protocol reports it; false then). ``faults`` holds ``FAULT_*`` names.
    """

    weight: Decimal
    unit: str
    stable: bool
    over_capacity: bool = False
    under_zero: bool = False
    net: bool = False
    at_zero: bool = False
    faults: frozenset[str] = field(default_factory=frozenset)

    @property
    def usable(self) -> bool:
        """True when the weight may be sold by: stable, in range and fault-free."""
        return self.stable and not self.over_capacity and not self.under_zero and not self.faults


def check_unit(unit: str) -> str:
    """Validate a *configured* unit (a caller's setting): ValueError if unknown."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    return unit


def parse_unit(text: str, *, frame: bytes | None = None) -> str:
    """A unit as a scale sent it (``"KG"``, ``" g"``, ``"lb"``): FrameError if unknown."""
    unit = text.strip().lower()
    if unit not in UNITS:
        raise FrameError(UNIT_UNKNOWN, f"unknown unit {text!r}", frame=frame)
    return unit


_WEIGHT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_weight(text: str, *, frame: bytes | None = None) -> Decimal:
    """A decimal weight field, optionally signed, surrounding spaces allowed.

    ``re.ASCII``-style digits only: ``Decimal`` would also take ``"NaN"``, ``"1e3"`` or
    Arabic-Indic digits, none of which a scale sends.
    """
    stripped = text.strip(" ")
    if not _WEIGHT.fullmatch(stripped):
        raise FrameError(WEIGHT_FORMAT, f"not a decimal weight: {text!r}", frame=frame)
    return Decimal(stripped)
