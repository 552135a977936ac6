"""The HQ message handler under fuzzed input, and the telemetry policy (both without a broker:
the handler's acks go to a list, its state to a real file)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.hq.apply import AttributeApplier
from edge.hq.config import HQ_CODES, Ack, make_document, sign_document
from edge.hq.handler import HqHandler
from edge.hq.settings import HqSettings
from edge.hq.state import StateFile
from edge.hq.telemetry import TelemetryPolicy
from tests.hq.conftest import snapshot
from tests.hq.keys import NOW
from tests.schemas import validate

HQ = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


class Live:
    interval = 300.0


def make_handler(state_dir: Path) -> tuple[HqHandler, list[Ack]]:
    acks: list[Ack] = []

    async def send(ack: Ack) -> None:
        acks.append(ack)

    async def echo(args: dict[str, Any]) -> dict[str, Any]:
        return {"args": len(args)}

    handler = HqHandler(
        HqSettings(apply_ready_timeout_s=0.05, ready_poll_s=0.01, max_document_bytes=4096),
        store_id="s1",
        hub_id="hub-test",
        public_key=HQ.public_key(),
        state=StateFile(state_dir / "hq-state.json"),
        appliers=[
            AttributeApplier("catalogue.interval_s", Live(), "interval", minimum=10, maximum=1e5)
        ],
        commands={"echo": echo},
        ready=lambda: True,
        send=send,
        clock=NOW.timestamp,
    )
    return handler, acks


def check_acks(acks: list[Ack]) -> None:
    assert acks, "every message gets at least one ack"
    for ack in acks:
        validate("hq-ack.json", json.loads(msgspec.json.encode(ack)))
        if ack.stage in ("rejected", "rolled_back"):
            assert ack.code in HQ_CODES
            assert ack.code != "INTERNAL", "an unexpected error is a bug, even if it is caught"
    assert acks[-1].stage in ("applied", "rejected", "rolled_back")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
near_config = st.fixed_dictionaries(
    {},
    optional={
        "catalogue": st.fixed_dictionaries({}, optional={"interval_s": json_values}) | json_values,
        "telemetry": json_values,
        "outbox": st.dictionaries(st.sampled_from(["concurrency", "x"]), json_values),
        "lanes": st.dictionaries(st.text(max_size=6), json_values) | json_values,
    },
)
near_command = st.fixed_dictionaries(
    {"name": st.sampled_from(["echo", "telemetry.now", "Bad Name"]) | st.text(max_size=6)},
    optional={"args": json_values},
)


def run(handler: HqHandler, kind: Any, payload: bytes) -> None:
    async def go() -> None:
        await handler.open()
        await handler.handle(kind, payload)

    asyncio.run(go())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["config", "command"]),
    payload=st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_arbitrary_bytes_and_json_get_a_structured_rejection(kind: Any, payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        handler, acks = make_handler(Path(directory))
        run(handler, kind, payload)
        check_acks(acks)
        assert [ack.stage for ack in acks] == ["rejected"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["config", "command"]),
    target=st.sampled_from(["store:s1", "*", "store:s2"]),
    version=st.integers(min_value=1, max_value=5),
    config=near_config,
    command=near_command,
)
def test_signed_fuzzed_documents_end_in_a_final_ack_and_never_raise(
    kind: Any, target: str, version: int, config: Any, command: Any
) -> None:
    """Authentic but arbitrary: the handler gets past the signature and must still answer."""
    payload = config if kind == "config" else command
    doc = make_document(kind, target=target, version=version, issued_at=NOW, payload=payload)
    with tempfile.TemporaryDirectory() as directory:
        handler, acks = make_handler(Path(directory))
        run(handler, kind, sign_document(HQ, doc))
        check_acks(acks)
        if acks[0].stage == "received":
            state = StateFile(Path(directory) / "hq-state.json").load()
            assert getattr(state.last_version, kind) == version, "recorded before it was acked"


def test_the_policy_debounces_a_flapping_change_and_ignores_the_depth() -> None:
    policy = TelemetryPolicy(interval_s=60, debounce_s=2)
    up, down = snapshot(), snapshot(wan="down")
    assert policy.due(up, 0) == "connect"
    policy.published(up, 0)
    assert policy.due(snapshot(outbox_depth=50, free_disk_bytes=1), 1) is None
    assert policy.due(down, 10) is None, "not yet held for debounce_s"
    assert policy.due(up, 11) is None, "flapped back: nothing to report"
    assert policy.due(down, 12) is None
    assert policy.due(down, 13.9) is None
    assert policy.due(down, 14) == "change"
    policy.published(down, 14)
    assert policy.due(snapshot(wan="down", outbox_depth=0), 20) is None
    assert policy.due(snapshot(wan="down", outbox_depth=0), 22) == "change", "emptied outbox"
    assert policy.due(down, 74) == "interval"
    policy.published(down, 74)
    salvaged = snapshot(wan="down", outbox_salvage="salvaged from a damaged file at ...")
    assert policy.due(salvaged, 75) is None
    assert policy.due(salvaged, 77) == "change", "a salvage is news for HQ"
    policy.interval_s = 5
    policy.published(down, 74)
    assert policy.due(down, 79) == "interval"
