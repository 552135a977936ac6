"""ESC/POS DLE EOT status: golden bytes from peripherals.md §1.3 and round trips.

A wrong bit here shows a paper-out printer as healthy, or an online one as offline.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import STATUS_FIXED_BITS, STATUS_LENGTH, FrameError
from devices.escpos_status import (
    ErrorCause,
    OfflineCause,
    PrinterStatus,
    RollPaperStatus,
    StatusRequest,
    check_fixed_bits,
    decode_status,
    encode_status_request,
)


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        # §1.3 "Real-time status": DLE EOT n = 10 04 n.
        (StatusRequest.PRINTER, b"\x10\x04\x01"),
        (StatusRequest.OFFLINE_CAUSE, b"\x10\x04\x02"),
        (StatusRequest.ERROR_CAUSE, b"\x10\x04\x03"),
        (StatusRequest.ROLL_PAPER, b"\x10\x04\x04"),
    ],
)
def test_status_requests_are_the_documented_bytes(request_: StatusRequest, wire: bytes) -> None:
    assert encode_status_request(request_) == wire
    assert encode_status_request(int(request_)) == wire


@pytest.mark.parametrize("n", [0, 5, 0x10])
def test_a_request_outside_1_to_4_is_refused_before_it_reaches_the_printer(n: int) -> None:
    with pytest.raises(ValueError):
        encode_status_request(n)


@pytest.mark.parametrize("request_", list(StatusRequest))
def test_a_healthy_idle_printer_answers_0x12_to_every_request(request_: StatusRequest) -> None:
    # §1.3: "an idle, healthy Epson answers 0x12 to each of n=1..4".
    status = decode_status(request_, b"\x12")
    assert status == type(status)()  # every flag false


def test_golden_printer_status_bytes() -> None:
    # §1.3 examples: offline → n=1 0x1A; drawer pin HIGH → n=1 0x16.
    offline = decode_status(StatusRequest.PRINTER, b"\x1a")
    assert offline == PrinterStatus(offline=True)
    assert not offline.online
    assert decode_status(StatusRequest.PRINTER, b"\x16") == PrinterStatus(drawer_pin3_high=True)
    assert decode_status(StatusRequest.PRINTER, b"\x32") == PrinterStatus(
        waiting_for_online_recovery=True
    )
    assert decode_status(StatusRequest.PRINTER, b"\x52") == PrinterStatus(feed_button_pressed=True)


def test_golden_offline_cause_bytes() -> None:
    # §6: n=2 0x16 = cover open; §1.3 table for the other bits.
    assert decode_status(StatusRequest.OFFLINE_CAUSE, b"\x16") == OfflineCause(cover_open=True)
    assert decode_status(StatusRequest.OFFLINE_CAUSE, b"\x1a") == OfflineCause(
        paper_fed_by_button=True
    )
    assert decode_status(StatusRequest.OFFLINE_CAUSE, b"\x32") == OfflineCause(
        stopped_at_paper_end=True
    )
    assert decode_status(StatusRequest.OFFLINE_CAUSE, b"\x52") == OfflineCause(error=True)


def test_golden_error_cause_bytes() -> None:
    # §1.3 table, n=3 row.
    assert decode_status(StatusRequest.ERROR_CAUSE, b"\x16") == ErrorCause(mechanical_error=True)
    assert decode_status(StatusRequest.ERROR_CAUSE, b"\x1a") == ErrorCause(autocutter_error=True)
    assert decode_status(StatusRequest.ERROR_CAUSE, b"\x32") == ErrorCause(unrecoverable_error=True)
    assert decode_status(StatusRequest.ERROR_CAUSE, b"\x52") == ErrorCause(
        auto_recoverable_error=True
    )


def test_golden_roll_paper_bytes() -> None:
    # §1.3 examples: near-end → n=4 0x1E; paper out → n=4 0x72 (python-escpos RT_MASK_*).
    assert decode_status(StatusRequest.ROLL_PAPER, b"\x1e") == RollPaperStatus(near_end=True)
    assert decode_status(StatusRequest.ROLL_PAPER, b"\x72") == RollPaperStatus(paper_end=True)
    assert RollPaperStatus(near_end=True).to_byte() == 0x1E
    assert RollPaperStatus(paper_end=True).to_byte() == 0x72


def test_one_bit_of_a_paper_pair_still_reports_the_condition() -> None:
    """A printer setting only one bit of the 0x60 pair must not be shown as having paper."""
    assert decode_status(StatusRequest.ROLL_PAPER, b"\x32").paper_end
    assert decode_status(StatusRequest.ROLL_PAPER, b"\x16").near_end


@pytest.mark.parametrize(
    "value",
    [
        0x00,  # bits 1 and 4 clear
        0x13,  # bit 0 set
        0x10,  # bit 1 clear
        0x02,  # bit 4 clear
        0x92,  # bit 7 set
        0xFF,
    ],
)
def test_a_byte_breaking_the_fixed_bits_is_a_frame_error(value: int) -> None:
    with pytest.raises(FrameError) as caught:
        check_fixed_bits(value)
    assert caught.value.code == STATUS_FIXED_BITS
    assert caught.value.frame == bytes((value,))
    for request_ in StatusRequest:
        with pytest.raises(FrameError):
            decode_status(request_, bytes((value,)))


@pytest.mark.parametrize("response", [b"", b"\x12\x12", b"\x12\x12\x12\x12"])
def test_an_answer_that_is_not_one_byte_is_a_frame_error(response: bytes) -> None:
    """A stale second byte in the buffer must not be read as this request's answer."""
    with pytest.raises(FrameError) as caught:
        decode_status(StatusRequest.PRINTER, response)
    assert caught.value.code == STATUS_LENGTH


def test_fixed_bits_accepts_exactly_the_16_valid_bytes() -> None:
    valid = []
    for value in range(256):
        try:
            check_fixed_bits(value)
        except FrameError:
            continue
        valid.append(value)
    assert len(valid) == 16
    assert all(v & 0x93 == 0x12 for v in valid)


_STATUS_TYPES = {
    StatusRequest.PRINTER: PrinterStatus,
    StatusRequest.OFFLINE_CAUSE: OfflineCause,
    StatusRequest.ERROR_CAUSE: ErrorCause,
    StatusRequest.ROLL_PAPER: RollPaperStatus,
}


@given(st.sampled_from(list(StatusRequest)), st.data())
def test_an_emulator_byte_decodes_to_the_status_it_encoded(
    request_: StatusRequest, data: st.DataObject
) -> None:
    """A test printer built on ``to_byte`` answers exactly what the driver will decode."""
    status = data.draw(st.builds(_STATUS_TYPES[request_]))
    wire = status.to_byte()
    check_fixed_bits(wire)
    assert decode_status(request_, bytes((wire,))) == status


@given(st.integers(1, 4), st.binary(max_size=4))
def test_arbitrary_answers_raise_only_frame_error(n: int, response: bytes) -> None:
    """Whatever a confused device sends, the poller sees a FrameError, never a crash."""
    valid = len(response) == 1 and response[0] & 0x93 == 0x12
    try:
        status = decode_status(n, response)
    except FrameError:
        assert not valid
    else:
        assert valid
        assert status.to_byte() == response[0] or n == StatusRequest.ROLL_PAPER
