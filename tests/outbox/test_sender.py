"""The sender against the real HQ simulator over HTTP, with a real outbox file: what it plans
ahead of a free slot, and what it must then not send.

The sender's clock is a variable here (``now`` passed in), so that a Retry-After window is
decided by the test, not by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.metrics import Metrics
from edge.outbox.sender import Sender
from edge.outbox.store import Entry, OutboxStore
from edge.settings import OutboxSettings
from edge.sim.hq_api import DEFAULT_TOKEN, Fault, HqApiSimulator, run_hq_api
from edge.uplink.hq_http import HqHttpConnector

T0 = 1_800_000_000.0
WAIT = 10.0


def entry(key: str) -> Entry:
    payload = json.dumps({"txn_id": key}).encode()
    return Entry(
        key=key, kind="sale", event_type="com.storeedge.sale.v1", lane="lane-1", payload=payload
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OutboxStore]:
    s = OutboxStore(tmp_path / "outbox.db")
    await s.open()
    yield s
    await s.close()


async def test_a_throttled_answer_drops_the_batches_planned_ahead_until_retry_after(
    store: OutboxStore,
) -> None:
    """Batches are planned ahead of a free slot (their payloads read meanwhile) so that an
    answer starts the next one at once. A 429 with Retry-After must stop that: the planned
    batches are forgotten (their items pending again, none in flight) and nothing more is
    sent until the window has passed; then everything is delivered exactly once."""
    for n in range(8):
        await store.append(entry(f"t-{n}"), now=T0)
    sim = HqApiSimulator(max_batch=1, max_concurrency=1)
    sim.script(Fault.throttle(retry_after_s=30))
    clock = Clock()
    settings = OutboxSettings(concurrency=1, batch_max=1, idle_poll_s=0.05)
    async with run_hq_api(sim=sim) as hq:
        connector = HqHttpConnector(
            base_url=hq.url, token=DEFAULT_TOKEN, store_id="s1", max_batch=1, max_concurrency=1
        )
        sender = Sender(store, connector, settings, Metrics(), clock=clock)
        running = asyncio.create_task(sender.run())
        try:
            async with asyncio.timeout(WAIT):
                # Throttled, and every batch sent so far is answered and recorded.
                await sender.wait_until(
                    lambda: (
                        sender.snapshot()["throttled_for_s"] > 0
                        and sender.batches_sent == sim.stats.requests
                    )
                )
            assert sender.snapshot()["inflight"] == 0, "batches planned ahead were kept"
            delivered_in_window = len(sim.committed)
            assert delivered_in_window < 8
            clock.now += 31
            sender.wake()
            async with asyncio.timeout(WAIT):
                await sender.wait_until(lambda: len(sim.committed) == 8)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert sorted(sim.committed) == sorted(f"t-{n}" for n in range(8))
    assert all(sim.commit_count(f"t-{n}") == 1 for n in range(8))
    assert sim.stats.responses[429] == 1
