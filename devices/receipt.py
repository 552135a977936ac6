"""Receipts: a structured document and its ESC/POS encoding (pure: bytes out, no I/O).

Theory of operation
-------------------
A :class:`Receipt` is what a register sends (msgspec Struct, JSON on the wire; the logo is
PNG bytes, base64 in JSON, and every amount a decimal *string*, never a float). Building one
validates it; decoding one with msgspec validates it the same way (``__post_init__``), so a
:class:`Receipt` that exists can be encoded. :func:`encode_receipt` lays it out in
``receipt.columns`` columns and renders the bytes with python-escpos's ``Dummy`` printer
(peripherals.md §1.1: "generate bytes without I/O"), in this order:

1.  ``ESC @`` initialise (§1.3), then the drawer kick on pin 2 if ``open_drawer`` (first, so
    the drawer opens while the receipt prints);
2.  the logo, centred; the header lines, centred;
3.  the item lines (``2 x Coffee ........ 7.00``), the totals in bold, the tenders, each
    with its amount right-aligned, sections separated by a dashed rule;
4.  the footer lines, centred; the barcode and the QR code, centred;
5.  ``cut()`` if ``cut``: python-escpos feeds 6 lines then full-cuts, ``1B 64 06 1D 56 00``.

Money is :class:`~decimal.Decimal` end to end and is never rounded here: an amount with more
fraction digits than ``receipt.decimals`` is refused when the receipt is built, and the rest
are padded (``7`` → ``7.00``), so the receipt shows exactly the amounts the register
computed.

Text may not hold control characters (category Cc, which includes ESC, GS, DLE, LF): the
encoder passes text to the printer as it is, so a product name holding ``1D 56 00`` would
cut the paper, and one holding ``10 04 n`` would make the printer answer a status byte
nobody asked for. Characters are mapped to code pages by python-escpos's magic encoder
(§1.3 "Magic encode": ``ESC t n`` switches as needed; a character no code page of the
profile holds prints as ``?``). python-escpos 3.1 quirk: a line holding any CJK ideograph
(U+4E00..U+9FA5) is sent whole as GB18030 with no code-page switch, which only a Chinese
printer reads.

Degraded output by profile (``profile`` names an escpos-printer-db profile, §1.2): without
hardware barcodes (``barcodeA``/``barcodeB``) the barcode prints as its text; without native
QR (``qrCode``) the QR code prints as an image, or as its text without image support; the
logo is left out without image support (the ``simple`` profile has none of them).

python-escpos loads its printer database at import and pickles it into
``ESCPOS_CAPABILITIES_PICKLE_DIR``, by default a fresh temporary directory per process that
is never removed (§1.2). It is imported lazily, on the first encode, with that directory
defaulting to ``$XDG_CACHE_HOME/store-edge/escpos`` (an explicit setting wins) and under a
file lock, because the library writes the pickle in place and a second process could read it
half written.

Two shortcuts keep a short receipt's encoding well under a millisecond, with the same bytes:
python-escpos builds each code page's character map once per printer object, and a receipt
is one printer object (``Dummy``), so the maps are shared by every receipt of the process (a
map depends only on its code page); and a row of ASCII text is written as it is, without
the magic encoder's per-character search (:func:`_textln`).

Calling contract: ``encode_receipt`` is CPU work and may take milliseconds (images, QR codes,
long reports): run it off the event loop, unless :func:`quick_to_encode` says the receipt
costs less than the hop to a thread. It raises ValueError for an unknown profile or an
unreadable logo.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import textwrap
import unicodedata
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import msgspec

__all__ = [
    "DRAWER_PINS",
    "Barcode",
    "Receipt",
    "ReceiptLine",
    "Tender",
    "Total",
    "encode_drawer_kick",
    "encode_receipt",
    "quick_to_encode",
]

DRAWER_PINS: Final = (2, 5)
"""Drawer-kick connector pins ``ESC p`` can pulse: m = 0 → pin 2, m = 1 → pin 5 (§1.3)."""

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
MAX_LOGO_BYTES: Final = 1 << 20
MAX_LOGO_SIDE: Final = 4096
"""Largest logo side in pixels accepted for decoding (bigger logos are scaled down to the
paper width anyway; this bounds the memory a hostile PNG can take)."""
MAX_QR_BYTES: Final = 2953
"""QR version 40, error correction L, byte mode: the most one QR symbol holds."""
DOTS_PER_COLUMN: Final = 12
"""Font A is 12 × 24 dots on Epson TM printers: 42 columns ≈ 504 dots, 48 ≈ 576 (§1.2 gives
512 and 576 dots for the TM-T88V and TM-T20II). Used as the print width in dots when the
profile does not know it (the ``default`` profile says "Unknown")."""
QR_MODULE_DOTS: Final = 4
BARCODE_HEIGHT_DOTS: Final = 64
CODE128_MODULE_DOTS: Final = 2
EAN13_MODULE_DOTS: Final = 3
MIN_COLUMNS: Final = 16
MAX_COLUMNS: Final = 96
MAX_DECIMALS: Final = 4
QUICK_ENCODE_MAX_CHARS: Final = 2000
"""The most text :func:`quick_to_encode` lets run on the event loop: some 40 rows of 42
columns, at most a millisecond of encoding even when none of it is ASCII."""


def _check_text(what: str, value: str) -> None:
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise ValueError(
                f"{what} holds the control character U+{ord(char):04X}; receipt text may not "
                "hold control characters (they are printer commands)"
            )


def _check_finite(what: str, value: Decimal) -> None:
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite number, got {value}")


class ReceiptLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One sold item: ``amount`` is the line's total (quantity × unit price, after line
    discounts, as the register computed it); ``quantity`` may be fractional (0.350 kg) or
    negative (a return)."""

    text: str
    amount: Decimal
    quantity: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        _check_text("a line's text", self.text)
        _check_finite("a line's amount", self.amount)
        _check_finite("a line's quantity", self.quantity)


