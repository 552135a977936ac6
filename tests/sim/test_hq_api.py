"""The HQ API simulator over real HTTP on 127.0.0.1, through aiohttp.ClientSession.

The outbox sender and the hq_http connector are tested against this simulator, so each test here
pins a promise of the contract in edge/sim/hq_api.py that they rely on: exactly one record per
event id whatever the retries, honest error answers, and faults that look to a client exactly
like the real failures they stand for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.sim.hq_api import (
    BATCH_CONTENT_TYPE,
    BATCH_PATH,
    REJECTION_CODE,
    Fault,
    HqApiServer,
    HqApiSimulator,
    run_hq_api,
)

TOKEN = "store-s1-token"
# What a client sees when the server drops the connection without an answer.
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid CloudEvent as the hq_http connector builds it."""
    cloud_event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/stores/s1/lanes/lane-1",
        "type": "com.example.pos.sale",
        "time": "2024-05-01T12:00:00+00:00",
        "datacontenttype": "application/json",
        "data": {"total": "12.50", "lines": [{"sku": "A1", "qty": 1}]},
    }
    cloud_event.update(overrides)
    return cloud_event


@dataclass
class Answer:
    status: int
    raw: bytes
    headers: Any

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    @property
    def results(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.body["results"]
        return results

    @property
    def error_code(self) -> str:
        code: str = self.body["error"]["code"]
        return code


class Client:
    """A minimal HQ client: one POST per call, a fresh Idempotency-Key unless one is given."""

    def __init__(self, session: aiohttp.ClientSession, server: HqApiServer) -> None:
        self.session = session
        self.server = server

    async def post(
        self,
        body: bytes | list[Any],
        *,
        key: str | None = None,
        token: str | None = TOKEN,
        content_type: str = BATCH_CONTENT_TYPE,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Content-Type": content_type, "Idempotency-Key": key or uuid.uuid4().hex}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        async with self.session.post(
            self.server.url + BATCH_PATH, data=raw, headers=all_headers
        ) as response:
            return Answer(response.status, await response.read(), response.headers)


@contextlib.asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[Client]:
    """A simulator (token TOKEN plus ``options``) on an ephemeral port, and a client session."""
    sim = HqApiSimulator(token=TOKEN, **options)
    async with run_hq_api(sim=sim) as server, aiohttp.ClientSession() as session:
        yield Client(session, server)


@pytest.fixture
async def hq() -> AsyncIterator[Client]:
    async with serve() as client:
        yield client


async def wait_until_in_flight(client: Client, count: int) -> None:
    async with asyncio.timeout(5):
        await client.server.wait_until(lambda sim: sim.stats.in_flight == count)


# -- acceptance and idempotency ----------------------------------------------------------------


async def test_accepts_a_batch_and_a_resend_is_a_duplicate_of_the_same_record(
    hq: Client,
) -> None:
    """A sale re-sent after a lost answer must not become a second ERP record."""
    batch = [event("txn-1"), event("txn-2")]
    first = await hq.post(batch)
    assert first.status == 200
    assert [r["id"] for r in first.results] == ["txn-1", "txn-2"]
    assert all(r["status"] == "accepted" and r["duplicate"] is False for r in first.results)

    again = await hq.post(batch)  # a new Idempotency-Key: the event ids alone must protect
    assert again.status == 200
    assert [r["record_id"] for r in again.results] == [r["record_id"] for r in first.results]
    assert all(r["duplicate"] is True for r in again.results)

    sim = hq.server.sim
    assert sim.commit_count("txn-1") == sim.commit_count("txn-2") == 1
    assert sim.received_count("txn-1") == 2
    assert sim.committed["txn-1"] == batch[0]
    assert len({r["record_id"] for r in first.results}) == 2


async def test_the_ledger_keeps_each_event_exactly_as_received(hq: Client) -> None:
    """What a test reads back from HQ's ledger is what the hub sent, JSON's corners included:
    a 30-digit integer, a float, and a lone surrogate escape (valid JSON, not UTF-8)."""
    sent = event("txn-odd", data={"n": 10**30, "f": 0.1, "s": "\ud800 caf\u00e9"})
    assert (await hq.post([sent])).status == 200
    sim = hq.server.sim
    assert sim.committed["txn-odd"] == sent
    assert list(sim.committed) == ["txn-odd"]
    assert sim.committed.keys() == {"txn-odd"}


async def test_an_id_twice_in_one_batch_is_recorded_once(hq: Client) -> None:
    """Idempotency by id holds inside a batch too."""
    answer = await hq.post([event("txn-1"), event("txn-1")])
    first, second = answer.results
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert first["record_id"] == second["record_id"]
    assert hq.server.sim.commit_count("txn-1") == 1


async def test_same_key_same_body_replays_the_stored_answer(hq: Client) -> None:
    """A retry with the same Idempotency-Key gets the original answer, byte for byte."""
    body = json.dumps([event("txn-1")]).encode()
    first = await hq.post(body, key="batch-1")
    replay = await hq.post(body, key="batch-1")
    assert replay.status == 200
    assert replay.raw == first.raw
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert hq.server.sim.received_count("txn-1") == 1
    assert hq.server.sim.stats.idempotent_replays == 1


async def test_same_key_with_a_different_body_is_refused_with_422(hq: Client) -> None:
    """A client bug that reuses a key for other events must not silently lose those events."""
    assert (await hq.post([event("txn-1")], key="batch-1")).status == 200
    reused = await hq.post([event("txn-2")], key="batch-1")
    assert reused.status == 422
    assert reused.error_code == "IDEMPOTENCY_KEY_REUSED"
    assert "txn-2" not in hq.server.sim.committed


async def test_key_in_quotes_is_the_same_key(hq: Client) -> None:
    """The idempotency draft writes the key as a quoted sf-string; both forms are one key."""
    body = json.dumps([event("txn-1")]).encode()
    await hq.post(body, key="k-1")
    replay = await hq.post(body, key='"k-1"')
    assert replay.headers.get("Idempotent-Replayed") == "true"


# -- business rejections ------------------------------------------------------------------------


async def test_rejected_ids_are_refused_while_the_rest_of_the_batch_is_accepted(
    hq: Client,
) -> None:
    """One bad sale must be parked with HQ's reason, not block or lose its neighbours."""
    sim = hq.server.sim
    sim.reject_ids.add("txn-bad")
    answer = await hq.post([event("txn-1"), event("txn-bad"), event("txn-3")])
    assert answer.status == 200
    assert [r["id"] for r in answer.results] == ["txn-1", "txn-bad", "txn-3"]
    assert [r["status"] for r in answer.results] == ["accepted", "rejected", "accepted"]
    error = answer.results[1]["error"]
    assert error["code"] == REJECTION_CODE
    assert "txn-bad" in error["message"]
    assert error["details"]["event_id"] == "txn-bad"
    assert sim.commit_count("txn-bad") == 0
    assert set(sim.committed) == {"txn-1", "txn-3"}

    # Same code and message every time: the technician sees a stable reason.
    assert (await hq.post([event("txn-bad")])).results[0]["error"] == error

    # After the fix upstream, the parked event is re-queued and accepted.
    sim.reject_ids.clear()
    requeued = await hq.post([event("txn-bad")])
    assert requeued.results[0]["status"] == "accepted"
    assert requeued.results[0]["duplicate"] is False
    assert sim.commit_count("txn-bad") == 1


# -- request errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        pytest.param({}, None, id="no-authorization"),
        pytest.param({}, "wrong", id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, None, id="wrong-scheme"),
    ],
)
async def test_bad_credentials_get_401_and_commit_nothing(
    hq: Client, headers: dict[str, str], token: str | None
) -> None:
    """Without the store's token HQ records nothing, and says how to authenticate."""
    hq.server.sim.script(Fault.throttle())
    answer = await hq.post([event("txn-1")], token=token, headers=headers)
    assert answer.status == 401
    assert answer.error_code == "UNAUTHORIZED"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not hq.server.sim.committed
    # Authentication comes before faults: the scripted fault is still there for the next call.
    assert hq.server.sim.scripted_faults == (Fault.throttle(),)


