"""The account's concurrency limit: postings first, background reads neither blocking them
nor starving (edge.uplink.netsuite.connector.AccountSlots)."""

from __future__ import annotations

import asyncio

from edge.uplink.netsuite.connector import AccountSlots


async def hold(slots: AccountSlots, got: asyncio.Event, done: asyncio.Event, bg: bool) -> None:
    async with slots.slot(background=bg):
        got.set()
        await done.wait()


async def test_a_posting_passes_a_waiting_background_read() -> None:
    slots = AccountSlots(2, background_wait_s=3600)
    a_got, a_done = asyncio.Event(), asyncio.Event()
    b_got, b_done = asyncio.Event(), asyncio.Event()
    c_got, c_done = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(hold(slots, a_got, a_done, False))
    await a_got.wait()
    b = asyncio.create_task(hold(slots, b_got, b_done, True))  # would take the last free slot
    c = asyncio.create_task(hold(slots, c_got, c_done, False))
    await c_got.wait()
    assert not b_got.is_set(), "the catalogue read must leave the last slot to postings"
    a_done.set()
    await a
    assert not b_got.is_set()  # one slot busy (c): the other stays free for the next posting
    c_done.set()
    await c
    await b_got.wait()  # nothing posting: the read goes
    b_done.set()
    await b
    assert slots.busy == 0


async def test_a_background_read_is_not_starved_by_a_busy_account() -> None:
    slots = AccountSlots(2, background_wait_s=0.05)
    a_got, a_done = asyncio.Event(), asyncio.Event()
    b_got, b_done = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(hold(slots, a_got, a_done, False))
    await a_got.wait()
    b = asyncio.create_task(hold(slots, b_got, b_done, True))
    async with asyncio.timeout(5):
        await b_got.wait()  # after its bounded wait, it takes the free slot
    assert slots.busy == 2
    a_done.set()
    b_done.set()
    await asyncio.gather(a, b)


async def test_a_cancelled_waiter_leaves_the_count_right() -> None:
    slots = AccountSlots(1, background_wait_s=3600)
    a_got, a_done = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(hold(slots, a_got, a_done, False))
    await a_got.wait()
    waiters = [
        asyncio.create_task(hold(slots, asyncio.Event(), asyncio.Event(), bg))
        for bg in (True, False)
    ]
    await asyncio.sleep(0)  # let them queue (a scheduling step, not a timing guess)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    a_done.set()
    await a
    assert slots.busy == 0
    got = asyncio.Event()
    done = asyncio.Event()
    done.set()
    await hold(slots, got, done, False)  # and the next posting gets the slot at once
    assert got.is_set()


async def test_a_lightly_used_account_lets_a_background_read_through_at_once() -> None:
    """Two postings in flight on a 5-request account: room is left, the catalogue reads now
    (the demo's lanes post all the time, and its first download must not wait 5 s a page)."""
    slots = AccountSlots(5, background_wait_s=3600)
    held = [(asyncio.Event(), asyncio.Event()) for _ in range(2)]
    postings = [asyncio.create_task(hold(slots, got, done, False)) for got, done in held]
    for got, _ in held:
        await got.wait()
    b_got, b_done = asyncio.Event(), asyncio.Event()
    b_done.set()
    async with asyncio.timeout(1):
        await hold(slots, b_got, b_done, True)
    assert b_got.is_set()
    for _, done in held:
        done.set()
    await asyncio.gather(*postings)
