"""CAS scales: the ECR "DC1" frame and the 22-byte continuous line (peripherals.md §2.5).

The reference gives layouts and lengths, not captures: the golden frames below are those
layouts filled in, and their lengths (15 and 22 bytes) are the documented ones.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import (
    CHECKSUM,
    FRAME_DELIMITER,
    FRAME_LENGTH,
    STATUS_UNKNOWN,
    UNIT_UNKNOWN,
    WEIGHT_FORMAT,
    FrameError,
)
from devices.scale import Reading
from devices.scale_cas import (
    MAX_FRAME,
    REQUEST_WEIGHT,
    ContinuousParser,
    EcrFormat,
    EcrParser,
    compute_bcc,
    decode_continuous_line,
    decode_ecr_frame,
    encode_continuous_line,
    encode_ecr_frame,
)
from tests.devices.streams import feed_in_pieces

# §2.5: SOH STX STA SIGN W5..W0 UN1 UN2 BCC ETX EOT; BCC here = XOR of STA..UN2.
STABLE_1234 = b"\x01\x02S 01.234KG" + bytes((compute_bcc(b"S 01.234KG"),)) + b"\x03\x04"


def test_request_is_dc1() -> None:
    assert REQUEST_WEIGHT == b"\x11"  # §2.5: host sends DC1 (0x11)


def test_golden_ecr_frame() -> None:
    assert len(STABLE_1234) == 15  # TOTVS: "answer is 15 chars"
    assert decode_ecr_frame(STABLE_1234) == Reading(Decimal("1.234"), "kg", stable=True)
    assert encode_ecr_frame(Decimal("1.234")) == STABLE_1234


def test_unstable_and_negative_ecr_frames_are_not_usable() -> None:
    unstable = decode_ecr_frame(b"\x01\x02U 01.234KG\x00\x03\x04")
    assert unstable == Reading(Decimal("1.234"), "kg", stable=False)
    negative = decode_ecr_frame(b"\x01\x02S-00.500LB\x00\x03\x04")
    assert negative == Reading(Decimal("-0.500"), "lb", stable=True, under_zero=True)
    assert not unstable.usable
    assert not negative.usable


def test_bcc_is_only_checked_when_asked() -> None:
    """The BCC's coverage is unverified: by default a wrong guess must not reject frames."""
    wrong_bcc = STABLE_1234[:-3] + b"\x00\x03\x04"
    assert decode_ecr_frame(wrong_bcc).weight == Decimal("1.234")
    with pytest.raises(FrameError) as caught:
        decode_ecr_frame(wrong_bcc, fmt=EcrFormat(verify_bcc=True))
    assert caught.value.code == CHECKSUM
    assert decode_ecr_frame(STABLE_1234, fmt=EcrFormat(verify_bcc=True)).weight == Decimal("1.234")


def test_a_bcc_byte_equal_to_etx_does_not_end_the_frame_early() -> None:
    # The BCC is a free byte before ETX EOT; a 0x03 there must not cut the frame.
    frame = b"\x01\x02S 01.234KG\x03\x03\x04"
    assert EcrParser().feed(frame) == [Reading(Decimal("1.234"), "kg", stable=True)]


def test_pd2_style_frame_without_sign() -> None:
    # TOTVS PD-II: Chr(1)+Chr(2)+Chr(83)+<nnn.nnn>+<"kg">+…+Chr(3)+Chr(4), 15 chars.
    frame = b"\x01\x02S001.234kg\x00\x03\x04"
    assert len(frame) == 15
    fmt = EcrFormat(has_sign=False)
    assert decode_ecr_frame(frame, fmt=fmt) == Reading(Decimal("1.234"), "kg", stable=True)


def test_a_weight_without_a_point_needs_implied_decimals() -> None:
    """Guessing the point would turn 1.234 kg into 1234 kg on a price."""
    frame = b"\x01\x02S 001234KG\x00\x03\x04"
    with pytest.raises(FrameError) as caught:
        decode_ecr_frame(frame)
    assert caught.value.code == WEIGHT_FORMAT
    assert decode_ecr_frame(frame, fmt=EcrFormat(implied_decimals=3)).weight == Decimal("1.234")


