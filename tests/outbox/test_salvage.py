"""A damaged outbox file (bad sector, lying disk): found when the store opens, salvaged into a
new file with every item SQLite can still read, the loss said in seq ranges. Real SQLite
files, damaged by overwriting pages as a bad sector would."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from edge.metrics import Metrics
from edge.outbox.intake import DiskGuard
from edge.outbox.salvage import RESEND_MARGIN_S, SalvageReport, finish_interrupted
from edge.outbox.service import OutboxService
from edge.outbox.store import Entry, OutboxStore, StoreDamaged
from edge.sim.damage import damage_page_holding, flip_first_bit_of
from edge.sim.process import HubProcess, write_config
from tests.conftest import MosquittoProcess

T0 = 1_800_000_000.0
COUNT = 300


def entry(n: int) -> Entry:
    key = f"k{n:04d}"
    payload = json.dumps({"txn_id": key, "body": f"line {n} " * 80}).encode()  # ~700 bytes
    return Entry(key=key, kind="sale", event_type="com.storeedge.sale.v1", lane="lane-1",
                 payload=payload)  # fmt: skip


def marker(n: int) -> bytes:
    return f'{{"txn_id": "k{n:04d}"'.encode()  # in the payload only, not in the key index


def all_rows(path: Path) -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return {row[0]: row for row in db.execute("SELECT * FROM items ORDER BY seq")}


async def filled_store(path: Path) -> dict[int, tuple[object, ...]]:
    """COUNT items: some delivered, one parked by an operator (audited); closed cleanly."""
    store = OutboxStore(path)
    await store.open()
    for n in range(COUNT):
        await store.append(entry(n), now=T0 + n)
    await store.mark_delivered([(seq, f"rec-{seq}") for seq in range(1, 51)], now=T0 + 400)
    await store.park("k0099", actor="tech:ana", reason="training till", now=T0 + 401)
    await store.close()
    return all_rows(path)


async def salvaged(
    path: Path, refused: str, now: float = T0 + 500
) -> tuple[OutboxStore, SalvageReport]:
    """What the hub's start does with a damaged file: the open is refused (``refused``, a
    pattern of its reason), the salvage runs, and the store opens on the new file."""
    store = OutboxStore(path)
    with pytest.raises(StoreDamaged, match=refused):
        await asyncio.wait_for(store.open(), 10)
    report = await store.salvage(now=now)
    await store.open()
    return store, report


async def test_a_damaged_page_is_found_at_open_and_every_readable_item_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    before = await filled_store(path)
    damage_page_holding(path, marker(200))

    store, report = await salvaged(path, "damaged")
    try:
        lost = {seq for first, last in report.lost_seqs for seq in range(first, last + 1)}
        after = all_rows(path)
        assert 201 in lost, "k0200 (seq 201) was on the damaged page"
        # The registers are asked for their journals from the last item kept before the loss
        # (accepted at T0 + seq - 1), less the margin for their clocks.
        assert report.resend_since == T0 + min(lost) - 2 - RESEND_MARGIN_S
        assert report.resend_request().since == "2027-01-15T07:53:19+00:00"
        assert 0 < len(lost) <= 10, "one page of ~700-byte items"
        assert {seq: before[seq] for seq in after} == after, "kept rows are the rows, unchanged"
        assert set(after) | lost == set(before), "every item is kept or named as lost"
        assert (report.items_kept, report.items_lost) == (len(after), len(lost))
        assert report.pending_kept == sum(1 for row in after.values() if row[10] == "pending")
        assert report.audit_kept == 1
        assert store.salvage_report == report
        assert Path(report.damaged_file).exists(), "the damaged file is kept aside"
        assert Path(report.damaged_file).name == "outbox.db.damaged-20270115T080820Z"
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # The registers re-send their journals: what was kept is a duplicate with its seq,
        # what was lost is accepted anew, after every seq the damaged file held.
        for n in (0, 150, 200, 299):
            again = await store.append(entry(n), now=T0 + 600)
            if n + 1 in lost:
                assert (again.duplicate, again.seq > COUNT) == (False, True)
            else:
                assert (again.duplicate, again.seq) == (True, n + 1)
        assert [(a["key"], a["action"]) for a in await store.audit_log()] == [("k0099", "park")]
    finally:
        await store.close()


async def test_a_file_that_is_not_a_database_is_refused_at_open_not_waited_on(
    tmp_path: Path,
) -> None:
    """A damaged header (SQLITE_NOTADB): open raised in the writer thread's connect, which
    left the opening caller waiting for ever. Now it is StoreDamaged, and salvage gives the
    hub an empty outbox to trade on."""
    path = tmp_path / "outbox.db"
    path.write_bytes(os.urandom(8192))
    store, report = await salvaged(path, "not a database", now=T0)
    try:
        assert store.damage is None, "the hub must not stop on the damage just salvaged"
        assert (report.items_kept, report.lost_seqs, report.lost_from) == (0, [], 1)
        assert (report.needs_resend, report.resend_request().since) == (True, None), "all"
        assert "nothing readable from seq 1 on" in report.summary()
        assert (await store.append(entry(1), now=T0)).seq == 1
    finally:
        await store.close()


async def test_a_salvage_cut_short_is_finished_or_started_again(tmp_path: Path) -> None:
    """The hub dies during a salvage: a complete new file is swapped in at the next start
    (the damaged file moved aside with its WAL first); a partial one is dropped."""
    path = tmp_path / "outbox.db"
    await filled_store(path)
    damage_page_holding(path, marker(10))
    partial = tmp_path / "outbox.db.salvage"
    partial.write_bytes(b"half a file")
    assert finish_interrupted(path) is None
    assert not partial.exists()

    store = OutboxStore(path)
    report = await store.salvage(now=T0)
    # As if the process died after building the new file, before the swap: put the damaged
    # file (and a WAL of its own) back in place and the new one back under its build name.
    os.rename(path, partial)
    os.rename(report.damaged_file, path)
    Path(f"{path}-wal").write_bytes(b"frames of the damaged file")
    assert finish_interrupted(path) == report
    assert Path(f"{report.damaged_file}-wal").read_bytes() == b"frames of the damaged file"
    assert not Path(f"{path}-wal").exists()
    await store.open()
    try:
        stats = await store.stats()
        assert stats.pending + stats.delivered + stats.parked == report.items_kept
        assert report.items_kept + report.items_lost == COUNT
    finally:
        await store.close()


async def test_damage_met_while_running_is_refused_retryable_and_remembered(
    tmp_path: Path,
) -> None:
    """A read that meets a damaged page raises the retryable StoreDamaged (a register
    re-sends; the console answers 503) and the store remembers it: the hub stops on it."""
    path = tmp_path / "outbox.db"
    await filled_store(path)
    store = OutboxStore(path)
    await store.open()
    try:
        assert store.damage is None
        damage_page_holding(path, marker(200))  # under the running store, as a sector fails
        with pytest.raises(StoreDamaged) as caught:
            await store.get("k0200")
        assert caught.value.retryable is True
        assert store.damage is caught.value
    finally:
        await store.close()


async def test_a_hub_that_meets_damage_stops_and_its_restart_salvages(
    tmp_path: Path, broker: MosquittoProcess, free_port: Callable[[], int]
) -> None:
    """`edge run` under systemd: the console's read of the damaged item answers 503, the hub
    exits non-zero with one line saying why (no traceback), and the restart that follows comes
    up on the salvaged file with the notice on /readyz."""
    path = tmp_path / "state" / "outbox.db"
    await filled_store(path)
    http = free_port()
    config = write_config(
        tmp_path / "edge.toml",
        {
            "store_id": "s1",
            "state_dir": str(tmp_path / "state"),
            "broker": {"mode": "external", "port": broker.port},
            "http": {"port": http},
            "outbox": {"min_free_bytes": 0},
        },
    )
    hub = HubProcess(config)
    await hub.start()
    damage_page_holding(path, marker(200))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{http}/api/v1/outbox/items/k0200") as answer:
            assert answer.status == 503
            assert (await answer.json())["error"]["code"] == "UNAVAILABLE"
        assert hub.process is not None
        assert await asyncio.wait_for(hub.process.wait(), 20) == 4
        await hub.stop()
        said = "\n".join(hub.log)
        assert "edge: outbox: " in said
        assert "is damaged: database disk image is malformed; stopping: the next start" in said
        assert "Traceback" not in said
        await hub.start()
        try:
            async with session.get(f"http://127.0.0.1:{http}/readyz") as answer:
                ready = await answer.json()
        finally:
            await hub.stop()
    assert ready["ready"] is True
    assert "salvaged from a damaged file" in ready["checks"]["outbox"]["detail"]


async def test_a_salvage_without_room_stops_the_hub_with_one_reason_and_is_tried_again(
    tmp_path: Path,
) -> None:
    """The disk has no room for the new file (here: the store's page cap, which the copy keeps
    to too): opening fails with StoreDamaged naming both the damage and why the salvage
    failed (the hub prints it in one line and stops); the damaged file stays in place, and
    the next start, with room, drops the partial copy and salvages."""
    path = tmp_path / "outbox.db"
    await filled_store(path)
    damage_page_holding(path, marker(150))
    cramped = OutboxService(
        OutboxStore(path, max_page_count=20), None, DiskGuard(tmp_path, 0), Metrics()
    )
    failed = r"is damaged.*; the salvage failed: database or disk is full"
    with pytest.raises(StoreDamaged, match=failed):
        await cramped.open()
    assert path.exists()
    assert (tmp_path / "outbox.db.salvage").exists(), "the partial copy, until the next start"
    roomy = OutboxService(OutboxStore(path), None, DiskGuard(tmp_path, 0), Metrics())
    await roomy.open()
    try:
        report = roomy.store.salvage_report
        assert report is not None
        assert report.items_kept + report.items_lost == COUNT
        assert not (tmp_path / "outbox.db.salvage").exists()
    finally:
        await roomy.store.close()


async def test_a_key_damaged_on_disk_is_never_sent_under_another_id(tmp_path: Path) -> None:
    """A bit flipped in a row's key, not its payload: ``quick_check`` sees nothing, and the
    sale would go to the cloud under another id. While running, the sender's read finds the
    key no longer its payload's txn_id: damage, the hub stops. At the next open
    ``integrity_check`` sees the row missing from the key's index; the salvage restores the
    key from the payload (audited) and keeps every row as it was accepted, so nothing waits
    for a register's re-send, and a re-send is a duplicate."""
    path = tmp_path / "outbox.db"
    before = await filled_store(path)
    store = OutboxStore(path)
    await store.open()
    try:
        # seq 201, under the running store: in the table's record the key is followed by the
        # kind; in the key's index, by the rowid. k0200 -> j0200.
        flip_first_bit_of(path, b"k0200sale")
        with pytest.raises(StoreDamaged, match="key damaged"):
            await store.payloads([200, 201, 202], now=T0 + 450)
        remembered = store.damage
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        quick = db.execute("PRAGMA quick_check").fetchone()
    store, report = await salvaged(path, "missing from index")
    try:
        after = all_rows(path)
        audit = await store.audit_log("k0200")
        again = await store.append(entry(200), now=T0 + 600)
    finally:
        await store.close()
    assert quick == ("ok",), "the premise: quick_check sees nothing"
    assert remembered is not None, "the hub stops on it"
    assert (report.lost_seqs, report.items_refiled, report.needs_resend) == ([], 1, False)
    assert after == before, "every row as it was accepted"
    assert (audit[-1]["action"], audit[-1]["actor"]) == ("repair", "hub")
    assert (again.duplicate, again.seq) == (True, 201), "a re-send is the same sale"


async def test_an_item_whose_status_no_longer_reads_is_pending_again_after_the_salvage(
    tmp_path: Path,
) -> None:
    """A bit flipped in a status (``pending`` -> ``pendinf``) leaves the item in no queue and
    counted nowhere; ``quick_check`` sees nothing, ``integrity_check`` sees the partial
    indexes disagree. The salvage keeps the item and makes it pending again (audited):
    sending it once more is safe, the connectors post idempotently."""
    path = tmp_path / "outbox.db"
    before = await filled_store(path)
    flip_first_bit_of(path, b"pending", after=marker(120), skip=6)  # k0120, seq 121
    with sqlite3.connect(path) as db:
        quick = db.execute("PRAGMA quick_check").fetchone()
        (status,) = db.execute("SELECT status FROM items WHERE seq = 121").fetchone()
    store, report = await salvaged(path, "wrong # of entries")
    try:
        item = await store.get("k0120")
        audit = await store.audit_log("k0120")
    finally:
        await store.close()
    assert (quick, status) == (("ok",), "pendinf"), "the premise"
    assert report.lost_seqs == []
    assert report.items_kept == len(before)
    assert item is not None
    assert item.status == "pending"
    assert [(a["action"], a["actor"]) for a in audit] == [("retry", "hub")]
