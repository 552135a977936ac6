"""Epson DM-D customer display (ESC/POS display command set), 2 lines × 20 columns (sans-IO).

Theory of operation (peripherals.md §3.1, DM-D110 specification and the Epson-mode tables
of compatible displays): the display takes text bytes in the selected code table and a
few control sequences. A full screen is written as the reference's recipe::

    1B 40          ESC @     initialize: power-on settings, screen cleared, cursor home
    1F 01          US MD1    overwrite mode
    1F 43 00       US C 0    cursor off
    0C             CLR       clear
    <20 bytes>               line 1
    1F 24 01 02    US $ 1 2  cursor to column 1, row 2
    <20 bytes>               line 2

``encode_screen`` produces exactly that (with ``ESC t n`` after ``US C 0`` if a code table
is chosen, because ``ESC @`` resets it). ``encode_lines`` is the part from ``CLR`` on, for
updates to an initialized display. For other geometries (a 4 × 20 or 2 × 40 display of the
same command set) ``encode_setup`` and ``encode_text`` take ``columns`` and ``rows``.

Text is made safe for the wire: every character becomes exactly one byte of the code page,
so a line is always 20 columns; a character the code page lacks is written without its
accents if that fits (``é`` → ``e`` on a page without ``é``) and as the replacement
character otherwise; control characters become the replacement too, because a ``0C`` or
``1B`` inside a product name would clear the screen or start a command.

The code page behind each ``ESC t`` number is not in the reference for the display (only
for printers: 0 is CP437 on Epson). The encoding is therefore a parameter, default
``cp437`` with table 0, and must be set together with ``code_table`` for other pages.

A display between the host and the printer (pass-through, §3.2) forwards everything to
the printer after ``ESC = 1``; ``for_pass_through=True`` wraps the bytes in ``ESC = 2`` …
``ESC = 1`` as python-escpos does, so the display gets them and later print jobs still
reach the printer.

The display's side
------------------
``DmdDecoder`` is the display: it executes the same command set on a screen buffer (bytes
in, :data:`DisplayEvent` values out, :attr:`DmdDecoder.lines` the text on the glass). It is
what the test emulator (``edge.sim.display``) runs; it never raises, keeps at most one
partial command (8 bytes) between feeds, and reports commands it does not know as
:class:`UnknownCommand`. Cursor movement at the screen's edges follows the Epson-mode
tables of compatible displays (peripherals.md §3.1 [S]): in overwrite mode the cursor wraps
from the end of a line to the start of the next and from the bottom-right to home; in
vertical-scroll mode a write past the bottom-right scrolls the screen up one line
(horizontal-scroll mode is executed as overwrite mode: not emulated). While
``ESC = 1`` (printer only, §3.2) is selected the display ignores everything but ``ESC =``.

The DM-D command set has no status request: the display never answers (peripherals.md §3.1
lists none), so a host learns only whether its serial line accepts bytes.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "CLEAR",
    "CLEAR_LINE",
    "COLUMNS",
    "CURSOR_HOME",
    "CURSOR_OFF",
    "CURSOR_ON",
    "DM_D110_CODE_TABLES",
    "HORIZONTAL_SCROLL_MODE",
    "INITIALIZE",
    "OVERWRITE_MODE",
    "ROWS",
    "SELECT_BOTH",
    "SELECT_DISPLAY",
    "SELECT_PRINTER",
    "VERTICAL_SCROLL_MODE",
    "Cleared",
    "DisplayEvent",
    "DmdDecoder",
    "Initialized",
    "LineCleared",
    "PeripheralSelected",
    "SettingChanged",
    "TextWritten",
    "UnknownCommand",
    "encode_blink",
    "encode_brightness",
    "encode_line",
    "encode_lines",
    "encode_move_cursor",
    "encode_screen",
    "encode_select_code_table",
    "encode_setup",
    "encode_text",
    "fit_line",
]

COLUMNS = 20
ROWS = 2

INITIALIZE = b"\x1b\x40"
CLEAR = b"\x0c"
CLEAR_LINE = b"\x18"
"""CAN: clear the line the cursor is on."""
CURSOR_HOME = b"\x0b"
OVERWRITE_MODE = b"\x1f\x01"
VERTICAL_SCROLL_MODE = b"\x1f\x02"
HORIZONTAL_SCROLL_MODE = b"\x1f\x03"
CURSOR_OFF = b"\x1f\x43\x00"
CURSOR_ON = b"\x1f\x43\x01"
SELECT_PRINTER = b"\x1b\x3d\x01"
SELECT_DISPLAY = b"\x1b\x3d\x02"
SELECT_BOTH = b"\x1b\x3d\x03"

DM_D110_CODE_TABLES = frozenset({0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 254, 255})
"""``ESC t n`` values the DM-D110 accepts (§3.1: 0–5, 16–19, 254, 255)."""


def encode_move_cursor(column: int, row: int, *, columns: int = COLUMNS, rows: int = ROWS) -> bytes:
    """``US $ x y``: column 1..20, row 1..2 (1-based, as the display counts); ``columns`` and
    ``rows`` for a display of another size."""
    if not (1 <= column <= min(columns, 255) and 1 <= row <= min(rows, 255)):
        raise ValueError(f"cursor position must be column 1..{columns}, row 1..{rows}")
    return bytes((0x1F, 0x24, column, row))


def encode_brightness(level: int) -> bytes:
    """``US X n``: brightness 1 (dimmest) .. 4 (brightest)."""
    if not 1 <= level <= 4:
        raise ValueError(f"brightness is 1..4, got {level}")
    return bytes((0x1F, 0x58, level))


def encode_blink(interval: int) -> bytes:
    """``US E n``: blink n×50 ms on / off; 0 = steady, 255 = display off."""
    if not 0 <= interval <= 255:
        raise ValueError(f"blink interval is 0..255, got {interval}")
    return bytes((0x1F, 0x45, interval))


def encode_select_code_table(table: int) -> bytes:
    """``ESC t n``; ValueError for a number the DM-D110 does not list."""
    if table not in DM_D110_CODE_TABLES:
        raise ValueError(f"code table must be one of {sorted(DM_D110_CODE_TABLES)}")
    return bytes((0x1B, 0x74, table))


def _check_encoding(encoding: str, replacement: str) -> None:
    codecs.lookup(encoding)  # LookupError for an unknown codec
    if len(replacement) != 1 or len(replacement.encode(encoding)) != 1:
        raise ValueError("the replacement must be one character that encodes to one byte")
    if unicodedata.category(replacement) == "Cc":
        raise ValueError("the replacement must not be a control character")


def _one_byte(char: str, encoding: str) -> bytes | None:
    """``char`` as exactly one printable byte of ``encoding``, or None."""
    if unicodedata.category(char) == "Cc":
        return None
    try:
        encoded = char.encode(encoding)
    except UnicodeEncodeError:
        return None
    return encoded if len(encoded) == 1 else None


def encode_line(
    text: str, *, width: int = COLUMNS, encoding: str = "cp437", replacement: str = "?"
) -> bytes:
    """``text`` as exactly ``width`` bytes: truncated, padded with spaces, made safe.

    One character, one column, one byte (see the module docstring for what is replaced).
    """
    return fit_line(text, width=width, encoding=encoding, replacement=replacement)[0]


def fit_line(
    text: str, *, width: int = COLUMNS, encoding: str = "cp437", replacement: str = "?"
) -> tuple[bytes, bool]:
    """:func:`encode_line`, and whether ``text`` had to be cut to fit ``width`` columns."""
    _check_encoding(encoding, replacement)
    fallback = replacement.encode(encoding)
    out = bytearray()
    # Trailing spaces past the width are padding anyway: cutting them is no truncation.
    for char in unicodedata.normalize("NFC", text).rstrip(" "):
        if unicodedata.category(char) == "Mn":
            continue  # a combining mark NFC could not merge: drop it, keep the letter
        if len(out) == width:
            return bytes(out), True
        encoded = _one_byte(char, encoding)
        if encoded is None:
            base = "".join(
                c for c in unicodedata.normalize("NFKD", char) if unicodedata.category(c) != "Mn"
            )
            encoded = _one_byte(base, encoding) if len(base) == 1 else None
        out += fallback if encoded is None else encoded
    return bytes(out.ljust(width, b" ")), False


def encode_lines(
    line1: str, line2: str, *, encoding: str = "cp437", replacement: str = "?"
) -> bytes:
    """Clear and write both lines (display already initialized by ``encode_screen``)."""
    return (
        CLEAR
        + encode_line(line1, encoding=encoding, replacement=replacement)
        + encode_move_cursor(1, 2)
        + encode_line(line2, encoding=encoding, replacement=replacement)
    )


def encode_setup(code_table: int | None = None) -> bytes:
    """Initialize (screen cleared, power-on settings), overwrite mode, cursor off, and the
    code table if one is chosen: what a display needs once after it is (re)connected."""
    setup = INITIALIZE + OVERWRITE_MODE + CURSOR_OFF
    if code_table is not None:
        setup += encode_select_code_table(code_table)
    return setup


def encode_text(
    lines: Sequence[bytes], *, columns: int = COLUMNS, rows: int = ROWS, clear: bool = True
) -> bytes:
    """Write already fitted lines (:func:`fit_line`) from row 1 down: each one is placed with
    ``US $ 1 row``. ``clear`` clears the screen first, so rows without a line are blank;
    without it only the given rows are rewritten."""
    if len(lines) > rows:
        raise ValueError(f"{len(lines)} lines for a display of {rows} rows")
    out = bytearray(CLEAR if clear else b"")
    for row, line in enumerate(lines, start=1):
        out += encode_move_cursor(1, row, columns=columns, rows=rows) + line
    return bytes(out)


def encode_screen(
    line1: str,
    line2: str,
    *,
    code_table: int | None = None,
    encoding: str = "cp437",
    replacement: str = "?",
    for_pass_through: bool = False,
) -> bytes:
    """Initialize the display and write both lines (§3.1 recipe).

    ``code_table`` (``ESC t n``) and ``encoding`` (the Python codec for that table) go
    together; leave both at their defaults for the display's power-on table 0 / CP437.
    """
    screen = encode_setup(code_table) + encode_lines(
        line1, line2, encoding=encoding, replacement=replacement
    )
    return SELECT_DISPLAY + screen + SELECT_PRINTER if for_pass_through else screen


# -- the display's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Initialized:
    """``ESC @``: power-on settings, screen cleared, cursor home."""


@dataclass(frozen=True, slots=True)
class Cleared:
    """``CLR``: screen cleared, cursor home."""


@dataclass(frozen=True, slots=True)
class LineCleared:
    """``CAN``: the cursor's line (1-based ``row``) cleared."""

    row: int


