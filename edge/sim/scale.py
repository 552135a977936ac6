"""Serial scales on a pseudo-terminal, for tests and the demo: Mettler-Toledo 8217, Datalogic
Magellan (single cable), CAS ECR (DC1) and NCI / Weigh-Tronix SCP-01.

Theory of operation
-------------------
The emulator owns both ends of a pty: the hub opens the device side (:attr:`path`, like
``/dev/ttyUSB0``) with its serial settings, and the emulator reads the controller side on the
event loop (``loop.add_reader``), splits what arrives into commands as its protocol frames
them, and answers each with the frame the scale would send. The frames are encoded with the
codecs the hub decodes with (``devices.scale_*``), seen from the scale's side:

==========  =========================  ==============================================
protocol    weight request             other commands answered
==========  =========================  ==============================================
toledo      ``W``                      ``Z`` zero, ``T`` tare, ``C`` clear tare (§2.2)
magellan    ``S14 CR`` (``S11 CR``)     none: no host zero or tare (§2.3)
cas         ``DC1``                    none: the ECR poll has no zero or tare (§2.5)
scp01       ``W CR``                   ``S CR`` status, ``Z CR`` zero; else ``LF ? CR ETX``
==========  =========================  ==============================================

*The platter* is :attr:`script`, a list of :class:`Platter` states: each weight request takes
the next one and the last one stays (``[moving, moving, still]`` settles on the third poll).
What is shown is the gross weight less the zero point and the tare, as on the scale: zero
moves the zero point to the gross weight, tare subtracts it and marks weights net; both are
refused in motion (and zero with a tare, as the 8217 does, §2.2). A shown weight below zero is
"under zero"; a gross weight above :attr:`capacity`, or a platter scripted
``over_capacity``, is "over capacity". A CAS ECR frame cannot say over capacity (it carries
``S``/``U`` and a sign only, §2.5): scripting it for ``cas`` is a ValueError, not a guess.

*The line.* This kernel's ptys refuse 7 data bits and parity (peripherals.md §4.3), so the
emulator's :class:`Line` is 8N1 by default; it is injectable and applied to the pty at start,
so a port that refuses it says so at once (``termios.error``), and
:meth:`ScaleEmulator.device_settings` gives the ``[[devices.scales]]`` entry that matches it.
``parity_bit`` sends a 7-bit protocol's bytes with bit 7 holding the parity bit, which is how
a 7E1 / 7O1 scale reads on an 8N1 port (the hub's codecs clear it: ``_framing.strip_parity``).
The baud rate is not enforced on a pty.

What a test looks at: :attr:`requests` (every command received, framed), :attr:`weighs`
(weight requests so far), :attr:`zero_point`, :attr:`tare`. ``silent`` records and answers
nothing (a scale switched off); ``refuse`` names commands an SCP-01 answers ``?`` to (a scale
with zero disabled in its setup).

Calling contract: enter it (``with`` or ``async with``) on the loop the hub runs on.
"""

from __future__ import annotations

import asyncio
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Literal, Self

from devices import scale_cas, scale_magellan, scale_scp01, scale_toledo
from devices._framing import strip_parity
from devices.scale import (
    FAULT_CALIBRATION,
    FAULT_EEPROM,
    FAULT_INITIAL_ZERO,
    FAULT_RAM,
    FAULT_ROM,
)
from devices.scale_scp01 import Scp01Status
from devices.scale_toledo import ToledoStatus

__all__ = ["PROTOCOLS", "Line", "Platter", "ScaleEmulator", "ScaleProtocol"]

ScaleProtocol = Literal["toledo", "magellan", "cas", "scp01"]
PROTOCOLS: Final[tuple[ScaleProtocol, ...]] = ("toledo", "magellan", "cas", "scp01")

_SEVEN_BIT: Final = frozenset({"toledo", "magellan", "scp01"})
"""Protocols of 7-bit characters (7E1 on the scale: peripherals.md §2.1); CAS is 8N1."""
_DECIMALS: Final = {"kg": 3, "lb": 2}
_MAX_COMMAND: Final = 64
"""A CR-terminated command longer than this is garbage: dropped."""


@dataclass(frozen=True, slots=True)
class Line:
    """Serial settings (the names of ``[[devices.scales]]``)."""

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


@dataclass(frozen=True, slots=True)
class Platter:
    """What lies on the platter when the scale is asked: the gross weight, in the scale's
    unit, and whether it is still moving."""

    weight: Decimal = Decimal("1.234")
    motion: bool = False
    over_capacity: bool = False
    """Over capacity whatever the weight (else: weight above the emulator's capacity)."""
    faults: frozenset[str] = frozenset()
    """Internal faults the scale reports (``devices.scale.FAULT_*``; SCP-01 only)."""