def test_format_options_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(ValueError):
        EcrFormat(has_bcc=False, verify_bcc=True)
    with pytest.raises(ValueError):
        EcrFormat(implied_decimals=-1)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x02S 01.234KG\x00\x03\x04", FRAME_DELIMITER),
        (b"\x01\x02S 01.234KG\x00\x03", FRAME_DELIMITER),
        (b"\x01\x02S\x00\x03\x04", FRAME_LENGTH),
        (b"\x01\x02X 01.234KG\x00\x03\x04", STATUS_UNKNOWN),
        (b"\x01\x02S+01.234KG\x00\x03\x04", WEIGHT_FORMAT),
        (b"\x01\x02S 01,234KG\x00\x03\x04", WEIGHT_FORMAT),
        (b"\x01\x02S -1.234KG\x00\x03\x04", WEIGHT_FORMAT),
        (b"\x01\x02S 01.234ST\x00\x03\x04", UNIT_UNKNOWN),
    ],
)
def test_malformed_ecr_frames_are_frame_errors(frame: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_ecr_frame(frame)
    assert caught.value.code == code


def test_golden_continuous_lines() -> None:
    # §2.5: ST|US|OL , GS|NT , <deviceID><lamp> , <8-byte weight> SP k g CR LF = 22 bytes.
    line = b"ST,GS,01,+00013.5 kg\r\n"
    assert len(line) == 22
    assert decode_continuous_line(line) == Reading(Decimal("13.5"), "kg", stable=True)
    assert encode_continuous_line(Decimal("13.5"), lamp=ord("1")) == line
    # The reference's own example weight is 9 characters ("0000013.5"): still read.
    assert decode_continuous_line(b"US,NT,01,0000013.5 kg\r\n") == Reading(
        Decimal("13.5"), "kg", stable=False, net=True
    )
    overload = decode_continuous_line(b"OL,GS,01,+99999.9 kg\r\n")
    assert overload.over_capacity
    assert not overload.usable


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"ST,GS,01,+00013.5 kg\n", FRAME_DELIMITER),
        (b"ST,GS,01\r\n", FRAME_LENGTH),
        (b"ST;GS,01,+00013.5 kg\r\n", FRAME_LENGTH),
        (b"XX,GS,01,+00013.5 kg\r\n", STATUS_UNKNOWN),
        (b"ST,XX,01,+00013.5 kg\r\n", STATUS_UNKNOWN),
        (b"ST,GS,01,+000\xff3.5 kg\r\n", WEIGHT_FORMAT),
        (b"ST,GS,01,+0001..5 kg\r\n", WEIGHT_FORMAT),
        (b"ST,GS,01,+00013.5 st\r\n", UNIT_UNKNOWN),
    ],
)
def test_malformed_continuous_lines_are_frame_errors(line: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_continuous_line(line)
    assert caught.value.code == code


def test_ecr_parser_reassembles_byte_by_byte_after_noise() -> None:
    parser = EcrParser()
    events = []
    for byte in b"\x01\xff\x03" + STABLE_1234:
        events += parser.feed(bytes((byte,)))
    assert events == [Reading(Decimal("1.234"), "kg", stable=True)]
    assert parser.discarded == 3


def test_continuous_parser_resyncs_mid_line() -> None:
    """An indicator already streaming when the port opens: the first, cut line is lost,
    the next ones are read."""
    parser = ContinuousParser()
    wire = b"00013.5 kg\r\nST,GS,01,+00013.6 kg\r\nUS,GS,01,+00013.7 kg\r\n"
    assert [r.weight for r in feed_in_pieces(parser, wire, [5, 17, 30])] == [
        Decimal("13.6"),
        Decimal("13.7"),
    ]
    assert parser.discarded == len(b"00013.5 kg\r\n")


weights = st.decimals(min_value=-99, max_value=99, places=3, allow_nan=False)
units = st.sampled_from(["kg", "lb"])
formats = st.builds(
    EcrFormat,
    has_sign=st.booleans(),
    has_bcc=st.just(True),
    verify_bcc=st.booleans(),
)


@given(weights, units, st.booleans(), formats)
def test_ecr_round_trip(weight: Decimal, unit: str, stable: bool, fmt: EcrFormat) -> None:
    frame = encode_ecr_frame(weight, unit=unit, stable=stable, fmt=fmt, width=7)
    reading = decode_ecr_frame(frame, fmt=fmt)
    assert (reading.weight, reading.unit, reading.stable) == (weight, unit, stable)
    assert EcrParser(fmt=fmt).feed(frame) == [reading]


@given(weights, units, st.sampled_from(["ST", "US", "OL"]), st.booleans())
def test_continuous_round_trip(weight: Decimal, unit: str, status: str, net: bool) -> None:
    line = encode_continuous_line(
        weight.quantize(Decimal("0.1")), unit=unit, status=status, net=net
    )
    reading = decode_continuous_line(line)
    assert reading.weight == weight.quantize(Decimal("0.1"))
    assert (reading.stable, reading.over_capacity, reading.net) == (
        status == "ST",
        status == "OL",
        net,
    )


ecr_wire = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(b"\x01\x02\x03\x04SU -01.KG"), max_size=300).map(bytes),
)
line_wire = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(b"\r\nSTGNU,0+-1.5 kg"), max_size=300).map(bytes),
)


