"""Request/response through a real Mosquitto: correlation, exactly one reply, structured errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bus import ERROR_CODES, Topics
from edge.bus.client import quiet_late_writer_registration
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub
from tests.schemas import validate_reply

TOPICS = Topics("s1")
PING = TOPICS.hub_rpc("ping")


async def test_ping_round_trip_echoes_data_with_matching_correlation(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A register must get back its own reply, carrying its request id and data."""
    async with (
        run_hub(hub_settings(tmp_path, broker_port=broker.port)),
        lane_client(broker.port) as lane,
    ):
        reply = await lane.request(PING, {"n": 1, "text": "héllo"}, request_id="req-1")
    assert reply.ok
    assert reply.id == "req-1"
    assert reply.data["echo"] == {"n": 1, "text": "héllo"}


async def test_concurrent_requests_each_get_their_own_reply(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Replies are routed by correlation data, not by order: 200 overlapping requests from
    three lanes each get exactly the reply to what they sent."""
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)):
        async with (
            lane_client(broker.port, "lane-1") as a,
            lane_client(broker.port, "lane-2") as b,
            lane_client(broker.port, "lane-3") as c,
        ):
            clients = [a, b, c]
            calls = [clients[i % 3].request(PING, {"i": i}) for i in range(200)]
            replies = await asyncio.gather(*calls)
    assert [r.data["echo"]["i"] for r in replies] == list(range(200))


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe not json", "MALFORMED_JSON"),
        (b'{"v": 1, "id": ', "MALFORMED_JSON"),
        (b"[1, 2, 3]", "SCHEMA_INVALID"),
        (b'{"v": 1}', "SCHEMA_INVALID"),
        (b'{"v": "1", "id": "x"}', "SCHEMA_INVALID"),
        (b'{"v": 2, "id": "x"}', "UNSUPPORTED_VERSION"),
    ],
)
async def test_malformed_request_gets_structured_error(
    tmp_path: Path, broker: MosquittoProcess, payload: bytes, code: str
) -> None:
    """A broken request gets one error reply with a stable code, matching the reply schema."""
    async with (
        run_hub(hub_settings(tmp_path, broker_port=broker.port)),
        lane_client(broker.port) as lane,
    ):
        raw = await lane.request_raw(PING, payload)
    reply = json.loads(raw)
    validate_reply(reply)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"]["retryable"] is ERROR_CODES[code][0]


async def test_oversized_request_refused_before_parsing(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    settings = hub_settings(tmp_path, broker_port=broker.port, bus__max_request_bytes=2048)
    async with run_hub(settings), lane_client(broker.port) as lane:
        reply = await lane.request(PING, {"pad": "x" * 4096})
        small = await lane.request(PING, {"pad": "x"})
    assert reply.error is not None
    assert reply.error.code == "TOO_LARGE"
    assert reply.error.details == {"size": pytest.approx(4120, abs=40), "max": 2048}
    assert small.ok, "a small request right after must still work"


async def test_unknown_method_lists_known_ones(tmp_path: Path, broker: MosquittoProcess) -> None:
    async with (
        run_hub(hub_settings(tmp_path, broker_port=broker.port)),
        lane_client(broker.port) as lane,
    ):
        reply = await lane.request(TOPICS.hub_rpc("nope"), {})
    assert reply.error is not None
    assert reply.error.code == "UNKNOWN_METHOD"
    assert "ping" in reply.error.details["known"]


async def test_bad_requests_do_not_disturb_other_clients(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """One lane flooding garbage must not delay or break another lane's requests."""
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)):
        async with lane_client(broker.port, "bad") as bad, lane_client(broker.port, "good") as good:
            garbage = [bad.request_raw(PING, b"\x00garbage" * (i + 1)) for i in range(100)]
            fine = [good.request(PING, {"i": i}) for i in range(50)]
            results = await asyncio.gather(*garbage, *fine)
    bad_replies = [json.loads(r) for r in results[:100]]
    assert all(r["error"]["code"] == "MALFORMED_JSON" for r in bad_replies)
    assert [r.data["echo"]["i"] for r in results[100:]] == list(range(50))


async def test_request_without_response_topic_is_counted_not_fatal(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with (
        run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub,
        lane_client(broker.port) as lane,
    ):
        await lane.publish(PING, b'{"v":1,"id":"no-reply-topic"}')
        reply = await lane.request(PING, {"after": True})
        dropped = hub.metrics.requests_unanswerable._value.get()
    assert reply.ok
    assert dropped == 1


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["v", "id", "data", "sent_at", "x"]), inner, max_size=5)
    ),
    max_leaves=12,
)
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    _JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda rid, data: json.dumps({"v": 1, "id": rid, "data": data}).encode(),
        st.text(max_size=140),
        _JSON_VALUES,
    ),
)


async def test_fuzzed_requests_always_get_exactly_one_valid_reply(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Whatever bytes arrive, the hub answers each once, with a schema-valid reply and a known
    code, and keeps serving (hypothesis drives a real hub through a real broker)."""
    async with (
        run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub,
        lane_client(broker.port) as lane,
    ):
        loop = asyncio.get_running_loop()

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(payload=_PAYLOADS)
        def check(payload: bytes) -> None:
            future = asyncio.run_coroutine_threadsafe(lane.request_raw(PING, payload), loop)
            reply = json.loads(future.result(timeout=10))
            validate_reply(reply)
            if reply["ok"]:
                assert "echo" in reply["data"]
            else:
                assert reply["error"]["code"] in ERROR_CODES
                assert reply["error"]["code"] != "INTERNAL"

        await asyncio.to_thread(check)
        assert hub.bus.is_connected


async def test_a_socket_closed_before_the_loop_watches_it_is_no_traceback_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker restarts: aiomqtt has asked the loop to watch its socket for writing, and paho
    closes the socket before the loop gets to it. The technician's log must not show two
    tracebacks for it; any other failed callback is still logged as an error."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(None)
    done = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("a real bug")

    try:
        quiet_late_writer_registration(loop)
        closed, other = socket.socketpair()
        fd = closed.fileno()
        closed.close()
        other.close()
        with caplog.at_level(logging.DEBUG):
            loop.call_soon(loop.add_writer, fd, lambda: None)
            loop.call_soon(broken)
            loop.call_soon(done.set)
            await done.wait()
    finally:
        loop.set_exception_handler(previous)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError), "other failures are still errors"
    assert any("not watched for writing" in r.getMessage() for r in caplog.records)