@dataclass(frozen=True, slots=True)
class TextWritten:
    """Characters written from ``row``, ``column`` (1-based) on; ``raw`` as received."""

    row: int
    column: int
    raw: bytes


SettingName: TypeAlias = Literal[
    "mode", "cursor", "brightness", "blink", "code_table", "international"
]


@dataclass(frozen=True, slots=True)
class SettingChanged:
    """``US MDn`` (mode 1..3), ``US C``, ``US X``, ``US E``, ``ESC t``, ``ESC R``."""

    name: SettingName
    value: int


@dataclass(frozen=True, slots=True)
class PeripheralSelected:
    """``ESC = n``: 1 printer only (the display ignores what follows), 2 display, 3 both."""

    value: int


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """Bytes the decoder does not know (skipped: a control byte, or an ``ESC``/``US`` pair)."""

    raw: bytes


DisplayEvent: TypeAlias = (
    Initialized
    | Cleared
    | LineCleared
    | TextWritten
    | SettingChanged
    | PeripheralSelected
    | UnknownCommand
)

ESC: Final = 0x1B
US: Final = 0x1F

#: Length (prefix included) of each multi-byte command the decoder knows (§3.1 table).
_LENGTHS: Final[dict[tuple[int, int], int]] = {
    (ESC, 0x40): 2,  # ESC @
    (ESC, 0x74): 3,  # ESC t n
    (ESC, 0x52): 3,  # ESC R n
    (ESC, 0x3D): 3,  # ESC = n
    (ESC, 0x57): 8,  # ESC W n m x1 y1 x2 y2 (windows: accepted, not emulated)
    (US, 0x01): 2,
    (US, 0x02): 2,
    (US, 0x03): 2,
    (US, 0x0A): 2,  # US LF: cursor up
    (US, 0x0D): 2,  # US CR: rightmost
    (US, 0x42): 2,  # US B: bottom
    (US, 0x43): 3,  # US C n
    (US, 0x58): 3,  # US X n
    (US, 0x45): 3,  # US E n
    (US, 0x24): 4,  # US $ x y
}
_SETTINGS: Final[dict[tuple[int, int], SettingName]] = {
    (ESC, 0x74): "code_table",
    (ESC, 0x52): "international",
    (US, 0x43): "cursor",
    (US, 0x58): "brightness",
    (US, 0x45): "blink",
}


