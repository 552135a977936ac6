"""Receipt encoding: golden bytes from peripherals.md §1.3, layout, validation, properties.

A wrong byte here cuts a receipt in the middle, never opens the drawer, or prints a total the
register did not compute.
"""

from __future__ import annotations

import io
import string
from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from devices.receipt import (
    Barcode,
    Receipt,
    ReceiptLine,
    Tender,
    Total,
    _dummy_printer,
    _textln,
    encode_drawer_kick,
    encode_receipt,
    format_money,
    quick_to_encode,
    two_columns,
)

INIT = b"\x1b\x40"  # §1.3 ESC @
CUT = b"\x1b\x64\x06\x1d\x56\x00"  # §1.3 python-escpos cut(): ESC d 6, GS V 0
KICK_PIN2 = b"\x1b\x70\x00\x32\x32"  # §1.3 python-escpos cashdraw(2)
KICK_PIN5 = b"\x1b\x70\x01\x32\x32"  # §1.3 python-escpos cashdraw(5)
BOLD_ON = b"\x1b\x45\x01"
BOLD_OFF = b"\x1b\x45\x00"


def _png(width: int, height: int, colour: str = "black") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _sale(**changes: object) -> Receipt:
    receipt = Receipt(
        header=("Store 12", "1 High Street"),
        lines=(
            ReceiptLine("Coffee", Decimal("7.00"), Decimal(2)),
            ReceiptLine("Bananas", Decimal("1.05"), Decimal("0.350")),
        ),
        totals=(Total("TOTAL", Decimal("8.05")),),
        tenders=(Tender("Cash", Decimal("10")), Tender("Change", Decimal("-1.95"))),
        footer=("Thank you",),
    )
    return msgspec.structs.replace(receipt, **changes)


# --- golden bytes -------------------------------------------------------------------------------


def test_every_receipt_starts_with_esc_at_so_no_mode_leaks_from_the_last_job() -> None:
    assert encode_receipt(_sale()).startswith(INIT)
    assert encode_receipt(Receipt()).startswith(INIT)


def test_a_cut_receipt_ends_with_feed_and_full_cut() -> None:
    assert encode_receipt(_sale(cut=True)).endswith(CUT)


def test_an_uncut_receipt_has_no_cut_command() -> None:
    assert b"\x1d\x56" not in encode_receipt(_sale(cut=False))


@pytest.mark.parametrize(("pin", "wire"), [(2, KICK_PIN2), (5, KICK_PIN5)])
def test_drawer_kick_is_esc_p_with_the_pin_selector(pin: int, wire: bytes) -> None:
    assert encode_drawer_kick(pin) == wire


@pytest.mark.parametrize("pin", [0, 1, 3, 4, 6])
def test_a_drawer_kick_on_a_pin_that_esc_p_cannot_pulse_is_refused(pin: int) -> None:
    with pytest.raises(ValueError, match="pin 2 or pin 5"):
        encode_drawer_kick(pin)


def test_open_drawer_kicks_pin_2_right_after_init_so_it_opens_while_printing() -> None:
    assert encode_receipt(_sale(open_drawer=True)).startswith(INIT + KICK_PIN2)
    assert b"\x1b\x70" not in encode_receipt(_sale(open_drawer=False))


def test_totals_are_bold_and_nothing_else_is() -> None:
    output = encode_receipt(_sale())
    start = output.index(BOLD_ON)
    end = output.index(BOLD_OFF, start)
    assert b"TOTAL" in output[start:end]
    assert b"Coffee" not in output[start:end]
    assert output.count(BOLD_ON) == 1


def test_ean13_is_printed_by_the_printer_with_gs_k_function_a() -> None:
    output = encode_receipt(_sale(barcode=Barcode("EAN13", "4006381333931")))
    # GS k m=2 (EAN13, function A), the digits, NUL.
    assert b"\x1d\x6b\x02" + b"4006381333931" + b"\x00" in output


def test_code128_uses_code_set_b_and_escapes_the_brace() -> None:
    output = encode_receipt(_sale(barcode=Barcode("CODE128", "R-1{2")))
    # GS k m=73 (CODE128, function B), n, "{B", data with "{" doubled (Epson escape).
    payload = b"{BR-1{{2"
    assert b"\x1d\x6b\x49" + bytes((len(payload),)) + payload in output


def test_qr_is_native_gs_paren_k_with_the_payload() -> None:
    output = encode_receipt(_sale(qr="https://example.com/r/42"))
    payload = b"https://example.com/r/42"
    # GS ( k pL pH cn=49 fn=80 m=48 data: store the data; then fn=81 prints it.
    size = len(payload) + 3
    assert b"\x1d(k" + bytes((size & 0xFF, size >> 8)) + b"1P0" + payload in output
    assert b"\x1d(k\x03\x001Q0" in output


