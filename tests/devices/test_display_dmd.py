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
    encode_blink,
    encode_brightness,
    encode_line,
    encode_lines,
    encode_move_cursor,
    encode_screen,
    encode_select_code_table,
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
