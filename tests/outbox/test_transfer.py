"""Moving sales off a replaced hub: a consistent copy of a live outbox file, and the import of
another hub's undelivered items under the intake's idempotency rules. Real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from edge.outbox.store import Entry, OutboxStore
from edge.outbox.transfer import backup, import_items
from tests.outbox.test_store import sale_entry

T0 = 1_800_000_000.0


def entry(key: str, body: str = "x") -> Entry:
    return Entry(key=key, kind="sale", event_type="com.storeedge.sale.v1", lane="lane-1",
                 payload=json.dumps({"txn_id": key, "body": body}).encode())  # fmt: skip


async def test_a_backup_of_a_live_outbox_holds_every_committed_item(tmp_path: Path) -> None:
    """Taken while the hub appends: what the WAL holds is in the copy, and the copy checks."""
    store = OutboxStore(tmp_path / "outbox.db")
    await store.open()
    try:
        await asyncio.gather(*(store.append(entry(f"t{n}"), now=T0) for n in range(300)))
        await store.mark_delivered([(1, "rec-1")], now=T0 + 1)
        more = asyncio.gather(*(store.append(entry(f"u{n}"), now=T0) for n in range(300)))
        counts = await asyncio.to_thread(backup, store.path, tmp_path / "copy.db")
        await more
    finally:
        await store.close()
    assert counts["delivered"] == 1
    assert 299 <= counts["pending"] <= 599, "every commit before the copy, maybe some after"
    with sqlite3.connect(tmp_path / "copy.db") as db:
        keys = {k for (k,) in db.execute("SELECT key FROM items")}
    assert {f"t{n}" for n in range(300)} <= keys
    with pytest.raises(FileExistsError):
        backup(tmp_path / "outbox.db", tmp_path / "copy.db")


async def test_import_takes_the_undelivered_items_once_and_says_what_it_left(
    tmp_path: Path,
) -> None:
    old = OutboxStore(tmp_path / "old.db")
    await old.open()
    for n, key in enumerate(("a", "b", "c", "d", "e", "f")):
        await old.append(entry(key), now=T0 + n)
    await old.mark_delivered([(1, "rec-a")], now=T0 + 10)  # a: the cloud has it
    await old.park("b", actor="tech", reason="price check", now=T0 + 11)  # b: parked
    await old.close()
    with sqlite3.connect(tmp_path / "old.db") as db:  # f: its payload rotted on the disk
        db.execute("UPDATE items SET payload = x'7b7d' WHERE key = 'f'")

    new = OutboxStore(tmp_path / "new.db")
    await new.open()
    try:
        await new.append(entry("c"), now=T0 + 20)  # the register re-sent c to the new hub
        await new.append(entry("d", body="other"), now=T0 + 21)  # another sale under d's id
        result = await import_items(tmp_path / "old.db", new, now=T0 + 30)
        again = await import_items(tmp_path / "old.db", new, now=T0 + 31)
        pending = {item.key: item for item in await new.list_items("pending")}
        parked = await new.list_items("parked")
        audit = await new.audit_log("b")
    finally:
        await new.close()
    assert (result.added, result.already_here, result.conflicts, result.damaged) == (
        2, 1, ["d"], [6],
    )  # fmt: skip
    assert (again.added, again.already_here) == (0, 3), "an import twice adds nothing"
    assert sorted(pending) == ["c", "d", "e"], "a delivered, f damaged: not imported"
    assert pending["e"].accepted_at == T0 + 4, "the original acceptance time: its age is kept"
    assert pending["c"].accepted_at == T0 + 20
    assert [(item.key, item.accepted_at) for item in parked] == [("b", T0 + 1)], "parked stays"
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("park", "edge outbox import", "parked on the hub of old.db: parked by tech: price check")
    ]


async def test_import_takes_a_sale_as_its_payload_files_it_not_as_a_damaged_column_reads(
    tmp_path: Path,
) -> None:
    """The dead hub's disk flipped a bit in a sale's dependencies (no longer JSON) and in
    another's lane: the import takes both, filed as their payloads say."""
    sales = [sale_entry(1, "lane-7", customer="C-77"), sale_entry(2, "lane-8")]
    old = OutboxStore(tmp_path / "old.db")
    await old.open()
    for sale in sales:
        await old.append(sale, now=T0)
    await old.close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE items SET depends_on = '[\"customer:C-77\"\\' WHERE seq = 1")
        db.execute("UPDATE items SET lane = 'lane-9' WHERE seq = 2")
    new = OutboxStore(tmp_path / "new.db")
    await new.open()
    try:
        result = await import_items(tmp_path / "old.db", new, now=T0 + 30)
        pending = await new.list_items("pending")
    finally:
        await new.close()
    assert (result.added, result.damaged) == (2, [])
    assert [(i.key, i.lane, i.depends_on, i.payload) for i in pending] == [
        (s.key, s.lane, s.depends_on, s.payload) for s in sales
    ]
    assert pending[0].depends_on == ("customer:C-77",), "the premise: a sale with one"