class Total(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A total row (``Subtotal``, ``VAT 20%``, ``TOTAL``); printed in bold."""

    label: str
    amount: Decimal

    def __post_init__(self) -> None:
        _check_text("a total's label", self.label)
        _check_finite("a total's amount", self.amount)


class Tender(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A payment or change row (``Cash``, ``Visa ****1234``, ``Change``)."""

    label: str
    amount: Decimal

    def __post_init__(self) -> None:
        _check_text("a tender's label", self.label)
        _check_finite("a tender's amount", self.amount)


BarcodeSymbology = Literal["CODE128", "EAN13"]


def ean13_check_digit(first12: str) -> int:
    """The EAN-13 check digit of 12 digits (weights 1, 3, 1, 3, … from the left)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return (10 - total % 10) % 10


def _code128_payload(data: str) -> str:
    # python-escpos wants the code set prefix ("{B": code set B, ASCII 0x20..0x7F) and Epson
    # reads "{" as the escape of the next character, so a literal "{" is sent as "{{".
    return "{B" + data.replace("{", "{{")


def _code128_modules(data: str) -> int:
    # Start + data + check symbols are 11 modules each, the stop symbol 13.
    return 11 * (len(data) + 2) + 13


class Barcode(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A 1-D barcode, printed by the printer (``GS k``) with its text below.

    ``EAN13``: 12 digits (the printer adds the check digit) or 13 with a correct check digit.
    ``CODE128``: printable ASCII, code set B. Whether it fits the paper is checked against
    the receipt's width when the receipt is built.
    """

    symbology: BarcodeSymbology
    data: str

    def __post_init__(self) -> None:
        if self.symbology == "EAN13":
            if not (self.data.isascii() and self.data.isdigit() and len(self.data) in (12, 13)):
                raise ValueError(f"an EAN13 barcode is 12 or 13 digits, got {self.data!r}")
            if len(self.data) == 13 and int(self.data[12]) != ean13_check_digit(self.data[:12]):
                raise ValueError(f"EAN13 {self.data} has a wrong check digit")
        else:
            if not self.data or any(not 0x20 <= ord(c) <= 0x7E for c in self.data):
                raise ValueError(
                    f"a CODE128 barcode is 1 or more printable ASCII characters, got {self.data!r}"
                )
            if len(_code128_payload(self.data)) > 255:  # GS k m n: n is one byte
                raise ValueError("a CODE128 barcode holds at most 253 characters")


class Receipt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A receipt as a register sends it. See the module docstring for the layout."""

    lines: tuple[ReceiptLine, ...] = ()
    totals: tuple[Total, ...] = ()
    tenders: tuple[Tender, ...] = ()
    header: tuple[str, ...] = ()
    footer: tuple[str, ...] = ()
    logo: bytes | None = None
    """PNG bytes (base64 in JSON), scaled down to the paper width if wider."""
    barcode: Barcode | None = None
    qr: str | None = None
    """QR code payload (UTF-8, at most 2953 bytes); may hold line breaks (a vCard)."""
    cut: bool = True
    open_drawer: bool = False
    """Pulse drawer-kick pin 2 before printing."""
    columns: int = 42
    """Characters per line in font A: 42 on 80 mm TM-T88 paper, 48 on 576-dot printers."""
    decimals: int = 2
    """Fraction digits of the currency: amounts are shown with exactly this many."""

    def __post_init__(self) -> None:
        if not MIN_COLUMNS <= self.columns <= MAX_COLUMNS:
            raise ValueError(f"columns must be {MIN_COLUMNS}..{MAX_COLUMNS}, got {self.columns}")
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise ValueError(f"decimals must be 0..{MAX_DECIMALS}, got {self.decimals}")
        for text in (*self.header, *self.footer):
            _check_text("a header or footer line", text)
        for what, amount in self._amounts():
            exponent = amount.as_tuple().exponent
            assert isinstance(exponent, int)  # finite: checked by the row's own Struct
            if exponent < -self.decimals:
                raise ValueError(
                    f"{what} {amount} has more than {self.decimals} fraction digits; round it "
                    "where it is computed, a receipt never rounds"
                )
        if self.logo is not None:
            if not self.logo.startswith(PNG_SIGNATURE):
                raise ValueError("the logo must be a PNG image")
            if len(self.logo) > MAX_LOGO_BYTES:
                raise ValueError(f"the logo is larger than {MAX_LOGO_BYTES} bytes")
        if self.qr is not None and not 1 <= len(self.qr.encode()) <= MAX_QR_BYTES:
            raise ValueError(f"a QR payload is 1..{MAX_QR_BYTES} bytes of UTF-8")
        if self.barcode is not None and self.barcode.symbology == "CODE128":
            dots = _code128_modules(self.barcode.data) * CODE128_MODULE_DOTS
            if dots > self.columns * DOTS_PER_COLUMN:
                raise ValueError(
                    f"CODE128 {self.barcode.data!r} is {dots} dots wide, wider than the "
                    f"{self.columns}-column paper"
                )

    def _amounts(self) -> Iterator[tuple[str, Decimal]]:
        for line in self.lines:
            yield f"line {line.text!r} amount", line.amount
        for total in self.totals:
            yield f"total {total.label!r}", total.amount
        for tender in self.tenders:
            yield f"tender {tender.label!r}", tender.amount


# --- layout (pure text) ---------------------------------------------------------------------


def format_money(amount: Decimal, decimals: int) -> str:
    """``amount`` with exactly ``decimals`` fraction digits, never rounded by the caller's
    contract (see :class:`Receipt`); ``-0`` shows as ``0``."""
    if amount == 0:
        amount = abs(amount)
    return format(amount, f".{decimals}f")


def format_quantity(quantity: Decimal) -> str:
    """``2``, ``0.350``, ``-1``: plain notation, never an exponent."""
    return format(quantity, "f")


def wrap(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` characters; a line that fits is kept verbatim
    and an empty line stays one empty line."""
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def two_columns(left: str, right: str, width: int) -> list[str]:
    """``left`` and ``right`` on one line of ``width``, ``right`` flush right; a ``left``
    too long wraps and ``right`` goes on its last line, or on a line of its own."""
    room = width - len(right) - 1
    if len(left) <= room:
        return [left + " " * (width - len(left) - len(right)) + right]
    rows = wrap(left, width)
    last = rows[-1]
    if len(last) <= room:
        rows[-1] = last + " " * (width - len(last) - len(right)) + right
    else:
        rows.append(right.rjust(width))
    return rows


def layout_item(line: ReceiptLine, decimals: int, width: int) -> list[str]:
    left = line.text
    if line.quantity != 1:
        left = f"{format_quantity(line.quantity)} x {line.text}"
    return two_columns(left, format_money(line.amount, decimals), width)


# --- python-escpos, loaded on first use --------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "store-edge" / "escpos"


@functools.cache
def _escpos() -> Any:
    """Import ``escpos.printer`` once, with a stable pickle directory (module docstring)."""
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    lock_file: TextIO | None = None
    if "ESCPOS_CAPABILITIES_PICKLE_DIR" not in os.environ:
        try:
            directory = _cache_dir()
            directory.mkdir(parents=True, exist_ok=True)
            lock_file = (directory / "import.lock").open("a")
            os.environ["ESCPOS_CAPABILITIES_PICKLE_DIR"] = str(directory)
        except (OSError, RuntimeError):  # no home, read-only: the library's temp dir, then
            lock_file = None
    try:
        if lock_file is not None:
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX)
        import escpos.printer
    finally:
        if lock_file is not None:
            lock_file.close()  # releases the lock
        # escpos.capabilities calls logging.basicConfig() at import: take its handler back
        # out, the hub configures logging itself (edge/logs.py).
        root.handlers[:] = handlers_before
    return escpos.printer