class ScaleEmulator:
    """The scale's side of a pty (module docstring)."""

    def __init__(
        self,
        protocol: ScaleProtocol = "toledo",
        *,
        unit: Literal["kg", "lb"] = "kg",
        capacity: Decimal = Decimal(15),
        line: Line = Line(),
        parity_bit: Literal["E", "O"] | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"no scale protocol {protocol!r} (known: {list(PROTOCOLS)})")
        if parity_bit is not None and protocol not in _SEVEN_BIT:
            raise ValueError(f"{protocol} sends 8-bit characters: no parity bit in bit 7")
        self.protocol: ScaleProtocol = protocol
        self.unit = unit
        self.capacity = capacity
        self.line = line
        self.parity_bit = parity_bit
        self._script: list[Platter] = [Platter()]
        self.requests: list[bytes] = []
        """Every command received, as framed by the protocol (``b"W"``, ``b"S14\\r"``)."""
        self.weighs = 0
        """Weight requests answered or not (``silent``) so far."""
        self.zero_point = Decimal(0)
        self.tare = Decimal(0)
        self.silent = False
        self.refuse: set[bytes] = set()
        """SCP-01 commands answered ``LF ? CR ETX`` (a function disabled in the setup)."""
        self.path = ""
        self._master: int | None = None
        self._slave: int | None = None
        self._pending = bytearray()
        self._platter = self._script[0]
        self._answer: dict[ScaleProtocol, Callable[[bytes], bytes | None]] = {
            "toledo": self._toledo,
            "magellan": self._magellan,
            "cas": self._cas,
            "scp01": self._scp01,
        }

    # -- the script ----------------------------------------------------------------------

    @property
    def script(self) -> list[Platter]:
        return self._script

    @script.setter
    def script(self, platters: list[Platter]) -> None:
        if not platters:
            raise ValueError("a script holds at least one platter state")
        if self.protocol == "cas" and any(self._over(p) for p in platters):
            raise ValueError(
                "a CAS ECR (DC1) frame cannot say over capacity: it carries S/U and a sign "
                "only (peripherals.md §2.5); what a CAS scale sends when overloaded is not "
                "in our sources"
            )
        if self.protocol != "scp01" and any(p.faults for p in platters):
            raise ValueError(f"only an SCP-01 frame reports internal faults, not {self.protocol}")
        self._script = list(platters)
        self._platter = self._script[0]

    def _next_platter(self) -> Platter:
        self._platter = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        return self._platter

    def _over(self, platter: Platter) -> bool:
        return platter.over_capacity or platter.weight > self.capacity

    def _shown(self, platter: Platter) -> Decimal:
        shown = platter.weight - self.zero_point - self.tare
        return shown.quantize(Decimal(1).scaleb(-_DECIMALS[self.unit]))

    # -- the line ------------------------------------------------------------------------

    def device_settings(self) -> dict[str, Any]:
        """The ``[[devices.scales]]`` keys that reach this scale: port, protocol, unit, line."""
        line = self.line
        return {
            "port": self.path, "protocol": self.protocol, "unit": self.unit,
            "baudrate": line.baudrate, "bytesize": line.bytesize, "parity": line.parity,
            "stopbits": line.stopbits,
        }  # fmt: skip

    def open(self) -> None:
        """Open the pty, apply :attr:`line` (``termios.error`` if the pty refuses it) and
        start answering. Needs a running loop."""
        self._master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        try:
            self._apply_line(self._slave)
            asyncio.get_running_loop().add_reader(self._master, self._readable)
        except BaseException:
            self._close_fds()
            raise

    def close(self) -> None:
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def _apply_line(self, fd: int) -> None:
        line = self.line
        iflag, oflag, cflag, lflag, ispeed, _ospeed, cc = termios.tcgetattr(fd)
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB)
        cflag |= termios.CS7 if line.bytesize == 7 else termios.CS8
        if line.parity != "N":
            cflag |= termios.PARENB | (termios.PARODD if line.parity == "O" else 0)
        if line.stopbits == 2:
            cflag |= termios.CSTOPB
        speed = getattr(termios, f"B{line.baudrate}", ispeed)
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 256)
        except OSError:  # pragma: no cover - EIO: no device side open (we hold one)
            return
        if self.protocol in _SEVEN_BIT:
            data = strip_parity(data)
        for command in self._commands(data):
            self.requests.append(command)
            if command in self._weight_requests():
                self.weighs += 1
            if self.silent:
                continue
            answer = self._answer[self.protocol](command)
            if answer is not None:
                os.write(self._master, self._with_parity(answer))

    def _commands(self, data: bytes) -> list[bytes]:
        """Toledo and CAS commands are one byte; Magellan and SCP-01 ones end with CR."""
        if self.protocol in ("toledo", "cas"):
            return [bytes((byte,)) for byte in data]
        self._pending += data
        commands = []
        while (end := self._pending.find(b"\r")) >= 0:
            commands.append(bytes(self._pending[: end + 1]))
            del self._pending[: end + 1]
        del self._pending[:-_MAX_COMMAND]
        return commands

    def _weight_requests(self) -> tuple[bytes, ...]:
        return {
            "toledo": (scale_toledo.REQUEST_WEIGHT,),
            "magellan": (scale_magellan.MONITOR, scale_magellan.REQUEST_WEIGHT),
            "cas": (scale_cas.REQUEST_WEIGHT,),
            "scp01": (scale_scp01.REQUEST_WEIGHT,),
        }[self.protocol]

    def _with_parity(self, frame: bytes) -> bytes:
        if self.parity_bit is None:
            return frame
        odd = self.parity_bit == "O"
        return bytes(b | (0x80 if (b.bit_count() % 2 == 1) != odd else 0) for b in frame)

    # -- zero and tare (the scale's rules, §2.2) -----------------------------------------

    def _zero(self) -> bool:
        if self._platter.motion or self.tare:
            return False
        self.zero_point = self._platter.weight
        return True

    def _set_tare(self) -> bool:
        if self._platter.motion:
            return False
        self.tare = self._platter.weight - self.zero_point
        return True

    # -- the protocols -------------------------------------------------------------------

    def _toledo(self, command: bytes) -> bytes | None:
        if command == scale_toledo.REQUEST_WEIGHT:
            platter = self._next_platter()
            shown = self._shown(platter)
            if platter.motion or self._over(platter) or shown < 0:
                return scale_toledo.encode_status_frame(
                    ToledoStatus(
                        in_motion=platter.motion, over_capacity=self._over(platter),
                        under_zero=shown < 0, net=bool(self.tare),
                    )
                )  # fmt: skip
            return scale_toledo.encode_weight_frame(shown, unit=self.unit, net=bool(self.tare))
        if command == scale_toledo.ZERO:
            self._zero()
        elif command == scale_toledo.TARE:
            self._set_tare()
        elif command == scale_toledo.CLEAR_TARE:
            self.tare = Decimal(0)
        else:
            return None
        # Answered with the state: motion if it was refused for motion.
        return scale_toledo.encode_status_frame(
            ToledoStatus(in_motion=self._platter.motion, net=bool(self.tare))
        )

    def _magellan(self, command: bytes) -> bytes | None:
        if command not in (scale_magellan.MONITOR, scale_magellan.REQUEST_WEIGHT):
            return None  # a barcode-side command, or none the scale knows
        platter = self._next_platter()
        shown = self._shown(platter)
        state = (
            1 if platter.motion else 2 if self._over(platter) else 5 if shown < 0
            else 3 if shown == 0 else 4
        )  # fmt: skip
        if command == scale_magellan.REQUEST_WEIGHT:  # S11: only a stable weight in range
            if state in (3, 4):
                return scale_magellan.encode_weight_frame(shown, unit=self.unit)
            return None
        if state == 4:
            return scale_magellan.encode_weight_frame(shown, unit=self.unit, monitor=True)
        return scale_magellan.encode_monitor_frame(state)

    def _cas(self, command: bytes) -> bytes | None:
        if command != scale_cas.REQUEST_WEIGHT:
            return None
        platter = self._next_platter()
        return scale_cas.encode_ecr_frame(
            self._shown(platter), unit=self.unit, stable=not platter.motion
        )

    def _scp01_status(self, platter: Platter) -> Scp01Status:
        shown = self._shown(platter)
        faults = platter.faults
        return Scp01Status(
            in_motion=platter.motion, at_zero=shown == 0 and not platter.motion,
            under_capacity=shown < 0, over_capacity=self._over(platter), net=bool(self.tare),
            ram_error=FAULT_RAM in faults, eeprom_error=FAULT_EEPROM in faults,
            rom_error=FAULT_ROM in faults, faulty_calibration=FAULT_CALIBRATION in faults,
            initial_zero_error=FAULT_INITIAL_ZERO in faults,
        )  # fmt: skip

    def _scp01(self, command: bytes) -> bytes | None:
        if command in self.refuse:
            return scale_scp01.encode_rejected_frame()
        if command == scale_scp01.REQUEST_WEIGHT:
            platter = self._next_platter()
            return scale_scp01.encode_weight_frame(
                self._shown(platter), self.unit, self._scp01_status(platter)
            )
        if command == scale_scp01.ZERO:
            self._zero()
        elif command != scale_scp01.REQUEST_STATUS:
            return scale_scp01.encode_rejected_frame()
        return scale_scp01.encode_status_frame(self._scp01_status(self._platter))