def _without(field: str) -> dict[str, Any]:
    broken = event("txn-1")
    del broken[field]
    return broken


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        pytest.param(b"{not json", "MALFORMED_JSON", None, id="not-json"),
        pytest.param(b"\xff\xfe[]", "MALFORMED_JSON", None, id="not-utf8"),
        pytest.param(b"[NaN]", "MALFORMED_JSON", None, id="nan"),
        pytest.param(b'{"events": []}', "INVALID_BATCH", None, id="object-not-array"),
        pytest.param([], "INVALID_BATCH", None, id="empty-array"),
        pytest.param(["txn-1"], "INVALID_EVENT", "", id="event-not-object"),
        pytest.param([_without("id")], "INVALID_EVENT", "id", id="no-id"),
        pytest.param([_without("source")], "INVALID_EVENT", "source", id="no-source"),
        pytest.param([_without("type")], "INVALID_EVENT", "type", id="no-type"),
        pytest.param([_without("time")], "INVALID_EVENT", "time", id="no-time"),
        pytest.param([_without("data")], "INVALID_EVENT", "data", id="no-data"),
        pytest.param([event("x", specversion="0.3")], "INVALID_EVENT", "specversion", id="v0.3"),
        pytest.param([event("")], "INVALID_EVENT", "id", id="empty-id"),
        pytest.param([event("x", time="2024-05-01 12:00")], "INVALID_EVENT", "time", id="no-tz"),
        pytest.param(
            [event("x", time="2023-02-29T00:00:00Z")], "INVALID_EVENT", "time", id="29feb"
        ),
        pytest.param(
            [event("x", datacontenttype="text/plain")],
            "INVALID_EVENT",
            "datacontenttype",
            id="datacontenttype",
        ),
        pytest.param([event("x", data="a string")], "INVALID_EVENT", "data", id="data-string"),
    ],
)
async def test_malformed_batches_get_400_naming_the_problem_and_commit_nothing(
    hq: Client, body: bytes | list[Any], code: str, field: str | None
) -> None:
    """A malformed batch is refused whole, with a reason a developer can act on."""
    if code == "INVALID_EVENT":
        # A valid event first: the whole batch is refused, and the bad one is pointed at.
        assert isinstance(body, list)
        body = [event("txn-0"), *body]
    answer = await hq.post(body)
    assert answer.status == 400
    assert answer.error_code == code
    if field is not None:
        assert answer.body["error"]["details"] == {
            "index": 1,
            "field": field,
            "reason": answer.body["error"]["details"]["reason"],
        }
    assert not hq.server.sim.committed


