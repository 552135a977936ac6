"""Datalogic Magellan single-cable scale frames: golden frames from peripherals.md §2.3 (KB
KA-01089) and the stream parser. They prevent a wrong weight at the till: the decimal point
placed wrongly (the frame has none), a "can't find zero" read as 0.000 kg, a barcode frame on
the same link read as a weight."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import FRAME_LENGTH, STATUS_UNKNOWN, FrameError
from devices.scale import Reading
from devices.scale_magellan import (
    MONITOR,
    REQUEST_WEIGHT,
    MagellanParser,
    MagellanState,
    decode_frame,
    encode_monitor_frame,
    encode_request,
    encode_weight_frame,
)
from tests.devices.streams import feed_in_pieces


def test_requests() -> None:
    assert REQUEST_WEIGHT == b"S11\r"
    assert MONITOR == b"S14\r"
    assert encode_request("11", prefix=b"#", end=b"\n") == b"#11\n"


@pytest.mark.parametrize(
    ("frame", "unit", "weight"),
    [
        (b"S1101234\r", "kg", Decimal("1.234")),  # 5 digits, metric: grams of a kg
        (b"S110150\r", "lb", Decimal("1.50")),  # 4 digits, imperial: hundredths of a pound
        (b"S14401234\r", "kg", Decimal("1.234")),  # scale monitor: stable non-zero
        (b"S1440150\r", "lb", Decimal("1.50")),
    ],
)
def test_golden_weights_get_the_decimal_point_from_the_unit(
    frame: bytes, unit: str, weight: Decimal
) -> None:
    reading = decode_frame(frame, unit=unit)  # type: ignore[arg-type]
    assert reading == Reading(weight=weight, unit=unit, stable=True)
    assert str(weight) == str(reading.weight), "exact decimal, never a float"  # type: ignore[union-attr]


def test_golden_monitor_states() -> None:
    unstable = decode_frame(b"S141\r")
    assert isinstance(unstable, Reading)
    assert not unstable.usable
    assert not unstable.stable
    over = decode_frame(b"S142\r")
    assert isinstance(over, Reading)
    assert over.over_capacity
    assert not over.usable
    zero = decode_frame(b"S143\r")
    assert zero == Reading(weight=Decimal("0.000"), unit="kg", stable=True, at_zero=True)
    under = decode_frame(b"S145\r")
    assert isinstance(under, Reading)
    assert under.under_zero
    assert not under.usable
    assert decode_frame(b"S140\r") == MagellanState(0, "cannot find zero")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"S110123\r", FRAME_LENGTH),  # 4 digits for a kg scale
        (b"S11012345\r", FRAME_LENGTH),
        (b"S146\r", STATUS_UNKNOWN),
        (b"S1431\r", STATUS_UNKNOWN),  # stable zero carries no weight
    ],
)
def test_malformed_frames_are_refused_with_a_stable_code(frame: bytes, code: str) -> None:
    with pytest.raises(FrameError) as refused:
        decode_frame(frame)
    assert refused.value.code == code


def test_the_parser_skips_barcodes_on_the_shared_link_and_keeps_weights() -> None:
    parser = MagellanParser(unit="kg")
    stream = b"S08A4006381333931\r" + b"S1100455\r" + b"S141\r"
    events = parser.feed(stream)
    assert events[0] == Reading(weight=Decimal("0.455"), unit="kg", stable=True)
    assert isinstance(events[1], Reading)
    assert not events[1].stable
    assert parser.discarded > 0


def test_a_configured_prefix_and_terminator() -> None:
    parser = MagellanParser(unit="lb", prefix=b"#", end=b"\n")
    assert parser.feed(b"#110150\n") == [Reading(weight=Decimal("1.50"), unit="lb", stable=True)]


@given(
    grams=st.integers(min_value=0, max_value=99_999),
    monitor=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=20), max_size=5),
)
def test_any_weight_roundtrips_through_any_split(
    grams: int, monitor: bool, cuts: list[int]
) -> None:
    weight = Decimal(grams).scaleb(-3)
    frame = encode_weight_frame(weight, unit="kg", monitor=monitor and grams > 0)
    events = feed_in_pieces(MagellanParser(unit="kg"), frame, cuts)
    assert events == [Reading(weight=weight, unit="kg", stable=True)]


@given(st.binary(max_size=64))
def test_the_parser_never_raises(data: bytes) -> None:
    parser = MagellanParser()
    parser.feed(data)
    assert parser.pending <= 16


def test_monitor_frames_for_emulators() -> None:
    assert encode_monitor_frame(1) == b"S141\r"
    with pytest.raises(ValueError):
        encode_monitor_frame(4)
