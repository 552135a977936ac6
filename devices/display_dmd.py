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
updates to an initialized display.

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
"""

from __future__ import annotations

import codecs
import unicodedata

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
    "encode_blink",
    "encode_brightness",
    "encode_line",
    "encode_lines",
    "encode_move_cursor",
    "encode_screen",
    "encode_select_code_table",
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


def encode_move_cursor(column: int, row: int) -> bytes:
    """``US $ x y``: column 1..20, row 1..2 (1-based, as the display counts)."""
    if not (1 <= column <= COLUMNS and 1 <= row <= ROWS):
        raise ValueError(f"cursor position must be column 1..{COLUMNS}, row 1..{ROWS}")
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
    _check_encoding(encoding, replacement)
    fallback = replacement.encode(encoding)
    out = bytearray()
    for char in unicodedata.normalize("NFC", text):
        if len(out) == width:
            break
        if unicodedata.category(char) == "Mn":
            continue  # a combining mark NFC could not merge: drop it, keep the letter
        encoded = _one_byte(char, encoding)
        if encoded is None:
            base = "".join(
                c for c in unicodedata.normalize("NFKD", char) if unicodedata.category(c) != "Mn"
            )
            encoded = _one_byte(base, encoding) if len(base) == 1 else None
        out += fallback if encoded is None else encoded
    return bytes(out.ljust(width, b" "))


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
    setup = INITIALIZE + OVERWRITE_MODE + CURSOR_OFF
    if code_table is not None:
        setup += encode_select_code_table(code_table)
    screen = setup + encode_lines(line1, line2, encoding=encoding, replacement=replacement)
    return SELECT_DISPLAY + screen + SELECT_PRINTER if for_pass_through else screen