_CODEPAGE_MAPS: dict[str, dict[str, int]] = {}
"""Code page name -> python-escpos's map of its characters (module docstring). Filled from
any thread: every writer of a key stores an equal map, and a dict item store is atomic."""


def _dummy_printer(profile: str, columns: int) -> Any:
    """A python-escpos ``Dummy`` for escpos-printer-db ``profile``, knowing its print width.

    python-escpos prints a warning to stdout and will not centre an image when the profile's
    width is "Unknown" (§1.2); the width is then set on this printer's profile instance only
    (the profile's data is a dict shared by every instance of the profile class).
    """
    try:
        printer = _escpos().Dummy(profile=profile)
    except KeyError:
        raise ValueError(f"unknown printer profile {profile!r}") from None
    # python-escpos 3.1's Encoder caches the maps per instance, in this public attribute.
    printer.magic.encoder.available_characters = _CODEPAGE_MAPS
    data = printer.profile.profile_data
    media = dict(data.get("media") or {})
    width = dict(media.get("width") or {})
    if not isinstance(width.get("pixels"), int):
        width["pixels"] = columns * DOTS_PER_COLUMN
        media["width"] = width
        printer.profile.profile_data = {**data, "media": media}
    return printer


def _image_impl(profile: Any) -> str | None:
    for impl in ("bitImageRaster", "graphics", "bitImageColumn"):
        if profile.supports(impl):
            return impl
    return None