class DmdDecoder:
    """An Epson DM-D display executing bytes (module docstring, "The display's side").

    Calling contract: :meth:`feed` any chunking of the stream; it never raises.
    """

    def __init__(
        self, *, columns: int = COLUMNS, rows: int = ROWS, encoding: str = "cp437"
    ) -> None:
        if not (1 <= columns <= 255 and 1 <= rows <= 255):
            raise ValueError("columns and rows must be 1..255")
        codecs.lookup(encoding)
        self.columns = columns
        self.rows = rows
        self.encoding = encoding
        self._screen = [bytearray(b" " * columns) for _ in range(rows)]
        self._cursor = 0
        """Position as row * columns + column, 0-based."""
        self._pending = b""
        self._wrap = False
        """Vertical scroll mode, bottom-right written: the next character scrolls."""
        self.mode = 1
        """1 overwrite, 2 vertical scroll, 3 horizontal scroll."""
        self.peripheral = 2
        self.settings: dict[SettingName, int] = {}

    # -- looking in ----------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """The text on the glass, one string per row, padded to the width."""
        return [bytes(row).decode(self.encoding, errors="replace") for row in self._screen]

    @property
    def cursor(self) -> tuple[int, int]:
        """(column, row), 1-based."""
        row, column = divmod(self._cursor, self.columns)
        return column + 1, row + 1

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[DisplayEvent]:
        buffer = self._pending + data
        events: list[DisplayEvent] = []
        i = 0
        while i < len(buffer):
            byte = buffer[i]
            if byte in (ESC, US):
                if i + 1 >= len(buffer):
                    break  # wait for the command byte
                key = (byte, buffer[i + 1])
                length = _LENGTHS.get(key, 2)
                if i + length > len(buffer):
                    break  # wait for the parameters
                command = buffer[i : i + length]
                i += length
                event = self._command(key, command) if key in _LENGTHS else UnknownCommand(command)
            elif self.peripheral == 1:
                i += 1  # the printer's data passes by
                continue
            elif byte < 0x20 or byte == 0x7F:
                i += 1
                event = self._control(byte)
            else:
                start = i
                while i < len(buffer) and buffer[i] >= 0x20 and buffer[i] != 0x7F:
                    i += 1
                event = self._write(buffer[start:i])
            if event is not None and (
                self.peripheral != 1 or isinstance(event, PeripheralSelected)
            ):
                events.append(event)
        self._pending = buffer[i:]
        return events

    # -- inside --------------------------------------------------------------------------------

    def _command(self, key: tuple[int, int], command: bytes) -> DisplayEvent | None:
        self._wrap = False
        if key == (ESC, 0x3D):
            self.peripheral = command[2]
            return PeripheralSelected(command[2])
        if self.peripheral == 1:
            return None
        size = self.columns * self.rows
        if key == (ESC, 0x40):
            self._clear()
            self.mode = 1
            self.settings.clear()
            return Initialized()
        if key == (ESC, 0x57):
            return UnknownCommand(command)
        if key[0] == US and key[1] in (0x01, 0x02, 0x03):
            self.mode = key[1]
            return SettingChanged("mode", key[1])
        if key == (US, 0x24):
            column, row = command[2], command[3]
            if 1 <= column <= self.columns and 1 <= row <= self.rows:
                self._cursor = (row - 1) * self.columns + column - 1
                return None
            return UnknownCommand(command)  # out of range: ignored, as a display does
        if key == (US, 0x0A):
            self._cursor = (self._cursor - self.columns) % size
            return None
        if key == (US, 0x0D):
            self._cursor = (self._cursor // self.columns + 1) * self.columns - 1
            return None
        if key == (US, 0x42):
            self._cursor = (self.rows - 1) * self.columns + self._cursor % self.columns
            return None
        name = _SETTINGS[key]
        self.settings[name] = command[2]
        return SettingChanged(name, command[2])

    def _control(self, byte: int) -> DisplayEvent | None:
        self._wrap = False
        size = self.columns * self.rows
        if byte == 0x0C:
            self._clear()
            return Cleared()
        if byte == 0x18:
            row = self._cursor // self.columns
            self._screen[row][:] = b" " * self.columns
            return LineCleared(row + 1)
        if byte == 0x0B:
            self._cursor = 0
        elif byte == 0x08:
            self._cursor = (self._cursor - 1) % size
        elif byte == 0x09:
            self._cursor = (self._cursor + 1) % size
        elif byte == 0x0A:
            if self._cursor + self.columns < size:
                self._cursor += self.columns
            elif self.mode == 2:
                self._scroll_up()
            else:
                self._cursor %= self.columns
        elif byte == 0x0D:
            self._cursor -= self._cursor % self.columns
        else:
            return UnknownCommand(bytes((byte,)))
        return None

    def _write(self, text: bytes) -> TextWritten:
        column, row = self.cursor
        last = self.columns * self.rows - 1
        for byte in text:
            if self._wrap:  # vertical scroll: the next character opens a new bottom line
                self._scroll_up()
                self._wrap = False
            r, c = divmod(self._cursor, self.columns)
            self._screen[r][c] = byte
            if self._cursor < last:
                self._cursor += 1
            elif self.mode == 2:
                self._wrap = True
            else:
                self._cursor = 0  # overwrite mode: bottom-right wraps to home
        return TextWritten(row, column, bytes(text))

    def _scroll_up(self) -> None:
        self._screen.pop(0)
        self._screen.append(bytearray(b" " * self.columns))
        self._cursor = (self.rows - 1) * self.columns

    def _clear(self) -> None:
        for row in self._screen:
            row[:] = b" " * self.columns
        self._cursor = 0
