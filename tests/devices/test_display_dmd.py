"""Epson DM-D customer display: the §3.1 screen recipe byte for byte, and safe text.

What a customer relies on: the price they see is the price on the till, on the line it
belongs to, and no product name can blank the screen or send a command.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.display_dmd import (
    COLUMNS,
    SELECT_DISPLAY,
    SELECT_PRINTER,
    VERTICAL_SCROLL_MODE,
    Cleared,
    DmdDecoder,
    Initialized,
    PeripheralSelected,
    SettingChanged,
    TextWritten,
    UnknownCommand,
    encode_blink,
    encode_brightness,
    encode_line,
    encode_lines,
    encode_move_cursor,
    encode_screen,
    encode_select_code_table,
    encode_setup,
    encode_text,
    fit_line,
)


def test_screen_is_the_reference_recipe() -> None:
    # §3.1 "Write a 2×20 screen": 1B 40, 1F 01, 1F 43 00, 0C, line 1, 1F 24 01 02, line 2.
    expected = (
        bytes.fromhex("1B 40 1F 01 1F 43 00 0C")
        + b"APPLES 1.234 kg     "
        + bytes.fromhex("1F 24 01 02")
        + b"TOTAL          12.50"
    )
    assert encode_screen("APPLES 1.234 kg", "TOTAL          12.50") == expected


def test_update_without_reinitializing() -> None:
    assert encode_lines("A", "B") == b"\x0c" + b"A".ljust(20) + b"\x1f\x24\x01\x02" + b"B".ljust(20)


def test_code_table_is_selected_after_initialize_resets_it() -> None:
    screen = encode_screen("x", "y", code_table=19, encoding="cp858")
    assert screen.startswith(bytes.fromhex("1B 40 1F 01 1F 43 00 1B 74 13 0C"))


def test_pass_through_wraps_in_select_display_then_printer() -> None:
    # §3.2: ESC = 2 display only, ESC = 1 back to the printer (as python-escpos linedisplay).
    screen = encode_screen("x", "y", for_pass_through=True)
    assert screen.startswith(b"\x1b\x3d\x02\x1b\x40")
    assert screen.endswith(b"\x1b\x3d\x01")


def test_golden_single_commands() -> None:
    # §3.1 table.
    assert encode_move_cursor(1, 2) == b"\x1f\x24\x01\x02"
    assert encode_move_cursor(20, 1) == b"\x1f\x24\x14\x01"
    assert encode_brightness(4) == b"\x1f\x58\x04"
    assert encode_blink(0) == b"\x1f\x45\x00"
    assert encode_blink(255) == b"\x1f\x45\xff"
    assert encode_select_code_table(16) == b"\x1b\x74\x10"


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (encode_move_cursor, (0, 1)),
        (encode_move_cursor, (21, 1)),
        (encode_move_cursor, (1, 3)),
        (encode_brightness, (0,)),
        (encode_brightness, (5,)),
        (encode_blink, (256,)),
        (encode_select_code_table, (6,)),
    ],
)
def test_out_of_range_arguments_are_refused(
    call: Callable[..., bytes], args: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        call(*args)


def test_long_lines_are_truncated_and_short_ones_padded() -> None:
    assert encode_line("Organic free-range eggs x12") == b"Organic free-range e"
    assert encode_line("") == b" " * 20


def test_accents_use_the_code_page_or_fall_back_to_the_bare_letter() -> None:
    # ü and ß exist in CP437 (0x81, 0xE1, as in §1.6's magic-encode example).
    assert encode_line("Grüße", width=5) == b"Gr\x81\xe1e"
    # A decomposed é (e + U+0301) is one column, not two.
    assert encode_line("Cafe\u0301", width=4) == b"Caf\x82"
    # ŵ is not in CP437: written as w rather than "?".
    assert encode_line("ŵ", width=1) == b"w"


def test_unencodable_characters_become_the_replacement() -> None:
    assert encode_line("€5", width=2) == b"?5"  # no euro sign in CP437
    assert encode_line("€5", width=2, encoding="cp858") == b"\xd55"
    assert encode_line("日本", width=2, replacement="*") == b"**"


def test_control_characters_in_text_cannot_reach_the_display() -> None:
    """A product name holding FF or ESC must not clear the screen or start a command."""
    line = encode_line("A\x0cB\x1b@C\x1f\x24", width=8)
    assert line == b"A?B?@C?$"  # US $ loses its US: no cursor move


def test_a_replacement_that_is_not_one_safe_byte_is_refused() -> None:
    for bad in ("", "??", "\x0c", "€"):
        with pytest.raises(ValueError):
            encode_line("x", replacement=bad)


@given(st.text(max_size=60), st.sampled_from(["cp437", "cp858", "cp1252", "ascii"]))
def test_any_text_is_exactly_one_line_of_printable_bytes(text: str, encoding: str) -> None:
    line = encode_line(text, encoding=encoding)
    assert len(line) == COLUMNS
    assert all(b >= 0x20 and b != 0x7F for b in line)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
def test_printable_ascii_is_written_unchanged(text: str) -> None:
    assert encode_line(text) == text.encode("ascii").ljust(COLUMNS)


# -- geometry, fitting, and the display's side (DmdDecoder) -------------------------------------


def test_fit_line_says_when_text_was_cut_but_not_for_trailing_spaces() -> None:
    assert fit_line("x" * 21) == (b"x" * 20, True)
    assert fit_line("x" * 20) == (b"x" * 20, False)
    assert fit_line("TOTAL 12.50" + " " * 30) == (b"TOTAL 12.50".ljust(20), False)
    assert fit_line("Cafe\u0301" + "y" * 16) == (b"Caf\x82" + b"y" * 16, False)


def test_text_on_a_four_row_display_is_placed_row_by_row() -> None:
    lines = [fit_line(t, width=40)[0] for t in ("one", "two", "three")]
    assert encode_text(lines, columns=40, rows=4) == (
        b"\x0c" + b"\x1f\x24\x01\x01" + lines[0] + b"\x1f\x24\x01\x02" + lines[1]
        + b"\x1f\x24\x01\x03" + lines[2]
    )  # fmt: skip
    assert encode_text(lines[:1], clear=False) == b"\x1f\x24\x01\x01" + lines[0]
    with pytest.raises(ValueError):
        encode_text(lines, rows=2)


def test_the_decoder_shows_the_reference_screen() -> None:
    display = DmdDecoder()
    events = display.feed(encode_screen("APPLES 1.234 kg", "TOTAL          12.50"))
    assert display.lines == ["APPLES 1.234 kg     ", "TOTAL          12.50"]
    assert events[:4] == [
        Initialized(),
        SettingChanged("mode", 1),
        SettingChanged("cursor", 0),
        Cleared(),
    ]
    assert events[4:] == [
        TextWritten(1, 1, b"APPLES 1.234 kg     "),
        TextWritten(2, 1, b"TOTAL          12.50"),
    ]
    assert display.cursor == (1, 1), "bottom-right wraps home in overwrite mode"


def test_the_decoder_waits_for_a_split_command() -> None:
    display = DmdDecoder()
    stream = encode_setup(code_table=16) + encode_text([b"A".ljust(20), b"B".ljust(20)])
    events = [event for byte in stream for event in display.feed(bytes((byte,)))]
    assert SettingChanged("code_table", 16) in events
    assert display.lines == ["A".ljust(20), "B".ljust(20)]


def test_printer_data_passes_by_the_display_in_pass_through() -> None:
    """§3.2: after ESC = 1 everything is the printer's until ESC = 2 (receipt text must not
    appear on the customer's display)."""
    display = DmdDecoder()
    display.feed(encode_screen("HELLO", ""))
    events = display.feed(SELECT_PRINTER + b"RECEIPT\x0c\x1b@" + SELECT_DISPLAY + b"!")
    assert events == [PeripheralSelected(1), PeripheralSelected(2), TextWritten(1, 1, b"!")]
    assert display.lines[0] == "!ELLO".ljust(20)