@given(ecr_wire, formats)
def test_decode_ecr_raises_only_frame_error(data: bytes, fmt: EcrFormat) -> None:
    code = None
    try:
        decode_ecr_frame(data, fmt=fmt)
    except FrameError as error:
        code = error.code
    assert code in {
        None,
        CHECKSUM,
        FRAME_DELIMITER,
        FRAME_LENGTH,
        STATUS_UNKNOWN,
        UNIT_UNKNOWN,
        WEIGHT_FORMAT,
    }


@given(line_wire)
def test_decode_continuous_raises_only_frame_error(data: bytes) -> None:
    code = None
    try:
        decode_continuous_line(data)
    except FrameError as error:
        code = error.code
    assert code in {
        None,
        FRAME_DELIMITER,
        FRAME_LENGTH,
        STATUS_UNKNOWN,
        UNIT_UNKNOWN,
        WEIGHT_FORMAT,
    }


@given(ecr_wire, st.lists(st.integers(0, 300), max_size=10))
def test_ecr_parser_never_raises_and_ignores_how_bytes_are_split(
    data: bytes, cuts: list[int]
) -> None:
    whole = EcrParser()
    expected = whole.feed(data)
    split = EcrParser()
    assert feed_in_pieces(split, data, cuts) == expected
    assert (split.discarded, split.pending) == (whole.discarded, whole.pending)
    assert split.pending <= MAX_FRAME


@given(line_wire, st.lists(st.integers(0, 300), max_size=10))
def test_continuous_parser_never_raises_and_ignores_how_bytes_are_split(
    data: bytes, cuts: list[int]
) -> None:
    whole = ContinuousParser()
    expected = whole.feed(data)
    split = ContinuousParser()
    assert feed_in_pieces(split, data, cuts) == expected
    assert (split.discarded, split.pending) == (whole.discarded, whole.pending)
    assert split.pending <= MAX_FRAME


@given(ecr_wire, weights)
def test_an_ecr_frame_after_any_garbage_is_still_decoded(garbage: bytes, weight: Decimal) -> None:
    frame = encode_ecr_frame(weight, width=7)
    assert EcrParser().feed(garbage + frame)[-1:] == [decode_ecr_frame(frame)]


@given(line_wire, weights)
def test_a_line_after_a_finished_line_is_still_decoded(garbage: bytes, weight: Decimal) -> None:
    # Framed by CR LF only: noise is ended by the CR LF that follows it on the wire.
    line = encode_continuous_line(weight.quantize(Decimal("0.1")))
    assert ContinuousParser().feed(garbage + b"\r\n" + line)[-1:] == [decode_continuous_line(line)]
