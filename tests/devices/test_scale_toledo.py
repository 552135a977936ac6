"""Mettler-Toledo 8217: golden frames from peripherals.md §2.2 / §4.3 and the stream parser.

These tests prevent a wrong weight at the till: a float-rounded price, a status frame read
as a weight, a reading lost because it arrived in two pieces or after line noise.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import (
    FRAME_DELIMITER,
    FRAME_LENGTH,
    STATUS_FIXED_BITS,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import Reading
from devices.scale_toledo import (
    CLEAR_TARE,
    MAX_FRAME,
    REQUEST_WEIGHT,
    TARE,
    ZERO,
    ToledoParser,
    ToledoStatus,
    decode_frame,
    encode_digital_tare,
    encode_status_frame,
    encode_weight_frame,
)
from tests.devices.streams import feed_in_pieces


def with_even_parity(data: bytes) -> bytes:
    """The bytes as an 8N1 port reads a 7E1 scale: the parity bit lands in bit 7."""
    return bytes(b | (0x80 if bin(b).count("1") % 2 else 0) for b in data)


def test_commands_are_single_letters() -> None:
    # §2.2 table; Odoo sends W with no CR.
    assert REQUEST_WEIGHT == b"W"
    assert ZERO == b"Z"
    assert TARE == b"T"
    assert CLEAR_TARE == b"C"


def test_golden_kg_frame_from_the_pty_experiment() -> None:
    # §4.3: W → b'\x0201.234\r' exchanged with the fake Toledo.
    reading = decode_frame(b"\x0201.234\r", unit="kg")
    assert reading == Reading(weight=Decimal("1.234"), unit="kg", stable=True)
    assert isinstance(reading, Reading)
    assert isinstance(reading.weight, Decimal)
    assert reading.usable


def test_lb_and_net_frames() -> None:
    # §2.2: STX WW.WW CR (lb), STX WW.WWN CR / STX WW.WWWN CR (net).
    assert decode_frame(b"\x0203.50\r", unit="lb") == Reading(Decimal("3.50"), "lb", stable=True)
    assert decode_frame(b"\x0201.234N\r", unit="kg") == Reading(
        Decimal("1.234"), "kg", stable=True, net=True
    )


def test_weight_keeps_the_scales_precision() -> None:
    """``00.100`` is 0.100 kg exactly; no float ever rounds it to 0.1000000000000000055."""
    reading = decode_frame(b"\x0200.100\r")
    assert isinstance(reading, Reading)
    assert reading.weight == Decimal("0.100")
    assert str(reading.weight) == "0.100"


@pytest.mark.parametrize(
    ("char", "status"),
    [
        # §2.2: ?A motion, ?B over capacity, ?D under zero, ?H outside zero range,
        # ?P center of zero; bit 5 = net; ?@ no condition.
        (b"A", ToledoStatus(in_motion=True)),
        (b"B", ToledoStatus(over_capacity=True)),
        (b"D", ToledoStatus(under_zero=True)),
        (b"H", ToledoStatus(outside_zero_capture_range=True)),
        (b"P", ToledoStatus(center_of_zero=True)),
        (b"`", ToledoStatus(net=True)),
        (b"@", ToledoStatus()),
        (b"C", ToledoStatus(in_motion=True, over_capacity=True)),
    ],
)
def test_golden_status_frames(char: bytes, status: ToledoStatus) -> None:
    frame = b"\x02?" + char + b"\r"
    assert decode_frame(frame) == status
    assert encode_status_frame(status) == frame


def test_clear_status_means_no_condition() -> None:
    assert ToledoStatus().clear
    assert not ToledoStatus(in_motion=True).clear


def test_frames_read_at_8n1_from_a_7e1_scale_decode_the_same() -> None:
    """§4.3: ptys refuse 7E1, so drivers may read at 8N1 and see the parity bit."""
    assert decode_frame(with_even_parity(b"\x0201.234\r")) == decode_frame(b"\x0201.234\r")
    parser = ToledoParser()
    assert parser.feed(with_even_parity(b"\x02?A\r")) == [ToledoStatus(in_motion=True)]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"01.234\r", FRAME_DELIMITER),
        (b"\x0201.234", FRAME_DELIMITER),
        (b"\x02?\r", FRAME_LENGTH),
        (b"\x02?AB\r", FRAME_LENGTH),
        (b"\x02?0\r", STATUS_FIXED_BITS),  # '0' = 0x30: bit 6 clear
        (b"\x0201,234\r", WEIGHT_FORMAT),
        (b"\x021234\r", WEIGHT_FORMAT),
        (b"\x02-1.234\r", WEIGHT_FORMAT),  # negative weight comes as a status frame
        (b"\x02NaN\r", WEIGHT_FORMAT),
        (b"\x02E\r", WEIGHT_FORMAT),  # the echo-test acknowledgement is not a weight
    ],
)
def test_malformed_frames_are_frame_errors_with_a_stable_code(frame: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(frame)
    assert caught.value.code == code


def test_a_unit_the_protocol_cannot_carry_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        ToledoParser(unit="g")
    with pytest.raises(ValueError):
        decode_frame(b"\x0201.234\r", unit="stone")


def test_digital_tare_is_five_digits_in_the_units_resolution() -> None:
    # §2.2: TWWWWW<CR>, WW.WWW kg / WWW.WW lb.
    assert encode_digital_tare(Decimal("1.5"), unit="kg") == b"T01500\r"
    assert encode_digital_tare(Decimal("12.34"), unit="lb") == b"T01234\r"
    for bad in (Decimal("100"), Decimal("0.0005"), Decimal("-1")):
        with pytest.raises(ValueError):
            encode_digital_tare(bad, unit="kg")


def test_parser_reassembles_a_frame_split_byte_by_byte() -> None:
    parser = ToledoParser()
    events = []
    for byte in b"\x0201.234\r\x02?A\r":
        events += parser.feed(bytes((byte,)))
    assert events == [Reading(Decimal("1.234"), "kg", stable=True), ToledoStatus(in_motion=True)]
    assert parser.discarded == 0


def test_parser_skips_garbage_and_a_truncated_frame_before_a_good_one() -> None:
    """A scale powered up mid-frame must not cost the next reading."""
    parser = ToledoParser()
    assert parser.feed(b"\xff3.2\r\x0201.2\x0200.500\r") == [
        Reading(Decimal("0.500"), "kg", stable=True)
    ]
    assert parser.discarded == len(b"\xff3.2\r\x0201.2")


@pytest.mark.parametrize("pieces", [1, 2, 31])
def test_a_frame_of_exactly_max_frame_bytes_is_kept_and_a_longer_one_dropped(pieces: int) -> None:
    """The buffer bound must never cut a legitimate frame, however it is split."""
    longest = b"\x02" + b"0" * (MAX_FRAME - 6) + b".000\r"
    too_long = b"\x020" + longest[1:]
    assert len(longest) == MAX_FRAME
    cuts = [len(longest) * i // pieces for i in range(1, pieces)]
    assert feed_in_pieces(ToledoParser(), longest, cuts) == [decode_frame(longest)]
    parser = ToledoParser()
    assert feed_in_pieces(parser, too_long, cuts) == []
    assert parser.discarded == len(too_long)


def test_parser_buffer_is_bounded_when_no_frame_ever_ends() -> None:
    parser = ToledoParser()
    for _ in range(100):
        assert parser.feed(b"\x021" * 50) == []
        assert parser.pending <= MAX_FRAME
    assert parser.feed(b"\x0202.000\r") == [Reading(Decimal("2.000"), "kg", stable=True)]


# Random bytes rarely contain STX or CR; this alphabet makes near-frames common.
wire_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(b"\x02\r\x8201.?@AN5 "), max_size=300).map(bytes),
)
kg_weights = st.decimals(min_value=0, max_value=99, places=3, allow_nan=False)
statuses = st.builds(ToledoStatus)


@given(kg_weights, st.booleans())
def test_weight_frame_round_trip(weight: Decimal, net: bool) -> None:
    frame = encode_weight_frame(weight, unit="kg", net=net)
    assert decode_frame(frame) == Reading(weight, "kg", stable=True, net=net)


@given(statuses)
def test_status_frame_round_trip(status: ToledoStatus) -> None:
    assert decode_frame(encode_status_frame(status)) == status


@given(wire_bytes)
def test_decode_frame_raises_only_frame_error(data: bytes) -> None:
    code = None
    try:
        decode_frame(data)
    except FrameError as error:
        code = error.code
    assert code in {None, FRAME_DELIMITER, FRAME_LENGTH, STATUS_FIXED_BITS, WEIGHT_FORMAT}


@given(wire_bytes, st.lists(st.integers(0, 300), max_size=10))
def test_parser_never_raises_and_ignores_how_bytes_are_split(data: bytes, cuts: list[int]) -> None:
    whole = ToledoParser()
    expected = whole.feed(data)
    split = ToledoParser()
    assert feed_in_pieces(split, data, cuts) == expected
    assert split.discarded == whole.discarded
    assert split.pending == whole.pending <= MAX_FRAME


@given(
    wire_bytes,
    st.one_of(kg_weights.map(lambda w: encode_weight_frame(w)), statuses.map(encode_status_frame)),
)
def test_a_frame_after_any_garbage_is_still_decoded(garbage: bytes, frame: bytes) -> None:
    events = ToledoParser().feed(garbage + frame)
    assert events[-1:] == [decode_frame(frame)]