def test_vertical_scroll_and_control_bytes() -> None:
    display = DmdDecoder(columns=4, rows=2)
    display.feed(VERTICAL_SCROLL_MODE + b"abcdefgh")
    assert display.lines == ["abcd", "efgh"]
    display.feed(b"ij")
    assert display.lines == ["efgh", "ij  "]
    display.feed(b"\x0b\x18")  # home, clear that line
    assert display.lines == ["    ", "ij  "]
    assert display.feed(b"\x07") == [UnknownCommand(b"\x07")]
    assert display.feed(b"\x1f\x24\x09\x01") == [UnknownCommand(b"\x1f\x24\x09\x01")]


@given(st.lists(st.text(max_size=30), max_size=2), st.sampled_from(["cp437", "cp858"]))
def test_what_the_hub_encodes_is_what_the_customer_sees(lines: list[str], encoding: str) -> None:
    fitted = [fit_line(text, encoding=encoding)[0] for text in lines]
    display = DmdDecoder(encoding=encoding)
    display.feed(encode_setup() + encode_text(fitted))
    shown = [line.decode(encoding) for line in fitted] + [" " * 20] * (2 - len(fitted))
    assert display.lines == shown


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_the_decoder_never_raises_and_keeps_its_geometry(chunks: list[bytes]) -> None:
    display = DmdDecoder()
    for chunk in chunks:
        display.feed(chunk)
    assert [len(line) for line in display.lines] == [20, 20]
    column, row = display.cursor
    assert 1 <= column <= 20
    assert 1 <= row <= 2
