"""NCI / Weigh-Tronix SCP-01: frames built from the layouts in peripherals.md §2.4.

The reference gives layouts, not captured bytes: each golden frame below is that layout
filled in, with status bytes in the documented 0x3_ range ("high nibble 0x3", §2.4).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import (
    FRAME_DELIMITER,
    FRAME_LENGTH,
    STATUS_FIXED_BITS,
    UNIT_UNKNOWN,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import FAULT_EEPROM, FAULT_RAM, Reading
from devices.scale_scp01 import (
    CHANGE_UNITS,
    MAX_FRAME,
    REQUEST_HIGH_RESOLUTION,
    REQUEST_STATUS,
    REQUEST_WEIGHT,
    ZERO,
    CommandRejected,
    Scp01Parser,
    Scp01Status,
    UnitChange,
    decode_frame,
    encode_rejected_frame,
    encode_status_field,
    encode_status_frame,
    encode_unit_frame,
    encode_weight_frame,
)
from tests.devices.streams import feed_in_pieces


def test_commands_end_with_cr() -> None:
    # §2.4 table: W<CR>, S<CR>, Z<CR>, H<CR>, U<CR>.
    assert REQUEST_WEIGHT == b"W\r"
    assert REQUEST_STATUS == b"S\r"
    assert ZERO == b"Z\r"
    assert REQUEST_HIGH_RESOLUTION == b"H\r"
    assert CHANGE_UNITS == b"U\r"


def test_weight_answer_with_clear_status() -> None:
    # <LF>xxxx.xxuu<CR><LF>hh<CR><ETX>, status 0x30 0x30 = nothing to report.
    reading = decode_frame(b"\n0001.25lb\r\n00\r\x03")
    assert reading == Reading(Decimal("1.25"), "lb", stable=True)
    assert isinstance(reading, Reading)
    assert reading.usable


@pytest.mark.parametrize(
    ("status", "expected", "usable"),
    [
        (b"10", {"stable": False}, False),  # byte 1 bit 0: in motion
        (b"20", {"at_zero": True}, True),  # byte 1 bit 1: at zero
        (b"01", {"under_zero": True}, False),  # byte 2 bit 0: under capacity
        (b"02", {"over_capacity": True}, False),  # byte 2 bit 1: over capacity
        (b"0p4", {"net": True}, True),  # byte 2 bit 6: byte 3 follows; its bit 2: net
        (b"40", {"faults": frozenset({FAULT_RAM})}, False),  # byte 1 bit 2: RAM error
        (b"80", {"faults": frozenset({FAULT_EEPROM})}, False),  # byte 1 bit 3: EEPROM
    ],
)
def test_status_bits_reach_the_reading(
    status: bytes, expected: dict[str, Any], usable: bool
) -> None:
    """A moving, overloaded or faulty scale must never produce a sellable weight."""
    reading = decode_frame(b"\n   2.500kg\r\n" + status + b"\r\x03")
    assert isinstance(reading, Reading)
    assert reading == replace(Reading(Decimal("2.500"), "kg", stable=True), **expected)
    assert reading.usable is usable


def test_lb_oz_answer_is_exact_pounds() -> None:
    # §2.4: <LF>xxlb<SP>xx.xoz<CR><LF>hh…<CR><ETX>. 2 lb 10.5 oz = 2.65625 lb exactly.
    reading = decode_frame(b"\n02lb 10.5oz\r\n00\r\x03")
    assert reading == Reading(Decimal("2.65625"), "lb", stable=True)


def test_status_zero_unit_and_rejected_answers() -> None:
    assert decode_frame(b"\n00\r\x03") == Scp01Status()  # S<CR> / Z<CR>
    assert decode_frame(b"\nS12\r\x03") == Scp01Status(in_motion=True, over_capacity=True)
    assert decode_frame(b"\nkg\r\n00\r\x03") == UnitChange("kg", Scp01Status())  # U<CR>
    assert decode_frame(b"\n?\r\x03") == CommandRejected()  # any other command


def test_third_status_byte_range_and_initial_zero_error() -> None:
    status = decode_frame(b"\n0p;\r\x03")  # ';' = 0x3B: range 11 (high), initial zero error
    assert status == Scp01Status(range=3, initial_zero_error=True)
    assert isinstance(status, Scp01Status)
    assert status.faults == {"initial-zero"}


def test_fourth_status_byte_is_kept_raw() -> None:
    # DIVA: a 4th byte (weight change / zero seen / metric) whose bits are not documented.
    status = decode_frame(b"\n0pp1\r\x03")
    assert status == Scp01Status(extra=b"1")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"0001.25lb\r\n00\r\x03", FRAME_DELIMITER),
        (b"\n00\x03", FRAME_DELIMITER),
        (b"\n0\r\x03", FRAME_LENGTH),  # one status byte
        (b"\n0p\r\x03", FRAME_LENGTH),  # byte 2 announces a byte 3 that never comes
        (b"\n004\r\x03", FRAME_LENGTH),  # a byte 3 that byte 2 did not announce
        (b"\n@0\r\x03", STATUS_FIXED_BITS),  # byte 1 bit 6 set
        (b"\n\x200\r\x03", STATUS_FIXED_BITS),  # bit 4 clear
        (b"\n1.2.3lb\r\n00\r\x03", WEIGHT_FORMAT),
        (b"\n0001.25st\r\n00\r\x03", UNIT_UNKNOWN),
        (b"\nst\r\n00\r\x03", UNIT_UNKNOWN),
        (b"\n1lb\r\n2lb\r\n00\r\x03", FRAME_LENGTH),
    ],
)
def test_malformed_frames_are_frame_errors_with_a_stable_code(frame: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(frame)
    assert caught.value.code == code


def test_parser_reassembles_byte_by_byte_and_skips_noise() -> None:
    parser = Scp01Parser()
    wire = b"\xfe\x00\n0001.25lb\r\n00\r\x03junk\x03\n?\r\x03"
    events = []
    for byte in wire:
        events += parser.feed(bytes((byte,)))
    assert events == [Reading(Decimal("1.25"), "lb", stable=True), CommandRejected()]
    assert parser.discarded == len(b"\xfe\x00") + len(b"junk\x03")


def test_parser_does_not_let_a_stray_lf_swallow_the_frame_after_it() -> None:
    """Earliest-start-first must not turn noise + frame into one bad frame and lose both."""
    parser = Scp01Parser()
    assert parser.feed(b"\n12\n0001.25lb\r\n00\r\x03") == [
        Reading(Decimal("1.25"), "lb", stable=True)
    ]


def test_parser_buffer_is_bounded() -> None:
    parser = Scp01Parser()
    for _ in range(50):
        parser.feed(b"\n0" * 40)
        assert parser.pending <= MAX_FRAME


statuses = st.builds(
    Scp01Status,
    range=st.integers(0, 3),
    extra=st.sampled_from([b"", b"0", b"p0", b"?"]),
)
weights = st.decimals(min_value=0, max_value=9999, places=2, allow_nan=False)
units = st.sampled_from(["kg", "lb", "oz", "g"])


@given(statuses)
def test_status_round_trip(status: Scp01Status) -> None:
    assert decode_frame(encode_status_frame(status)) == status
    assert Scp01Status.from_field(encode_status_field(status)) == status


@given(weights, units, statuses)
def test_weight_round_trip(weight: Decimal, unit: str, status: Scp01Status) -> None:
    reading = decode_frame(encode_weight_frame(weight, unit, status))
    assert isinstance(reading, Reading)
    assert (reading.weight, reading.unit) == (weight, unit)
    assert reading.stable is not status.in_motion
    assert reading.faults == status.faults


@given(units, statuses)
def test_unit_change_round_trip(unit: str, status: Scp01Status) -> None:
    assert decode_frame(encode_unit_frame(unit, status)) == UnitChange(unit, status)


wire_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(b"\n\r\x03\x8a01p?Sk g.5 "), max_size=300).map(bytes),
)


@given(wire_bytes)
def test_decode_frame_raises_only_frame_error(data: bytes) -> None:
    code = None
    try:
        decode_frame(data)
    except FrameError as error:
        code = error.code
    assert code in {
        None,
        FRAME_DELIMITER,
        FRAME_LENGTH,
        STATUS_FIXED_BITS,
        UNIT_UNKNOWN,
        WEIGHT_FORMAT,
    }


@given(wire_bytes, st.lists(st.integers(0, 300), max_size=10))
def test_parser_never_raises_and_ignores_how_bytes_are_split(data: bytes, cuts: list[int]) -> None:
    whole = Scp01Parser()
    expected = whole.feed(data)
    split = Scp01Parser()
    assert feed_in_pieces(split, data, cuts) == expected
    assert split.discarded == whole.discarded
    assert split.pending == whole.pending <= MAX_FRAME


@given(wire_bytes, weights, units, statuses)
def test_a_weight_answer_after_any_garbage_is_still_decoded(
    garbage: bytes, weight: Decimal, unit: str, status: Scp01Status
) -> None:
    frame = encode_weight_frame(weight, unit, status)
    assert Scp01Parser().feed(garbage + frame)[-1:] == [decode_frame(frame)]


@given(wire_bytes, statuses)
def test_a_status_answer_after_a_finished_frame_is_still_decoded(
    garbage: bytes, status: Scp01Status
) -> None:
    # Not after *any* garbage: "LF weight CR" noise joins a status-only answer into a
    # weight frame (module docstring); an ETX ends the noise as it would on the wire.
    frame = encode_status_frame(status)
    assert Scp01Parser().feed(garbage + b"\x03" + frame)[-1:] == [status]


def test_rejected_frame_bytes() -> None:
    assert encode_rejected_frame() == b"\n?\r\x03"