async def test_missing_idempotency_key_is_400(hq: Client) -> None:
    async with hq.session.post(
        hq.server.url + BATCH_PATH,
        data=json.dumps([event("txn-1")]),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": BATCH_CONTENT_TYPE},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "MISSING_IDEMPOTENCY_KEY"
    assert not hq.server.sim.committed


async def test_wrong_content_type_is_415(hq: Client) -> None:
    answer = await hq.post([event("txn-1")], content_type="application/json")
    assert answer.status == 415
    assert answer.error_code == "UNSUPPORTED_MEDIA_TYPE"
    assert not hq.server.sim.committed


async def test_batches_above_max_batch_get_413_and_commit_nothing() -> None:
    """The connector must learn the limit from the answer, and nothing half-commits."""
    async with serve(max_batch=3) as client:
        answer = await client.post([event(f"txn-{i}") for i in range(4)])
        assert answer.status == 413
        assert answer.error_code == "BATCH_TOO_LARGE"
        assert answer.body["error"]["details"] == {"max_batch": 3, "received": 4}
        assert (await client.post([event(f"txn-{i}") for i in range(3)])).status == 200


async def test_bodies_above_max_body_bytes_get_413() -> None:
    async with serve(max_body_bytes=2048) as client:
        answer = await client.post([event("txn-1", data={"pad": "x" * 4096})])
        assert answer.status == 413
        assert answer.error_code == "PAYLOAD_TOO_LARGE"
        assert not client.server.sim.committed


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
event_fields = st.sampled_from(
    ["specversion", "id", "source", "type", "time", "datacontenttype", "data"]
)


@st.composite
def broken_batches(draw: st.DrawFn) -> bytes:
    """Bodies a buggy or hostile client could send: bytes, JSON of any shape, near-misses."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    batch = [event(f"fuzz-{i}") for i in range(draw(st.integers(1, 3)))]
    target = draw(st.sampled_from(batch))
    name = draw(event_fields)
    if draw(st.booleans()):
        del target[name]
    else:
        target[name] = draw(json_values)
    return json.dumps(batch).encode()


@settings(
    max_examples=60,
    deadline=None,
    # One server for all examples on purpose: every example must leave it without a commit.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=broken_batches())
async def test_fuzzed_bodies_never_cause_a_500_or_a_commit_unless_accepted(
    hq: Client, body: bytes
) -> None:
    """Whatever the body, HQ answers 200/400/413; anything but 200 leaves the ledger as it was."""
    before = dict(hq.server.sim.committed)
    answer = await hq.post(body)
    assert answer.status in (200, 400, 413), answer.raw
    if answer.status != 200:
        assert hq.server.sim.committed == before
        assert "code" in answer.body["error"]
    else:  # a mutation that happened to keep the event valid (e.g. a new string source)
        assert all(r["status"] == "accepted" for r in answer.results)


# -- faults ----------------------------------------------------------------------------------


async def test_throttle_fault_gives_429_with_retry_after_once(hq: Client) -> None:
    """The sender must be able to read how long to back off; the fault is one-shot."""
    hq.server.sim.script(Fault.throttle(retry_after_s=7))
    throttled = await hq.post([event("txn-1")])
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.error_code == "RATE_LIMITED"
    assert not hq.server.sim.committed
    assert (await hq.post([event("txn-1")])).status == 200


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_faults_answer_5xx_and_commit_nothing(hq: Client, status: int) -> None:
    hq.server.sim.script(Fault.server_error(status))
    failed = await hq.post([event("txn-1")])
    assert failed.status == status
    assert failed.body["error"]["code"]
    assert not hq.server.sim.committed
    assert hq.server.sim.stats.responses[status] == 1
    assert (await hq.post([event("txn-1")])).status == 200


async def test_timeout_fault_hangs_until_the_client_gives_up(hq: Client) -> None:
    """A hung HQ must trip the client's own timeout; giving up frees the server's slot."""
    hq.server.sim.script(Fault.timeout())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await hq.post([event("txn-1")])
    await wait_until_in_flight(hq, 0)
    assert not hq.server.sim.committed
    assert (await hq.post([event("txn-1")])).status == 200


async def test_reset_fault_drops_the_connection_without_an_answer(hq: Client) -> None:
    hq.server.sim.script(Fault.reset())
    with pytest.raises(DISCONNECTED):
        await hq.post([event("txn-1")])
    assert not hq.server.sim.committed
    assert (await hq.post([event("txn-1")])).results[0]["duplicate"] is False


async def test_commit_then_lose_commits_although_the_client_sees_an_error(hq: Client) -> None:
    """The dangerous case: HQ has the sale but the hub does not know. The re-send must come
    back as a duplicate of the same record, never as a second record."""
    sim = hq.server.sim
    sim.script(Fault.commit_then_lose())
    body = json.dumps([event("txn-1")]).encode()
    with pytest.raises(DISCONNECTED):
        await hq.post(body, key="batch-1")
    assert sim.commit_count("txn-1") == 1
    record_id = sim.record_id("txn-1")

    resent = await hq.post(body)  # a new batch attempt, new key
    assert resent.results[0] == {
        "id": "txn-1",
        "status": "accepted",
        "record_id": record_id,
        "duplicate": True,
    }
    replayed = await hq.post(body, key="batch-1")  # the same attempt retried
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.results[0]["record_id"] == record_id
    assert sim.commit_count("txn-1") == 1


async def test_latency_fault_delays_the_answer(hq: Client) -> None:
    hq.server.sim.script(Fault.latency(0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await hq.post([event("txn-1")])).status == 200
    assert loop.time() - started >= 0.2


async def test_concurrency_limit_answers_429_to_the_excess() -> None:
    """The cloud's concurrency budget: the request beyond it is throttled, not queued."""
    async with serve(max_concurrency=2, retry_after_s=3) as client:
        client.server.sim.script(Fault.timeout(), Fault.timeout())
        hung = [asyncio.create_task(client.post([event(f"hung-{i}")])) for i in range(2)]
        try:
            await wait_until_in_flight(client, 2)
            excess = await client.post([event("txn-1")])
            assert excess.status == 429
            assert excess.error_code == "CONCURRENCY_LIMIT_EXCEEDED"
            assert excess.headers["Retry-After"] == "3"
        finally:
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
        await wait_until_in_flight(client, 0)
        assert (await client.post([event("txn-1")])).status == 200
        assert client.server.sim.stats.max_in_flight == 2


async def test_base_latency_holds_a_concurrency_slot() -> None:
    """Capacity is concurrency x batch / latency only if a slow request keeps its slot."""
    async with serve(max_concurrency=1, latency_s=0.3) as client:
        answers = await asyncio.gather(client.post([event("txn-1")]), client.post([event("txn-2")]))
        assert sorted(a.status for a in answers) == [200, 429]


def test_theoretical_capacity_is_concurrency_times_batch_over_latency() -> None:
    """Benchmarks report throughput as a share of this figure."""
    sim = HqApiSimulator(max_concurrency=4, max_batch=50, latency_s=0.1)
    assert sim.theoretical_events_per_s == pytest.approx(4 * 50 / 0.1)
    assert HqApiSimulator(latency_s=0).theoretical_events_per_s == float("inf")


# -- health and the control API ---------------------------------------------------------------


async def test_health_answers_without_a_token_and_consumes_no_fault(hq: Client) -> None:
    hq.server.sim.script(Fault.reset())
    async with hq.session.get(hq.server.url + "/v1/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
    assert hq.server.sim.scripted_faults == (Fault.reset(),)


async def test_sim_http_controls_drive_faults_and_show_state(hq: Client) -> None:
    """The demo drives the simulator over HTTP: script a fault, reject an id, read the state."""
    url = hq.server.url
    controls = {
        "script": [{"kind": "throttle", "retry_after_s": 2}],
        "reject_ids": ["txn-bad"],
    }
    async with hq.session.post(url + "/_sim/faults", json=controls) as response:
        assert response.status == 200
        assert (await response.json())["script"][0]["kind"] == "throttle"
    assert (await hq.post([event("txn-1")])).status == 429
    answer = await hq.post([event("txn-1"), event("txn-bad")])
    assert [r["status"] for r in answer.results] == ["accepted", "rejected"]

    async with hq.session.get(url + "/_sim/stats") as response:
        stats = (await response.json())["stats"]
    assert stats["requests"] == 2
    assert stats["responses"] == {"200": 1, "429": 1}
    assert stats["faults"] == {"throttle": 1}
    assert (stats["events_committed"], stats["events_rejected"]) == (1, 1)

    async with hq.session.get(url + "/_sim/events") as response:
        events = await response.json()
    assert events["count"] == 1
    assert events["events"][0]["id"] == "txn-1"
    assert events["events"][0]["record_id"] == answer.results[0]["record_id"]
    assert events["events"][0]["event"] == event("txn-1")


@pytest.mark.parametrize(
    "controls",
    [
        {"script": [{"kind": "meteor"}]},
        {"script": [{"kind": "server_error", "status": 418}]},
        {"latency_s": -1},
        {"profile": {"throttle": 0.8, "reset": 0.8}},
        {"unknown": 1},
    ],
)
async def test_sim_http_controls_refuse_nonsense(hq: Client, controls: dict[str, Any]) -> None:
    """A typo in a demo script must fail loudly rather than run a different scenario."""
    async with hq.session.post(hq.server.url + "/_sim/faults", json=controls) as response:
        assert response.status == 400
    assert hq.server.sim.scripted_faults == ()
    assert hq.server.sim.latency_s == 0


async def test_shutdown_ends_hung_requests_promptly() -> None:
    """A hung request must not hold the test (or the demo) for aiohttp's shutdown timeout."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        sim = HqApiSimulator(token=TOKEN)
        sim.script(Fault.timeout())
        async with run_hq_api(sim=sim, shutdown_timeout_s=30) as server:
            client = Client(session, server)
            hung = asyncio.create_task(client.post([event("txn-1")]))
            await wait_until_in_flight(client, 1)
            started = loop.time()
        assert loop.time() - started < 5
        with pytest.raises(DISCONNECTED):
            await hung