def test_a_logo_is_a_raster_image_scaled_to_the_paper_width() -> None:
    output = encode_receipt(_sale(logo=_png(1000, 50), columns=42))
    # GS v 0 m xL xH yL yH: 42 columns × 12 dots = 504 dots = 63 bytes wide.
    assert b"\x1dv0\x00\x3f\x00" in output


def test_a_profile_without_barcodes_prints_the_code_as_text() -> None:
    output = encode_receipt(_sale(barcode=Barcode("EAN13", "400638133393")), profile="simple")
    assert b"\x1d\x6b" not in output
    assert b"400638133393" in output


def test_an_unknown_profile_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown printer profile"):
        encode_receipt(_sale(), profile="no-such-printer")


def test_a_logo_that_is_not_a_decodable_png_is_a_value_error() -> None:
    broken = _png(10, 10)[:30]
    with pytest.raises(ValueError, match="not a readable PNG"):
        encode_receipt(_sale(logo=broken))


# --- layout -------------------------------------------------------------------------------------


def test_the_item_layout_is_quantity_text_and_the_amount_flush_right() -> None:
    text = encode_receipt(_sale(columns=42)).decode("cp437")
    assert "2 x Coffee" + " " * 28 + "7.00\n" in text
    assert "0.350 x Bananas" + " " * 23 + "1.05\n" in text
    assert "Cash" + " " * 33 + "10.00\n" in text
    assert "Change" + " " * 31 + "-1.95\n" in text


def test_a_quantity_of_one_is_not_shown() -> None:
    text = encode_receipt(_sale(lines=(ReceiptLine("Tea", Decimal("2.50")),))).decode("cp437")
    assert "\nTea " in text
    assert "1 x Tea" not in text


def test_a_long_item_wraps_and_keeps_its_amount_on_the_last_row() -> None:
    rows = two_columns("word " * 12, "12.50", 30)
    assert all(len(row) <= 30 for row in rows)
    assert rows[-1].endswith(" 12.50")
    assert " ".join(r.removesuffix("12.50").strip() for r in rows).split() == ["word"] * 12


def test_the_paper_width_is_configurable() -> None:
    text = encode_receipt(_sale(columns=48)).decode("cp437")
    assert "-" * 48 + "\n" in text
    assert "2 x Coffee" + " " * 34 + "7.00\n" in text


@pytest.mark.parametrize(
    ("amount", "decimals", "shown"),
    [
        (Decimal("7"), 2, "7.00"),
        (Decimal("7.5"), 2, "7.50"),
        (Decimal("-0.00"), 2, "0.00"),
        (Decimal("1234567890123456789012345678901.25"), 2, "1234567890123456789012345678901.25"),
        (Decimal("1500"), 0, "1500"),
        (Decimal("0.125"), 3, "0.125"),
    ],
)
def test_money_is_padded_never_rounded(amount: Decimal, decimals: int, shown: str) -> None:
    assert format_money(amount, decimals) == shown


# --- validation ---------------------------------------------------------------------------------


def test_an_amount_with_more_digits_than_the_currency_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="never rounds"):
        _sale(totals=(Total("TOTAL", Decimal("8.055")),))


@pytest.mark.parametrize("text", ["Cut\x1dV\x00here", "Status\x10\x04\x01", "two\nlines", "\x7f"])
def test_text_holding_printer_commands_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        _sale(lines=(ReceiptLine(text, Decimal(1)),))
    with pytest.raises(ValueError, match="control character"):
        _sale(header=(text,))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_an_amount_that_is_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        Total("TOTAL", Decimal(value))


@pytest.mark.parametrize(
    ("symbology", "data"),
    [
        ("EAN13", "4006381333932"),  # wrong check digit
        ("EAN13", "40063813339"),  # 11 digits
        ("EAN13", "40063813339a"),
        ("CODE128", ""),
        ("CODE128", "é"),
    ],
)
def test_a_barcode_the_printer_cannot_print_is_refused(symbology: str, data: str) -> None:
    with pytest.raises(ValueError):
        Barcode(symbology, data)  # type: ignore[arg-type]


def test_a_code128_wider_than_the_paper_is_refused() -> None:
    with pytest.raises(ValueError, match="wider than"):
        _sale(barcode=Barcode("CODE128", "X" * 30), columns=42)


def test_a_logo_that_is_not_a_png_is_refused() -> None:
    with pytest.raises(ValueError, match="PNG"):
        _sale(logo=b"GIF89a")


def test_json_wire_format_amounts_are_strings_and_the_logo_base64() -> None:
    receipt = _sale(logo=_png(8, 8), barcode=Barcode("EAN13", "400638133393"), qr="q")
    wire = msgspec.json.encode(receipt)
    assert b'"amount":"7.00"' in wire
    assert b'"logo":"iVBORw0KGgo' in wire  # base64 of the PNG signature
    assert msgspec.json.decode(wire, type=Receipt) == receipt


