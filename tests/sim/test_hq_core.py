"""The HQ simulator's pure core: batch validation, RFC 3339 times, the fault draw.

Fast and exhaustive where the HTTP tests are few: a validator that crashes or lets a broken
event through would make every connector test against the simulator meaningless.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sim.hq_api import (
    BatchError,
    Fault,
    FaultKind,
    FaultProfile,
    HqApiSimulator,
    is_rfc3339,
    parse_batch,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Offsets in whole minutes: RFC 3339 has no seconds in time-offset.
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
rfc3339_times = st.builds(
    lambda moment, spec: moment.isoformat(timespec=spec),
    st.datetimes(timezones=offsets),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
nonempty_ids = st.text(min_size=1, max_size=256)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    cloud_event: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(nonempty_ids),
        "source": draw(st.text(min_size=1)),
        "type": draw(st.text(min_size=1)),
        "time": draw(rfc3339_times),
        "datacontenttype": "application/json",
        "data": draw(st.dictionaries(st.text(), json_values, max_size=4)),
    }
    # Extension attributes are allowed by CloudEvents and must not break anything.
    if draw(st.booleans()):
        cloud_event["traceparent"] = draw(st.text())
    return cloud_event


# Values that break one field each, without asking the code under test what is invalid.
not_strings = json_values.filter(lambda v: not isinstance(v, str))
breakers: dict[str, st.SearchStrategy[Any]] = {
    "specversion": json_values.filter(lambda v: v != "1.0"),
    "id": not_strings | st.just("") | st.text(min_size=257, max_size=300),
    "source": not_strings | st.just(""),
    "type": not_strings | st.just(""),
    "time": not_strings
    | st.sampled_from(["", "yesterday", "2024-05-01", "2024-05-01T12:00:00", "12:00:00Z"]),
    "datacontenttype": json_values.filter(lambda v: v != "application/json"),
    "data": json_values.filter(lambda v: not isinstance(v, dict)),
}


@settings(max_examples=300)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_either_a_batch_or_a_batch_error(body: bytes) -> None:
    """No input may crash the validator (which the HTTP shell would turn into a 500)."""
    outcome: list[dict[str, Any]] | BatchError
    try:
        outcome = parse_batch(body, max_batch=100)
    except BatchError as error:
        outcome = error
    if isinstance(outcome, BatchError):
        assert outcome.status in (400, 413)
        assert outcome.code
    else:
        assert 1 <= len(outcome) <= 100


@given(st.lists(valid_events(), min_size=1, max_size=5))
def test_valid_batches_pass_unchanged(batch: list[dict[str, Any]]) -> None:
    """Everything the hq_http connector may legally send is accepted as sent."""
    assert parse_batch(json.dumps(batch).encode(), max_batch=5) == batch


@given(
    st.lists(valid_events(), min_size=1, max_size=5),
    st.data(),
)
def test_one_broken_field_refuses_the_batch_and_names_the_event_and_field(
    batch: list[dict[str, Any]], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(batch) - 1))
    name = data.draw(st.sampled_from(sorted(breakers)))
    if data.draw(st.booleans()):
        del batch[index][name]
    else:
        batch[index][name] = data.draw(breakers[name])
    with pytest.raises(BatchError) as raised:
        parse_batch(json.dumps(batch).encode(), max_batch=5)
    assert (raised.value.status, raised.value.code) == (400, "INVALID_EVENT")
    assert raised.value.details["index"] == index
    assert raised.value.details["field"] == name


def test_max_batch_is_inclusive() -> None:
    body = json.dumps([{"not": "checked"}] * 4).encode()
    with pytest.raises(BatchError) as raised:
        parse_batch(body, max_batch=3)
    assert (raised.value.status, raised.value.code) == (413, "BATCH_TOO_LARGE")


@given(rfc3339_times)
def test_stdlib_isoformat_with_offset_is_rfc3339(text: str) -> None:
    """What Python's datetime.isoformat writes (the connector's "time") must be accepted."""
    assert is_rfc3339(text)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("1985-04-12T23:20:50.52Z", True),  # RFC 3339 §5.8 examples
        ("1996-12-19T16:39:57-08:00", True),
        ("1990-12-31T23:59:60Z", True),
        ("1937-01-01T12:00:27.87+00:20", True),
        ("2024-05-01t12:00:00z", True),  # §5.6 NOTE: "T" and "Z" may be lower case
        ("2024-05-01 12:00:00Z", True),  # §5.6 NOTE: a space may replace "T"
        ("2024-05-01T12:00:00", False),  # no offset
        ("2024-05-01", False),
        ("2024-02-30T00:00:00Z", False),
        ("2024-05-01T24:00:00Z", False),
        ("2024-05-01T12:00:61Z", False),
        ("2024-05-01T12:00:00+24:00", False),
        ("2024-05-01T12:00:00+0100", False),
        ("20240501T120000Z", False),
        ("2024-05-01T12:00:00Z\n", False),
    ],
)
def test_rfc3339_examples(text: str, valid: bool) -> None:
    assert is_rfc3339(text) is valid


def test_scripted_faults_come_first_and_once() -> None:
    sim = HqApiSimulator(profile=FaultProfile(throttle=1.0))
    sim.script(Fault.reset(), Fault.server_error(502))
    drawn = [sim.draw_fault() for _ in range(3)]
    assert drawn == [Fault.reset(), Fault.server_error(502), Fault.throttle()]
    assert sim.stats.faults == {"reset": 1, "server_error": 1, "throttle": 1}


def test_random_faults_are_reproducible_from_the_seed() -> None:
    """A benchmark or a failing end-to-end run must be repeatable."""
    profile = FaultProfile(throttle=0.2, server_error=0.2, reset=0.1, latency_jitter_s=0.05)
    first = HqApiSimulator(seed=42, profile=profile)
    second = HqApiSimulator(seed=42, profile=profile)
    sequence = [first.draw_fault() for _ in range(200)]
    assert sequence == [second.draw_fault() for _ in range(200)]
    kinds = {f.kind for f in sequence if f is not None}
    assert kinds == {FaultKind.THROTTLE, FaultKind.SERVER_ERROR, FaultKind.RESET, FaultKind.LATENCY}


def test_no_profile_means_no_faults() -> None:
    sim = HqApiSimulator()
    assert [sim.draw_fault() for _ in range(50)] == [None] * 50


@pytest.mark.parametrize(
    "make",
    [
        lambda: FaultProfile(throttle=0.6, reset=0.6),
        lambda: FaultProfile(timeout=-0.1),
        lambda: FaultProfile(latency_jitter_s=float("inf")),
        lambda: Fault.server_error(404),
        lambda: Fault.latency(-1),
        lambda: HqApiSimulator(max_batch=0),
        lambda: HqApiSimulator(latency_s=-1),
    ],
)
def test_impossible_settings_are_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()
