"""ESC/POS decoding for previews (sans-IO): the bytes a printer receives, executed the way a
receipt printer prints them, as jobs (ended by a cut) of preview blocks (text lines with their
alignment and boldness; images, barcodes and QR codes as labelled boxes), drawn to a PNG.

The hub draws the preview of a test print from the bytes it sends (the console shows it); the
printer emulator (edge.sim.printer) prints with the same engine, so both show the same thing.
Only what matters for a preview is interpreted; other commands are skipped by their length and
counted (``unknown_commands``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

Align: TypeAlias = Literal["left", "center", "right"]

ESC: Final = 0x1B
GS: Final = 0x1D
FS: Final = 0x1C
DLE: Final = 0x10
EOT: Final = 0x04
LF: Final = 0x0A
HT: Final = 0x09
FF: Final = 0x0C

# ESC t n → Python codec, for the code pages of escpos-printer-db's "default" profile that
# Python can decode (peripherals.md §1.3: python-escpos switches pages per character). A
# page missing here decodes as "?".
CODE_PAGES: Final[dict[int, str]] = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    13: "cp857",
    14: "cp737",
    15: "iso8859_7",
    16: "cp1252",
    17: "cp866",
    18: "cp852",
    19: "cp858",
    21: "cp874",
    33: "cp775",
    34: "cp855",
    35: "cp861",
    36: "cp862",
    37: "cp864",
    38: "cp869",
    39: "iso8859_2",
    40: "iso8859_15",
    44: "cp1125",
    45: "cp1250",
    46: "cp1251",
    47: "cp1253",
    48: "cp1254",
    49: "cp1255",
    50: "cp1256",
    51: "cp1257",
    52: "cp1258",
}

# GS k m → symbology name (function A: m = 0..6, NUL-terminated; function B: m = 65.., n-counted).
_BARCODES: Final[dict[int, str]] = {
    0: "UPC-A",
    1: "UPC-E",
    2: "EAN13",
    3: "EAN8",
    4: "CODE39",
    5: "ITF",
    6: "CODABAR",
    65: "UPC-A",
    66: "UPC-E",
    67: "EAN13",
    68: "EAN8",
    69: "CODE39",
    70: "ITF",
    71: "CODABAR",
    72: "CODE93",
    73: "CODE128",
    74: "GS1-128",
}

# ESC x and GS x commands with a fixed number of parameter bytes (Epson ESC/POS reference;
# only what matters for previews is interpreted, the rest is skipped by length).
_ESC_PARAMS: Final[dict[int, int]] = {
    **dict.fromkeys(b"@2<LSim", 0),
    **dict.fromkeys(b"!-3EGJMRTUVadet{ =%?ruv", 1),
    **dict.fromkeys(b"$\\Bcf", 2),
    ord("p"): 3,
    ord("W"): 8,
}
_GS_PARAMS: Final[dict[int, int]] = {
    ord(":"): 0,
    **dict.fromkeys(b"!BHIfhwabrETj", 1),
    **dict.fromkeys(b"LW$\\P", 2),
    ord("^"): 3,
}

MAX_COMMAND_BYTES: Final = 1 << 22
"""A command declaring more data than this (4 MiB) is taken as garbage: its two prefix bytes
are skipped and counted as unknown, instead of waiting for data that will not come."""


# --- the print engine (sans-IO) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreviewLine:
    text: str
    align: Align = "left"
    bold: bool = False


@dataclass(frozen=True, slots=True)
class PreviewGraphic:
    """Something the printer draws: an image (``GS v 0``, ``GS ( L``, ``ESC *``), a 1-D
    barcode (``GS k``) or a QR code (``GS ( k``), kept as a label and a size in dots."""

    kind: Literal["image", "barcode", "qr"]
    label: str
    width_dots: int = 0
    height_dots: int = 0


PreviewBlock: TypeAlias = PreviewLine | PreviewGraphic


@dataclass(slots=True)
class _JobBuilder:
    raw: bytearray = field(default_factory=bytearray)
    blocks: list[PreviewBlock] = field(default_factory=list)
    kicks: Counter[int] = field(default_factory=Counter)
    unknown: int = 0


@dataclass(frozen=True, slots=True)
class DrawerKicked:
    pin: int


@dataclass(frozen=True, slots=True)
class JobEnded:
    raw: bytes
    blocks: tuple[PreviewBlock, ...]
    cuts: int
    drawer_kicks: dict[int, int]
    unknown_commands: int


DecoderEvent: TypeAlias = DrawerKicked | JobEnded


class EscPosDecoder:
    """ESC/POS bytes in, preview blocks, drawer kicks and finished jobs out (no I/O).

    :meth:`feed` takes any slice of the stream (a command may be split across calls) and
    returns what was executed. Never raises on printer input: an unknown ``ESC x`` / ``GS x``
    is skipped as two bytes and counted in the job's ``unknown_commands``. Real-time
    requests (``DLE EOT``, ``DLE ENQ``) are skipped here; answering them is the shell's job.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._job = _JobBuilder()
        self._line: list[str] = []
        self._line_align: Align = "left"
        self._line_bold = False
        self._align: Align = "left"
        self._bold = False
        self._code_page = 0
        self._qr_payload = b""
        self._stored_graphic: PreviewGraphic | None = None
        self._cut_seen = False
        self._realtime_seen = False
        self._in_column_image = False

    @property
    def unfinished(self) -> bytes:
        """The bytes of the job in progress (executed, not yet cut)."""
        return bytes(self._job.raw)

    def feed(self, data: bytes) -> list[DecoderEvent]:
        self._buffer += data
        events: list[DecoderEvent] = []
        position = 0
        while position < len(self._buffer):
            used = self._step(position, events)
            if used == 0:  # an incomplete command: wait for more bytes
                break
            if self._realtime_seen:  # a status request between commands is not job data
                self._realtime_seen = False
            else:
                self._job.raw += self._buffer[position : position + used]
            position += used
            if self._cut_seen:
                self._cut_seen = False
                events.append(self._end_job(cuts=1))
        del self._buffer[:position]
        return events

    # One command or one run of text at ``position``; returns the bytes it takes (0: more
    # bytes needed). A cut only sets _cut_seen: feed() ends the job once the cut's own bytes
    # are part of it.
    def _step(self, position: int, events: list[DecoderEvent]) -> int:
        buffer = self._buffer
        byte = buffer[position]
        if byte != LF and not (byte == ESC and self._next_is(position, b"*")):
            self._in_column_image = False
        if byte == ESC:
            return self._esc(position, events)
        if byte == GS:
            return self._gs(position, events)
        if byte == FS:
            return self._fs(position)
        if byte == DLE:
            return self._dle(position, events)
        if byte == LF:
            if not (self._in_column_image and not self._line):
                self._flush_line(force=True)
            return 1
        if byte == FF:
            self._flush_line(force=False)
            return 1
        if byte == HT:
            self._add_text(" " * (8 - len("".join(self._line)) % 8))
            return 1
        if byte < 0x20:  # CR, BEL, NUL, …: nothing to show
            return 1
        end = position
        while end < len(buffer) and buffer[end] >= 0x20:
            end += 1
        codec = CODE_PAGES.get(self._code_page)
        chunk = bytes(buffer[position:end])
        self._add_text(chunk.decode(codec, "replace") if codec else "?" * len(chunk))
        return end - position

    def _next_is(self, position: int, command: bytes) -> bool:
        return self._buffer[position + 1 : position + 2] == command

    def _need(self, position: int, count: int) -> bool:
        return position + count <= len(self._buffer)

    def _esc(self, position: int, events: list[DecoderEvent]) -> int:
        buffer = self._buffer
        if not self._need(position, 2):
            return 0
        command = buffer[position + 1]
        if command == ord("*"):  # ESC * m nL nH d…: column bit image
            if not self._need(position, 5):
                return 0
            mode, low, high = buffer[position + 2 : position + 5]
            columns = low + 256 * high
            size = columns * (1 if mode in (0, 1) else 3)
            if not self._need(position, 5 + size):
                return 0
            # python-escpos sends one ESC * … LF per 24-dot stripe: the stripes of one image
            # are one graphic, and the LF ending a stripe prints it (no blank line).
            last = self._job.blocks[-1] if self._job.blocks else None
            height = 24
            if self._in_column_image and isinstance(last, PreviewGraphic):
                height += last.height_dots
                self._job.blocks.pop()
            self._add_graphic(PreviewGraphic("image", f"IMAGE {columns}x{height}", columns, height))
            self._in_column_image = True
            return 5 + size
        if command == ord("D"):  # ESC D n… NUL: tab stops
            end = buffer.find(0, position + 2)
            return 0 if end < 0 else end - position + 1
        params = _ESC_PARAMS.get(command)
        if params is None:
            self._job.unknown += 1
            return 2
        if not self._need(position, 2 + params):
            return 0
        args = buffer[position + 2 : position + 2 + params]
        if command == ord("@"):  # initialise: print buffer cleared, modes reset
            self._line.clear()
            self._align, self._bold, self._code_page = "left", False, 0
        elif command == ord("a"):
            self._align = _ALIGN.get(args[0], self._align)
        elif command == ord("E"):
            self._bold = bool(args[0] & 1)
        elif command == ord("!"):
            self._bold = bool(args[0] & 0x08)
        elif command == ord("t"):
            self._code_page = args[0]
        elif command == ord("d"):  # print and feed n lines
            self._feed_lines(args[0])
        elif command == ord("p"):  # ESC p m t1 t2: m = 0/48 pin 2, 1/49 pin 5 (§1.3)
            self._kick(args[0], events)
        elif command in (ord("i"), ord("m")):  # obsolete partial cuts
            self._cut()
        return 2 + params

    def _gs(self, position: int, events: list[DecoderEvent]) -> int:
        buffer = self._buffer
        if not self._need(position, 2):
            return 0
        command = buffer[position + 1]
        if command == ord("V"):  # GS V m [n]
            if not self._need(position, 3):
                return 0
            size = 3 if buffer[position + 2] in (0, 1, 48, 49) else 4
            if not self._need(position, size):
                return 0
            self._cut()
            return size
        if command == ord("k"):
            return self._barcode(position)
        if command == ord("v"):  # GS v 0 m xL xH yL yH d…: raster bit image
            if not self._need(position, 8):
                return 0
            x = buffer[position + 4] + 256 * buffer[position + 5]
            y = buffer[position + 6] + 256 * buffer[position + 7]
            if x * y > MAX_COMMAND_BYTES:
                self._job.unknown += 1
                return 2
            if not self._need(position, 8 + x * y):
                return 0
            self._add_graphic(PreviewGraphic("image", f"IMAGE {x * 8}x{y}", x * 8, y))
            return 8 + x * y
        if command in (ord("("), ord("8")):  # GS ( fn pL pH d… / GS 8 L p1 p2 p3 p4 d…
            header = 5 if command == ord("(") else 7
            if not self._need(position, header):
                return 0
            size = int.from_bytes(buffer[position + 3 : position + header], "little")
            if size > MAX_COMMAND_BYTES:
                self._job.unknown += 1
                return 2
            if not self._need(position, header + size):
                return 0
            function = buffer[position + 2]
            self._two_d(function, bytes(buffer[position + header : position + header + size]))
            return header + size
        params = _GS_PARAMS.get(command)
        if params is None:
            self._job.unknown += 1
            return 2
        if not self._need(position, 2 + params):
            return 0
        return 2 + params

    def _fs(self, position: int) -> int:
        buffer = self._buffer
        if not self._need(position, 2):
            return 0
        command = buffer[position + 1]
        if command == ord("p"):  # FS p n m: print NV bit image
            return 4 if self._need(position, 4) else 0
        if command == ord("("):  # FS ( fn pL pH d…
            if not self._need(position, 5):
                return 0
            size = buffer[position + 3] + 256 * buffer[position + 4]
            return 5 + size if self._need(position, 5 + size) else 0
        return 2  # FS & / FS . (Kanji mode on/off) and the like: no parameters

    def _dle(self, position: int, events: list[DecoderEvent]) -> int:
        buffer = self._buffer
        if not self._need(position, 2):
            return 0
        command = buffer[position + 1]
        if command in (EOT, 0x05):  # DLE EOT n / DLE ENQ n: real-time, answered by the shell
            if not self._need(position, 3):
                return 0
            self._realtime_seen = True
            return 3
        if command == 0x14:  # DLE DC4 fn …: fn 1 = real-time drawer pulse (10 14 01 m t)
            if not self._need(position, 5):
                return 0
            if buffer[position + 2] == 1:
                self._kick(buffer[position + 3], events)
            return 5
        return 1  # a lone DLE: a control character

    def _barcode(self, position: int) -> int:
        buffer = self._buffer
        if not self._need(position, 3):
            return 0
        mode = buffer[position + 2]
        if mode <= 6:  # function A: data up to NUL
            end = buffer.find(0, position + 3)
            if end < 0:
                return 0
            data, size = bytes(buffer[position + 3 : end]), end - position + 1
        else:  # function B: n, then n bytes
            if not self._need(position, 4):
                return 0
            count = buffer[position + 3]
            if not self._need(position, 4 + count):
                return 0
            data, size = bytes(buffer[position + 4 : position + 4 + count]), 4 + count
        symbology = _BARCODES.get(mode, f"BARCODE {mode}")
        text = data.decode("ascii", "replace")
        if symbology == "CODE128" and text[:1] == "{":
            # "{A".."{C" select a code set, "{{" is a literal brace.
            text = text[2:].replace("{{", "{")
        self._add_graphic(PreviewGraphic("barcode", f"{symbology} {text}", 0, 64))
        return size

    def _two_d(self, function: int, data: bytes) -> None:
        if function == ord("k") and len(data) >= 2 and data[0] == 49:  # cn = 49: QR code
            if data[1] == 80:  # store: cn fn m d…
                self._qr_payload = data[3:]
            elif data[1] == 81:  # print the stored symbol
                payload = self._qr_payload.decode("utf-8", "replace")
                printable = "".join(c if c.isprintable() else " " for c in payload)
                self._add_graphic(PreviewGraphic("qr", f"QR {printable}", 0, 0))
        elif function == ord("L") and len(data) >= 2:
            if data[1] == 0x70 and len(data) >= 10:  # store raster graphics: … xL xH yL yH
                width = data[6] + 256 * data[7]
                height = data[8] + 256 * data[9]
                self._stored_graphic = PreviewGraphic(
                    "image", f"IMAGE {width}x{height}", width, height
                )
            elif data[1] in (0x02, 0x32) and self._stored_graphic is not None:  # print it
                self._add_graphic(self._stored_graphic)

    def _kick(self, selector: int, events: list[DecoderEvent]) -> None:
        pin = {0: 2, 48: 2, 1: 5, 49: 5}.get(selector)
        if pin is None:
            self._job.unknown += 1
            return
        self._job.kicks[pin] += 1
        events.append(DrawerKicked(pin))

    def _cut(self) -> None:
        self._flush_line(force=False)
        self._cut_seen = True

    def _end_job(self, cuts: int) -> JobEnded:
        job = self._job
        blocks = list(job.blocks)
        while blocks and isinstance(blocks[-1], PreviewLine) and not blocks[-1].text.strip():
            blocks.pop()
        self._job = _JobBuilder()
        return JobEnded(bytes(job.raw), tuple(blocks), cuts, dict(job.kicks), job.unknown)

    # --- text -------------------------------------------------------------------------------

    def _add_text(self, text: str) -> None:
        if not self._line:
            self._line_align = self._align  # Epson applies ESC a at the start of a line
        self._line_bold = self._line_bold or self._bold
        self._line.append(text)

    def _flush_line(self, *, force: bool) -> None:
        if not self._line and not force:
            return
        align = self._line_align if self._line else self._align
        self._job.blocks.append(PreviewLine("".join(self._line), align, self._line_bold))
        self._line.clear()
        self._line_bold = False

    def _feed_lines(self, count: int) -> None:
        if self._line:
            self._flush_line(force=True)
            count -= 1
        for _ in range(max(0, count)):
            self._flush_line(force=True)

    def _add_graphic(self, graphic: PreviewGraphic) -> None:
        self._flush_line(force=False)
        self._job.blocks.append(graphic)


_ALIGN: Final[dict[int, Align]] = {
    0: "left",
    48: "left",
    1: "center",
    49: "center",
    2: "right",
    50: "right",
}


# --- jobs and their previews ----------------------------------------------------------------


@dataclass(eq=False)
class PrintedJob:
    """One job as the printer executed it: everything from the end of the previous job up to
    and including a cut."""

    number: int
    """1 for the first job the emulator printed."""
    raw: bytes
    blocks: tuple[PreviewBlock, ...]
    cuts: int
    drawer_kicks: dict[int, int]
    """Pin (2 or 5) → number of kicks in this job."""
    unknown_commands: int
    columns: int
    _png: bytes | None = field(default=None, init=False, repr=False)

    @property
    def text(self) -> str:
        """Plain-text preview: one line per printed line, aligned in ``columns``; graphics as
        ``[QR payload]``, ``[CODE128 data]``, ``[IMAGE 504x80]``."""
        return "\n".join(_preview_rows(self.blocks, self.columns))

    def preview_png(self) -> bytes:
        """The job drawn as a PNG (rendered on first call, then kept). CPU work of a few
        milliseconds per receipt: call it off the event loop in a server."""
        if self._png is None:
            self._png = render_preview_png(self.blocks, self.columns)
        return self._png


def _aligned(text: str, align: Align, columns: int) -> str:
    if align == "center":
        return text.center(columns).rstrip()
    if align == "right":
        return text.rjust(columns)
    return text


def _preview_rows(blocks: tuple[PreviewBlock, ...], columns: int) -> Iterator[str]:
    for block in blocks:
        if isinstance(block, PreviewLine):
            yield _aligned(block.text, block.align, columns)
        else:
            yield _aligned(f"[{block.label}]", "center", columns)


CELL_WIDTH: Final = 10
CELL_HEIGHT: Final = 20
MARGIN: Final = 10
MAX_PREVIEW_HEIGHT: Final = 20_000


def _graphic_height(graphic: PreviewGraphic) -> int:
    if graphic.kind == "qr":
        return 6 * CELL_HEIGHT
    if graphic.kind == "barcode":
        return 4 * CELL_HEIGHT
    # An image: 12 printer dots per column (font A), drawn at CELL_WIDTH pixels per column.
    return max(CELL_HEIGHT, graphic.height_dots * CELL_WIDTH // 12)


def render_preview_png(blocks: tuple[PreviewBlock, ...], columns: int) -> bytes:
    """A PNG of the blocks on white paper ``columns`` characters wide: text in a fixed grid
    (one character per cell, bold drawn twice), graphics as outlined, labelled boxes."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(
            "DejaVuSansMono.ttf", 16
        )
    except OSError:
        font = ImageFont.load_default()
    heights = [
        CELL_HEIGHT if isinstance(block, PreviewLine) else _graphic_height(block)
        for block in blocks
    ]
    width = 2 * MARGIN + columns * CELL_WIDTH
    height = min(MAX_PREVIEW_HEIGHT, 2 * MARGIN + max(CELL_HEIGHT, sum(heights)))
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)

    def draw_row(text: str, y: int, bold: bool) -> None:
        for column, char in enumerate(text[:columns]):
            x = MARGIN + column * CELL_WIDTH
            draw.text((x, y), char, fill=0, font=font)
            if bold:
                draw.text((x + 1, y), char, fill=0, font=font)

    y = MARGIN
    for block, block_height in zip(blocks, heights, strict=True):
        if y >= height - MARGIN:
            break
        if isinstance(block, PreviewLine):
            draw_row(_aligned(block.text, block.align, columns), y, block.bold)
        else:
            wide = block.kind != "qr"
            box_columns = columns - 4 if wide else min(columns - 4, max(12, len(block.label) + 2))
            left = MARGIN + (columns - box_columns) * CELL_WIDTH // 2
            right = left + box_columns * CELL_WIDTH
            draw.rectangle((left, y + 2, right, y + block_height - 2), outline=0, width=2)
            label = block.label[: max(1, box_columns - 2)]
            column = (columns - len(label)) // 2
            draw_row(" " * column + label, y + (block_height - CELL_HEIGHT) // 2, False)
        y += block_height
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