def test_decoding_runs_the_same_validation_as_building() -> None:
    wire = b'{"totals": [{"label": "TOTAL", "amount": "8.055"}]}'
    with pytest.raises(msgspec.ValidationError, match="never rounds"):
        msgspec.json.decode(wire, type=Receipt)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"colour": "red"}', type=Receipt)


# --- properties ---------------------------------------------------------------------------------

_ASCII_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,:-/%&#", max_size=24)
_ANY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")),  # Cc is refused; Cs is not UTF-8
    max_size=60,
)


def _amounts(decimals: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=-(10**9), max_value=10**9, places=decimals, allow_nan=False, allow_infinity=False
    )


@st.composite
def _receipts(draw: st.DrawFn, text: st.SearchStrategy[str]) -> Receipt:
    decimals = draw(st.integers(0, 3))
    amounts = _amounts(decimals)
    symbology = draw(st.sampled_from(["CODE128", "EAN13"]))
    barcode_data = (
        draw(st.text(alphabet=string.ascii_letters + "{}-", min_size=1, max_size=12))
        if symbology == "CODE128"
        else draw(st.text(alphabet=string.digits, min_size=12, max_size=12))
    )
    return Receipt(
        header=tuple(draw(st.lists(text, max_size=3))),
        lines=tuple(
            draw(
                st.lists(
                    st.builds(
                        ReceiptLine,
                        text,
                        amounts,
                        st.decimals(min_value=-50, max_value=50, places=3, allow_nan=False),
                    ),
                    max_size=5,
                )
            )
        ),
        totals=tuple(draw(st.lists(st.builds(Total, text, amounts), max_size=3))),
        tenders=tuple(draw(st.lists(st.builds(Tender, text, amounts), max_size=2))),
        footer=tuple(draw(st.lists(text, max_size=3))),
        logo=draw(st.none() | st.builds(_png, st.integers(1, 700), st.integers(1, 40))),
        barcode=draw(st.none() | st.just(Barcode(symbology, barcode_data))),  # type: ignore[arg-type]
        qr=draw(st.none() | st.text(min_size=1, max_size=80)),
        cut=draw(st.booleans()),
        open_drawer=draw(st.booleans()),
        columns=draw(st.sampled_from([32, 42, 48, 56])),
        decimals=decimals,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_receipts(_ANY_TEXT))
def test_any_valid_receipt_encodes(receipt: Receipt) -> None:
    output = encode_receipt(receipt)
    assert output.startswith(INIT)
    assert output.endswith(CUT) == receipt.cut


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_receipts(_ASCII_TEXT))
def test_every_text_line_and_amount_appears_in_the_output(receipt: Receipt) -> None:
    output = encode_receipt(receipt)
    # ASCII text stays in code page 437, so it is in the bytes as it is; a row too long for
    # the paper wraps, so compare with all whitespace taken out.
    squashed = "".join(output.decode("cp437").split())
    expected = [*receipt.header, *receipt.footer]
    for line in receipt.lines:
        expected += [line.text, format_money(line.amount, receipt.decimals)]
    rows: list[Total | Tender] = [*receipt.totals, *receipt.tenders]
    for row in rows:
        expected += [row.label, format_money(row.amount, receipt.decimals)]
    for text in expected:
        assert "".join(text.split()) in squashed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_ASCII_TEXT | _ANY_TEXT, max_size=6), st.sampled_from(["default", "TM-T88V", "simple"])
)
def test_the_ascii_shortcut_writes_the_bytes_python_escpos_writes(
    rows: list[str], profile: str
) -> None:
    """Rows of ASCII skip python-escpos's per-character code page search; a byte of
    difference would print another character, or switch the code page under the next row."""
    shortcut, library = _dummy_printer(profile, 42), _dummy_printer(profile, 42)
    for row in [*rows, "Espresso €", *rows]:  # "€" is not in code page 437: a switch
        _textln(shortcut, row)
        library.textln(row)
    assert shortcut.output == library.output


def test_only_a_short_text_receipt_is_encoded_on_the_event_loop() -> None:
    """An image to draw, or a long report, would stall every lane's requests meanwhile."""
    encode_receipt(_sale())  # python-escpos is loaded (its first import takes a file lock)
    assert quick_to_encode(_sale())
    assert not quick_to_encode(_sale(logo=_png(8, 8)))
    assert not quick_to_encode(_sale(qr="https://example.com/r/1"))
    report = tuple(ReceiptLine(f"Item {n}", Decimal(1)) for n in range(100))
    assert not quick_to_encode(_sale(lines=report))