def _load_logo(png: bytes, max_width: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image: Image.Image = Image.open(io.BytesIO(png), formats=["PNG"])
        if max(image.size) > MAX_LOGO_SIDE:
            raise ValueError(f"the logo is {image.size}, larger than {MAX_LOGO_SIDE} px a side")
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"the logo is not a readable PNG: {exc}") from exc
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height))
    return image


def _textln(printer: Any, row: str = "") -> None:
    """``printer.textln(row)``, the same bytes, faster for ASCII. python-escpos's magic
    encoder writes an ASCII row as it is (``Encoder._encode_char``: every code page holds
    ASCII at its own code) in the code page already selected, or, for the first row, in the
    one it finds for the row's first character; but it searches character by character
    first, which cost most of a short receipt's encoding. Anything else goes through it."""
    magic = printer.magic
    if not row.isascii() or magic.disabled:
        printer.textln(row)
        return
    if magic.encoding is None:
        encoding = magic.encoder.find_suitable_encoding((row or "\n")[0])
        if encoding is None:  # no code page python-escpos knows: it prints "?"
            printer.textln(row)
            return
        magic.write_with_encoding(encoding, None)  # ESC t n, as its first write sends
    printer._raw(row.encode("ascii") + b"\n")


def _textlns(printer: Any, rows: Iterable[str]) -> None:
    for row in rows:
        _textln(printer, row)


def quick_to_encode(receipt: Receipt) -> bool:
    """Whether ``receipt`` encodes in less time than a hop to a thread and back costs, so
    that it may be encoded on the event loop: python-escpos is loaded already (its first
    import reads, and may write, its pickle under a file lock), nothing is drawn as an image
    (no logo, no QR code: profiles without native QR draw it) and its text is at most
    :data:`QUICK_ENCODE_MAX_CHARS` characters. Such a receipt is pure Python work (on the
    bench machine about 0.07 ms, plus 0.5 µs a character that is not ASCII, a tenth of that
    for ASCII), and a thread would hardly free the loop meanwhile: it holds the GIL while it
    encodes, and hands it over only every switch interval (5 ms)."""
    if receipt.logo is not None or receipt.qr is not None or not _escpos.cache_info().currsize:
        return False
    # Each item, total and tender is a whole row (padded to the amount), its text wraps.
    texts = [*receipt.header, *receipt.footer, *(line.text for line in receipt.lines)]
    texts += [total.label for total in receipt.totals]
    texts += [tender.label for tender in receipt.tenders]
    rows = len(receipt.lines) + len(receipt.totals) + len(receipt.tenders)
    return sum(map(len, texts)) + rows * receipt.columns <= QUICK_ENCODE_MAX_CHARS


