"""The sender against the real HQ simulator over HTTP, with a real outbox file: what it plans
ahead of a free slot, and what it must then not send.

The sender's clock is a variable here (``now`` passed in), so that a Retry-After window is
decided by the test, not by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge.metrics import Metrics
from edge.outbox.policy import RetryLater
from edge.outbox.sender import DISK_FULL_PAUSE_S, Sender
from edge.outbox.store import Entry, OutboxStore
from edge.settings import OutboxSettings
from edge.sim.damage import flip_a_bit_in, flip_first_bit_of
from edge.sim.hq_api import DEFAULT_TOKEN, Fault, HqApiSimulator, run_hq_api
from edge.uplink.hq_http import HqHttpConnector
from tests.conftest import fill_to_the_last_byte, small_disk
from tests.outbox.test_store import sale_entry

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


async def run_until(sender: Sender, done: Callable[[], bool]) -> None:
    """Run ``sender`` until ``done`` holds (``WAIT`` at most), then stop it."""
    running = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(WAIT):
            await sender.wait_until(done)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


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


async def test_a_lane_damaged_on_disk_reaches_the_cloud_as_the_sale_was_rung_up(
    tmp_path: Path,
) -> None:
    """A bit flipped in a pending sale's lane column (lane-7 read as lane-6): HQ must get the
    sale from lane 7 all the same. The sender's read restores the column from the payload,
    leaves the sale out of that batch and sends it in the next one."""
    path = tmp_path / "outbox.db"
    before = OutboxStore(path)
    await before.open()
    sales = [sale_entry(1, "lane-7", customer="C-77"), sale_entry(2, "lane-8")]
    for sale in sales:
        await before.append(sale, now=T0)
    await before.close()
    flip_first_bit_of(path, b"sale.v1lane-7", skip=12)
    store = OutboxStore(path)
    await store.open()
    sim = HqApiSimulator()
    settings = OutboxSettings(concurrency=1, batch_max=5, idle_poll_s=0.05)
    try:
        planned = [(item.key, item.lane) for item in await store.due(T0, 10)]
        async with run_hq_api(sim=sim) as hq:
            connector = HqHttpConnector(base_url=hq.url, token=DEFAULT_TOKEN, store_id="s1")
            sender = Sender(store, connector, settings, Metrics(), clock=Clock())
            await run_until(sender, lambda: len(sim.committed) == 2)
    finally:
        await store.close()
    assert planned[0] == (sales[0].key, "lane-6"), "the premise: the column reads otherwise"
    assert {key: sim.committed[key]["source"] for key in sim.committed} == {
        sales[0].key: "/stores/s1/lanes/lane-7",
        sales[1].key: "/stores/s1/lanes/lane-8",
    }
    assert sim.commit_count(sales[0].key) == 1


async def test_a_damaged_payload_is_parked_unsent_and_a_probe_of_it_does_not_stall_the_breaker(
    tmp_path: Path,
) -> None:
    """The WAN came back and the breaker probes with the oldest item, whose payload was damaged
    on disk. Nothing of it may be posted; it is parked by the hub (not the cloud), and since
    no probe went out the breaker probes again with the next item: the rest is delivered."""
    path = tmp_path / "outbox.db"
    before = OutboxStore(path)
    await before.open()
    for n in range(5):
        await before.append(entry(f"t-{n}"), now=T0)
    await before.close()
    flip_a_bit_in(path, b'"txn_id": "t-0"', b"t-")
    store = OutboxStore(path)
    await store.open()
    sim = HqApiSimulator()
    clock = Clock()
    settings = OutboxSettings(concurrency=1, batch_max=5, idle_poll_s=0.05)
    try:
        async with run_hq_api(sim=sim) as hq:
            connector = HqHttpConnector(base_url=hq.url, token=DEFAULT_TOKEN, store_id="s1")
            sender = Sender(store, connector, settings, Metrics(), clock=clock)
            lost = RetryLater("connection refused", "connection")
            for _ in range(settings.breaker_threshold):  # the WAN was down
                sender.breaker.record([lost], clock.now)
            assert sender.breaker.state == "open"
            clock.now += settings.breaker_cooldown_s  # the first probe is due
            await run_until(sender, lambda: len(sim.committed) == 4)
        parked = await store.get("t-0")
    finally:
        await store.close()
    assert sorted(sim.committed) == [f"t-{n}" for n in range(1, 5)]
    assert sim.commit_count("t-0") == 0
    assert parked is not None
    assert (parked.status, (parked.last_error or "")[:16]) == ("parked", "PAYLOAD_DAMAGED:")
    assert parked.attempts == 0, "never sent"
    assert sender.breaker.state == "closed"


async def test_a_full_disk_pauses_sending_until_there_is_room_and_each_sale_reaches_hq_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills up to the last byte while sales wait to go. HQ takes a batch, but its
    answer cannot be recorded: the items stay pending and the sender pauses (shown in
    `edge outbox status`) instead of posting the same batch again and again. After the pause it
    tries once more; once space returns the answers are recorded, and HQ has every sale once."""
    clock = Clock()
    settings = OutboxSettings(concurrency=1, batch_max=10, idle_poll_s=0.05)
    with small_disk(tmp_path, 8) as mount:
        store = OutboxStore(mount / "outbox.db")
        await store.open()
        for n in range(3):
            await store.append(entry(f"t-{n}"), now=T0)
        ballast = fill_to_the_last_byte(mount)
        sim = HqApiSimulator()
        async with run_hq_api(sim=sim) as hq:
            connector = HqHttpConnector(base_url=hq.url, token=DEFAULT_TOKEN, store_id="s1")
            sender = Sender(store, connector, settings, Metrics(), clock=clock)
            running = asyncio.create_task(sender.run())
            try:
                async with asyncio.timeout(WAIT):
                    await sender.wait_until(lambda: sender.batches_sent == 1)
                    paused_for = sender.snapshot()["disk_full_for_s"]
                    clock.now += DISK_FULL_PAUSE_S  # the pause is over; the disk still full
                    sender.wake()
                    await sender.wait_until(lambda: sender.batches_sent == 2)
                    paused_again_for = sender.snapshot()["disk_full_for_s"]
                    ballast.unlink()
                    clock.now += DISK_FULL_PAUSE_S
                    sender.wake()
                    await sender.wait_until(_nothing_pending(store))
                resumed = sender.snapshot()["disk_full_for_s"]
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await store.close()
    assert paused_for == paused_again_for == DISK_FULL_PAUSE_S
    assert resumed == 0
    assert sim.stats.requests == 3, "one post per pause, not one per turn of the loop"
    assert all(sim.commit_count(f"t-{n}") == 1 for n in range(3))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("sending pauses until space returns" in m for m in said) == 1, said
    assert sum("space is back" in m for m in said) == 1, said


def _nothing_pending(store: OutboxStore) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await store.stats()).pending == 0

    return check