def encode_receipt(receipt: Receipt, profile: str = "default") -> bytes:
    """The ESC/POS bytes that print ``receipt`` on a printer of escpos-printer-db
    ``profile`` (module docstring for the layout and what each profile leaves out)."""
    printer = _dummy_printer(profile, receipt.columns)
    width = receipt.columns
    pixels = int(printer.profile.profile_data["media"]["width"]["pixels"])
    image_impl = _image_impl(printer.profile)
    rule = "-" * width

    # 1. Initialise, kick the drawer.
    printer.hw("INIT")
    if receipt.open_drawer:
        printer.cashdraw(2)

    # 2. Logo and header, centred.
    if receipt.logo is not None and image_impl is not None:
        printer.image(_load_logo(receipt.logo, pixels), impl=image_impl, center=True)
    if receipt.header:
        printer.set(align="center")
        for text in receipt.header:
            _textlns(printer, wrap(text, width))

    # 3. Items, totals (bold), tenders.
    printer.set(align="left")
    if receipt.lines:
        _textln(printer, rule)
        for item in receipt.lines:
            _textlns(printer, layout_item(item, receipt.decimals, width))
    if receipt.totals:
        _textln(printer, rule)
        printer.set(bold=True)
        for total in receipt.totals:
            _textlns(
                printer,
                two_columns(total.label, format_money(total.amount, receipt.decimals), width),
            )
        printer.set(bold=False)
    if receipt.tenders:
        _textln(printer, rule)
        for tender in receipt.tenders:
            _textlns(
                printer,
                two_columns(tender.label, format_money(tender.amount, receipt.decimals), width),
            )

    # 4. Footer, barcode, QR code, centred.
    printer.set(align="center")
    if receipt.footer:
        _textln(printer)
        for text in receipt.footer:
            _textlns(printer, wrap(text, width))
    if receipt.barcode is not None:
        _encode_barcode(printer, receipt.barcode, width)
    if receipt.qr is not None:
        _encode_qr(printer, receipt.qr, image_impl, width)
    printer.set(align="left")

    # 5. Feed and cut.
    if receipt.cut:
        printer.cut()
    output: bytes = printer.output
    return output


def _encode_barcode(printer: Any, barcode: Barcode, width: int) -> None:
    if not (printer.profile.supports("barcodeA") or printer.profile.supports("barcodeB")):
        _textlns(printer, wrap(barcode.data, width))
        return
    # The private _hw_barcode, not barcode(): barcode() prints "Using hardware barcode
    # renderer" to stdout on every call (python-escpos 3.1); the arguments are the same.
    printer.ln()
    if barcode.symbology == "EAN13":
        printer._hw_barcode(barcode.data, "EAN13", BARCODE_HEIGHT_DOTS, EAN13_MODULE_DOTS)
    else:
        printer._hw_barcode(
            _code128_payload(barcode.data), "CODE128", BARCODE_HEIGHT_DOTS, CODE128_MODULE_DOTS
        )
    printer.ln()


def _encode_qr(printer: Any, payload: str, image_impl: str | None, width: int) -> None:
    if printer.profile.supports("qrCode"):
        # Native GS ( k: the printer draws it (a few dozen bytes instead of an image). The
        # alignment set before applies; qr(center=True) is refused in native mode.
        printer.ln()
        printer.qr(payload, size=QR_MODULE_DOTS, native=True)
        printer.ln()
    elif image_impl is not None:
        printer.qr(payload, size=QR_MODULE_DOTS, image_arguments={"impl": image_impl}, center=True)
    else:
        # Printed as text, so its control characters must not reach the printer.
        printable = "".join(c if unicodedata.category(c) != "Cc" else "?" for c in payload)
        _textlns(printer, wrap(printable, width))


def encode_drawer_kick(pin: int, *, on_ms: int = 100, off_ms: int = 100) -> bytes:
    """``ESC p m t1 t2`` pulsing drawer-kick ``pin`` (2 or 5) ``on_ms`` on, ``off_ms`` off.

    m = 0 selects pin 2, m = 1 pin 5; ON = t1 x 2 ms, OFF = t2 x 2 ms (Epson TM-T88III and
    TM-U295 specifications, §1.3), so each time is an even number of milliseconds, 2..510.
    The defaults are python-escpos's ``cashdraw(2)`` / ``cashdraw(5)`` bytes, ``1B 70 00 32 32``
    / ``1B 70 01 32 32`` (§1.3). The Citizen duty-cycle advice (ON/(ON+OFF) ≤ 0.2, §1.3 [S])
    concerns repeated pulses; callers kick once per sale. Raises ValueError for another pin or
    a time ``ESC p`` cannot express.
    """
    if pin not in DRAWER_PINS:
        raise ValueError(f"a drawer kick pulses pin 2 or pin 5, not pin {pin}")
    for what, ms in (("on", on_ms), ("off", off_ms)):
        if not (2 <= ms <= 510 and ms % 2 == 0):
            raise ValueError(f"ESC p pulses {what} for 2..510 ms in steps of 2, not {ms} ms")
    return bytes((0x1B, 0x70, DRAWER_PINS.index(pin), on_ms // 2, off_ms // 2))
