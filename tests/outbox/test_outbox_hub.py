"""The outbox inside a running hub: durable acks over MQTT, refusals that write nothing, the
disk floor, parked items, dependencies, WAN outages, and the operator surface."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import os
import random
import re
import shutil
import sqlite3
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.api_client import when
from edge.app import Hub
from edge.bus import Topics
from edge.bus.client import Message
from edge.schemas import all_error_codes
from edge.sim import HqApiSimulator, WanProxy, run_hq_api
from edge.sim.damage import damage_page_holding, flip_a_bit_in
from edge.sim.process import write_config
from edge.sim.registers import SimLane, make_sale
from tests.conftest import (
    MosquittoProcess,
    fill_to_the_last_byte,
    hub_settings,
    lane_client,
    run_hub,
    small_disk,
)
from tests.schemas import validate_reply

TOPICS = Topics("s1")
SUBMIT = TOPICS.lane_rpc("lane-1", "txn.submit")
EDGE = str(Path(sys.executable).parent / "edge")


def sale(n: int, lane: str = "lane-1", **changes: Any) -> dict[str, Any]:
    txn = make_sale(store_id="s1", lane_id=lane, number=n, rng=random.Random(n))
    txn.update(changes)
    return txn


def rows(hub: Hub) -> list[tuple[str, str]]:
    assert hub.outbox is not None
    with sqlite3.connect(hub.outbox.store.path) as db:
        return list(db.execute("SELECT key, status FROM items ORDER BY seq"))


def outbox_settings(tmp_path: Path, broker: MosquittoProcess, url: str = "", **extra: Any) -> Any:
    overrides: dict[str, Any] = {
        "outbox__min_free_bytes": 0,
        "outbox__retry_base_s": 0.05,
        "outbox__retry_cap_s": 0.3,
        "outbox__breaker_cooldown_s": 0.1,
        "outbox__breaker_cooldown_cap_s": 0.3,
        "outbox__idle_poll_s": 0.1,
    }
    if url:
        overrides["outbox__connector"] = "hq_http"
        overrides["uplink__hq_http"] = {"url": url, "token": "sim-token", "timeout_s": 1.0}
    overrides.update(extra)
    return hub_settings(tmp_path, broker_port=broker.port, **overrides)


@contextlib.asynccontextmanager
async def hub_with_cloud(
    tmp_path: Path, broker: MosquittoProcess, sim: HqApiSimulator | None = None, **extra: Any
) -> AsyncIterator[tuple[Hub, Any, WanProxy]]:
    async with run_hq_api(sim=sim or HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        url = f"http://127.0.0.1:{wan.port}"
        async with run_hub(outbox_settings(tmp_path, broker, url, **extra)) as hub:
            yield hub, hq, wan


async def test_ack_means_on_disk_and_a_resend_gets_the_same_seq(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        txn = sale(1)
        first = await lane.request(SUBMIT, txn)
        assert first.ok, first.error
        assert rows(hub) == [(txn["txn_id"], "pending")], "acked => already on disk"
        again = await lane.request(SUBMIT, txn)
    assert again.data["seq"] == first.data["seq"]
    assert (first.data["duplicate"], again.data["duplicate"]) == (False, True)
    assert first.data["txn_id"] == txn["txn_id"]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: t["lines"][0].update(description="card 4111 1111 1111 1111"),
         "CARD_NUMBER_REFUSED"),
        (lambda t: t["totals"].update(total="9999.99"), "TOTALS_MISMATCH"),
        (lambda t: t.update(lane_id="lane-9"), "LANE_MISMATCH"),
        (lambda t: t.update(store_id="other"), "STORE_MISMATCH"),
        (lambda t: t.update(kind="layaway"), "UNSUPPORTED_KIND"),
        (lambda t: t["lines"][0].update(quantity=2), "SCHEMA_INVALID"),
    ],
)  # fmt: skip
async def test_refused_transactions_write_nothing(
    tmp_path: Path, broker: MosquittoProcess, mutate: Any, code: str
) -> None:
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        txn = sale(2)
        mutate(txn)
        raw = json.loads(
            await lane.request_raw(SUBMIT, json.dumps({"v": 1, "id": "x", "data": txn}).encode())
        )
        assert rows(hub) == []
    validate_reply(raw)
    assert raw["error"]["code"] == code
    assert raw["error"]["retryable"] is False
    assert "4111" not in json.dumps(raw), "a refused card number is never echoed"


async def test_same_id_other_content_is_a_conflict(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        txn = sale(3)
        assert (await lane.request(SUBMIT, txn)).ok
        other = sale(4, txn_id=txn["txn_id"])
        reply = await lane.request(SUBMIT, other)
        assert reply.error is not None
        assert reply.error.code == "TXN_ID_CONFLICT"
        assert len(rows(hub)) == 1


async def test_fuzzed_transactions_get_structured_errors_and_write_nothing_unacked(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Mutated sales (hypothesis) through a real hub: every reply is schema-valid with a known
    code, and the outbox holds exactly the transactions that got an ok."""
    acked: set[str] = set()
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        loop = asyncio.get_running_loop()
        base = sale(5)
        paths = [
            ("totals", "total"),
            ("lines", 0, "amount"),
            ("tenders", 0, "amount"),
            ("lines", 0, "sku"),
            ("currency",),
            ("kind",),
            ("txn_id",),
            ("lines", 0, "tax"),
        ]
        values = st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=30),
            st.booleans(),
            st.sampled_from(["1.00", "-1", "4111111111111111", "", "EUR"]),
        )

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(paths), value=values, n=st.integers(0, 10**6))
        def check(path: tuple[Any, ...], value: Any, n: int) -> None:
            txn = copy.deepcopy(base)
            txn["txn_id"] = f"fz-{n}"
            target = txn
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
            payload = json.dumps({"v": 1, "id": "f", "data": txn}).encode()
            raw = asyncio.run_coroutine_threadsafe(lane.request_raw(SUBMIT, payload), loop)
            reply = json.loads(raw.result(10))
            validate_reply(reply)
            if reply["ok"]:
                acked.add(reply["data"]["txn_id"])
            else:
                assert reply["error"]["code"] in all_error_codes()
                assert reply["error"]["code"] != "INTERNAL"

        await asyncio.to_thread(check)
        stored = {key for key, _ in rows(hub)}
    assert stored == acked


async def test_disk_floor_refuses_then_recovers_by_itself(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A really full filesystem (a small tmpfs filled with ballast): the hub refuses new sales
    with the retryable STORAGE_FULL, /readyz says why, and once space returns it takes them
    again without anyone touching it."""
    with small_disk(tmp_path, 48) as mount:
        settings = hub_settings(
            mount, broker_port=broker.port, outbox__min_free_bytes=16 * 1024 * 1024
        )
        async with run_hub(settings) as hub, lane_client(broker.port) as lane:
            assert (await lane.request(SUBMIT, sale(10))).ok
            ballast = mount / "ballast"
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            ballast.write_bytes(b"\0" * (free - 8 * 1024 * 1024))
            hub.disk.interval_s = 0  # re-read free space at every request
            refused = await lane.request(SUBMIT, sale(11))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{hub.http.url}/readyz") as response:
                    ready = await response.json()
            ballast.unlink()
            accepted = await lane.request(SUBMIT, sale(11))
            keys = [k for k, _ in rows(hub)]
    assert refused.error is not None
    assert (refused.error.code, refused.error.retryable) == ("STORAGE_FULL", True)
    assert ready["checks"]["disk"]["ok"] is False
    assert accepted.ok
    assert keys == [sale(10)["txn_id"], sale(11)["txn_id"]]


async def test_a_hub_started_on_a_full_disk_runs_and_takes_sales_once_space_returns(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The hub stopped, and the disk filled up to the last byte before it started again (a
    power cut, a runaway log). Its SQLite files need room to open (a WAL's shared memory, the
    first commit): it gives back its space reserve, starts, refuses sales with the retryable
    STORAGE_FULL, takes them once space returns, and holds its reserve again."""
    with small_disk(tmp_path, 64) as mount:
        reserve = mount / "state" / "space-reserve"
        settings = hub_settings(mount, broker_port=broker.port,
                                outbox__min_free_bytes=16 * 1024 * 1024,
                                outbox__reserve_bytes=8 * 1024 * 1024)  # fmt: skip
        async with run_hub(settings) as hub, lane_client(broker.port) as lane:
            assert hub.outbox is not None
            await asyncio.wait_for(hub.outbox.reserve_held.wait(), 10)
            assert (await lane.request(SUBMIT, sale(10))).ok
        # A clean stop removed the outbox's -wal and -shm: the next open must make them.
        leftovers = sorted(p.name for p in (mount / "state").glob("outbox.db-*"))
        ballast = fill_to_the_last_byte(mount)
        full = os.statvfs(mount).f_bavail
        async with run_hub(settings) as hub, lane_client(broker.port) as lane:
            assert hub.outbox is not None
            hub.disk.interval_s = 0  # re-read free space at every request
            given_back = not reserve.exists()
            refused = await lane.request(SUBMIT, sale(11))
            ballast.unlink()
            accepted = await lane.request(SUBMIT, sale(11))
            await asyncio.wait_for(hub.outbox.reserve_held.wait(), 10)
            keys = [k for k, _ in rows(hub)]
            held = reserve.stat().st_size
    assert (leftovers, full) == ([], 0), "the premise: a clean stop, then not a byte free"
    assert given_back
    assert refused.error is not None
    assert (refused.error.code, refused.error.retryable) == ("STORAGE_FULL", True)
    assert accepted.ok
    assert keys == [sale(10)["txn_id"], sale(11)["txn_id"]]
    assert held == 8 * 1024 * 1024


async def test_delivery_parked_item_blocks_only_its_dependents_and_retry_delivers(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The cloud rejects one sale: it is parked with the cloud's error, its return waits (and
    says why), unrelated sales flow; after the fix a technician's retry delivers both, sale
    first."""
    bad = sale(20)
    sim = HqApiSimulator(reject_ids={bad["txn_id"]})
    async with (
        hub_with_cloud(tmp_path, broker, sim) as (hub, hq, _),
        lane_client(broker.port) as lane,
    ):
        ret = {
            "kind": "return", "txn_id": "ret-20", "store_id": "s1", "lane_id": "lane-1",
            "operator_id": "op-1", "register_time": bad["register_time"], "currency": "EUR",
            "original": {"txn_id": bad["txn_id"], "store_id": "s1", "lane_id": "lane-1"},
            "reason": "changed mind", "lines": [bad["lines"][0]],
            "tenders": [{"type": "cash", "amount": None}], "totals": None,
        }  # fmt: skip
        line = bad["lines"][0]
        total = f"{float(line['amount']) + float(line['tax']['amount']):.2f}"
        ret["tenders"][0]["amount"] = total
        ret["totals"] = {"subtotal": line["amount"], "discount_total": "0.00",
                         "tax_total": line["tax"]["amount"], "total": total, "tendered": total,
                         "change": "0.00"}  # fmt: skip
        for txn in (bad, ret, sale(21), sale(22)):
            reply = await lane.request(SUBMIT, txn)
            assert reply.ok, reply.error
        await hq.wait_until(
            lambda s: {sale(21)["txn_id"], sale(22)["txn_id"]} <= s.committed.keys()
        )
        assert hub.outbox is not None
        assert hub.outbox.sender is not None
        outbox = hub.outbox

        async def one_parked() -> bool:
            return (await outbox.status())["parked"] == 1

        await asyncio.wait_for(hub.outbox.sender.wait_until(one_parked), 10)
        status = await hub.outbox.status()
        assert status["waiting"] == {"ret-20": f"blocked by parked {bad['txn_id']}"}
        parked = await hub.outbox.store.get(bad["txn_id"])
        assert parked is not None
        assert parked.status == "parked"
        assert parked.error_detail["code"] == "BUSINESS_RULE_VIOLATION", "the cloud's whole error"
        sim.reject_ids.clear()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{hub.http.url}/api/v1/outbox/items/{bad['txn_id']}/retry",
                json={"actor": "tech:ana", "reason": "price fixed at HQ"},
            ) as response:
                assert response.status == 200
        await hq.wait_until(lambda s: "ret-20" in s.committed)
        order = list(hq.sim.received_ids)
    assert order.index(bad["txn_id"]) < order.index("ret-20")
    assert hq.sim.commit_count(bad["txn_id"]) == 1


async def test_wan_outage_sales_still_acked_and_backlog_drains_after(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """WAN cut (blackhole, then refused): the breaker opens, registers keep getting acks, and
    when the WAN is back the whole backlog reaches the cloud once."""
    async with hub_with_cloud(tmp_path, broker) as (hub, hq, wan), lane_client(broker.port) as lane:
        assert hub.outbox is not None
        assert hub.outbox.sender is not None
        wan.mode = "refuse"
        acked = []
        for n in range(30, 90):
            reply = await lane.request(SUBMIT, sale(n), timeout=2)
            assert reply.ok, reply.error
            acked.append(reply.data["txn_id"])
        sender = hub.outbox.sender
        await asyncio.wait_for(sender.wait_until(lambda: sender.breaker.state != "closed"), 10)
        assert (await hub.outbox.status())["pending"] == 60
        wan.mode = "pass"
        await asyncio.wait_for(hq.wait_until(lambda s: set(acked) <= s.committed.keys()), 20)
    assert all(hq.sim.commit_count(k) == 1 for k in acked)


async def test_a_damaged_outbox_is_salvaged_at_start_and_a_journal_resend_restores_the_rest(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A bad sector under the outbox while the WAN was down: the hub still starts (no crash
    loop), keeps every item it can read, says what it lost on /readyz and in `edge outbox
    status`; the register re-sends its journal (same txn ids): what was kept answers
    duplicate with its seq, what was lost is accepted anew. HQ ends with every sale once."""
    journal = [sale(n) for n in range(200, 260)]
    async with run_hq_api(sim=HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        settings = outbox_settings(tmp_path, broker, f"http://127.0.0.1:{wan.port}")
        wan.mode = "refuse"
        async with run_hub(settings) as hub, lane_client(broker.port) as lane:
            acked = {t["txn_id"]: (await lane.request(SUBMIT, t)).data["seq"] for t in journal}
        victim = journal[30]["txn_id"]
        damage_page_holding(settings.outbox_path, f'"txn_id":"{victim}"'.encode())
        wan.mode = "pass"
        async with run_hub(settings) as hub, lane_client(broker.port) as lane:
            assert hub.outbox is not None
            status = await hub.outbox.status()
            async with aiohttp.ClientSession() as http, http.get(f"{hub.http.url}/readyz") as r:
                ready = await r.json()
            replies = [await lane.request(SUBMIT, t) for t in journal]
            await asyncio.wait_for(hq.wait_until(lambda s: set(acked) <= s.committed.keys()), 20)
    assert ready["ready"] is True
    assert status["salvage"] is not None
    assert "the registers are asked to re-send their journals from" in status["salvage"]
    assert status["salvage"] in ready["checks"]["outbox"]["detail"]
    assert all(reply.ok for reply in replies)
    resent = {t["txn_id"]: r.data for t, r in zip(journal, replies, strict=True)}
    lost = {txn for txn, data in resent.items() if not data["duplicate"]}
    assert victim in lost
    assert 0 < len(lost) <= 5, "one page of ~1.2 kB sales"
    assert all(resent[txn]["seq"] == acked[txn] for txn in set(acked) - lost), "kept: same seq"
    assert all(resent[txn]["seq"] > max(acked.values()) for txn in lost), "lost: a new seq"
    assert all(hq.sim.commit_count(txn) == 1 for txn in acked), "every sale once at HQ"


def two_lanes(broker: MosquittoProcess) -> list[SimLane]:
    """Simulated registers that keep their journals and answer the hub's re-send request."""
    return [SimLane(host="127.0.0.1", port=broker.port, store_id="s1", lane_id=f"lane-{n}",
                    seed=n, timeout_s=2.0) for n in (1, 2)]  # fmt: skip


async def one_more_sale_each(lanes: list[SimLane], hq: Any, acked: set[str]) -> None:
    """Each lane rings up one more sale (answering a re-send request first, as a register
    does between sales: wait until the hub has published it, or a lane may ring up its sale
    and stop before it comes); then HQ must hold every sale acknowledged before."""
    await asyncio.gather(*(lane.run(count=len(lane.stats.acked) + 1) for lane in lanes))
    await asyncio.wait_for(hq.wait_until(lambda s: acked <= s.committed.keys()), 20)


@contextlib.asynccontextmanager
async def journal_requests(broker: MosquittoProcess) -> AsyncIterator[asyncio.Queue[Message]]:
    """What a register sees on the re-send topic (the retained request first)."""
    async with (
        lane_client(broker.port) as probe,
        probe.subscription(TOPICS.journal_resend) as retained,
    ):
        yield retained


async def next_with(queue: asyncio.Queue[Message], wanted: Callable[[bytes], bool]) -> Message:
    """The next message on ``queue`` whose payload is ``wanted``."""
    while not wanted((message := await queue.get()).payload):
        pass
    return message


async def test_after_a_salvage_the_hub_asks_the_registers_for_their_journals(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """No technician: the salvaged hub publishes a retained re-send request from just before
    the first loss; a register (the simulator, as docs/protocol.md asks) re-sends its journal
    from then, and HQ ends with every acknowledged sale once. Once the damaged file is removed
    the request is cleared."""
    lanes = two_lanes(broker)
    async with run_hq_api(sim=HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        settings = outbox_settings(tmp_path, broker, f"http://127.0.0.1:{wan.port}")
        wan.mode = "refuse"
        async with run_hub(settings):
            await asyncio.gather(*(lane.run(count=40) for lane in lanes))
        acked = set().union(*(lane.stats.acked for lane in lanes))
        victim = sorted(lanes[0].stats.acked)[20]
        damage_page_holding(settings.outbox_path, f'"txn_id":"{victim}"'.encode())
        wan.mode = "pass"
        async with run_hub(settings) as hub:
            assert hub.outbox is not None
            report = hub.outbox.store.salvage_report
            async with journal_requests(broker) as retained:
                asked = await asyncio.wait_for(next_with(retained, bool), 5)
            request = json.loads(asked.payload)
            await one_more_sale_each(lanes, hq, acked)
        assert report is not None
        Path(report.damaged_file).unlink()  # the technician, done with it
        async with journal_requests(broker) as retained:
            still = await asyncio.wait_for(retained.get(), 5)  # retained from the last start
            async with run_hub(settings):
                cleared = await asyncio.wait_for(retained.get(), 5)
    assert report.needs_resend
    assert request == {"v": 1, "id": f"salvage-{report.at:.0f}", "reason": "outbox salvaged",
                       "since": request["since"]}  # fmt: skip
    assert all(hq.sim.commit_count(txn) == 1 for txn in acked), "every acked sale once"
    assert lanes[0].stats.journal_resent > 0
    assert request["since"] is not None, "from just before the loss (salvage tests: when)"
    assert json.loads(still.payload) == request
    assert (cleared.payload, cleared.retain) == (b"", False), "cleared, live to a subscriber"


async def test_commits_a_lying_disk_dropped_come_back_from_the_registers_journals(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A power cut on a disk that lies about fsync: the WAL's last commits never reached the
    platter, and SQLite opens the file at an earlier commit with no error to see. The hub
    knows only that its last run ended without closing the store; it asks the registers for
    their journals from the last sale it holds, and the sales it lost come back. HQ ends with
    every acknowledged sale once."""
    lanes = two_lanes(broker)
    async with run_hq_api(sim=HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        settings = outbox_settings(tmp_path, broker, f"http://127.0.0.1:{wan.port}")
        path, image = settings.outbox_path, tmp_path / "at-the-power-cut"
        image.mkdir()
        wan.mode = "refuse"
        async with run_hub(settings):
            await asyncio.gather(*(lane.run(count=30) for lane in lanes))
            for suffix in ("", "-wal"):  # the disk as the power cut leaves it
                shutil.copy(f"{path}{suffix}", image / f"outbox.db{suffix}")
        acked = set().union(*(lane.stats.acked for lane in lanes))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copy(image / "outbox.db", path)
        wal = (image / "outbox.db-wal").read_bytes()
        frame = 24 + int.from_bytes(wal[8:12], "big")  # frame header + page (WAL header: 32)
        frames = (len(wal) - 32) // frame
        Path(f"{path}-wal").write_bytes(wal[: 32 + (frames - 12) * frame])  # never written
        with contextlib.closing(sqlite3.connect(path)) as db:
            held = {key for (key,) in db.execute("SELECT key FROM items")}
        assert acked - held, "the disk lost acknowledged sales (the test's premise)"
        wan.mode = "pass"
        async with run_hub(settings) as hub:
            assert hub.outbox is not None
            assert hub.outbox.store.unclean_stop is not None
            shown = (await hub.outbox.status())["journal_request"]
            async with journal_requests(broker) as retained:
                await asyncio.wait_for(next_with(retained, bool), 5)  # published
            await one_more_sale_each(lanes, hq, acked)
        async with journal_requests(broker) as retained:
            asked = json.loads((await asyncio.wait_for(retained.get(), 5)).payload)
            async with run_hub(settings) as hub:  # a clean stop before: nothing asked
                cleared = await asyncio.wait_for(retained.get(), 5)
                assert hub.outbox is not None
                not_shown = (await hub.outbox.status())["journal_request"]
    assert all(hq.sim.commit_count(txn) == 1 for txn in acked), "every acked sale once"
    assert asked["reason"] == "unclean stop"
    assert shown == asked, "`edge outbox status` shows what the registers are asked"
    assert cleared.payload == b""
    assert not_shown is None


async def test_a_payload_damaged_on_disk_is_never_posted_and_its_register_s_resend_repairs_it(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A worn disk flips a bit inside a stored sale: every page stays valid, and the sale's
    total changes. The sender checks each payload against the digest taken when the sale was
    accepted: the damaged sale is parked by the hub and never posted, the others go; the
    registers are asked for their journals; the register's re-send repairs the sale, and HQ
    gets it as it was rung up, once, at once (not at the sender's next idle poll)."""
    lanes = two_lanes(broker)
    async with run_hq_api(sim=HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        settings = outbox_settings(
            tmp_path, broker, f"http://127.0.0.1:{wan.port}", outbox__idle_poll_s=60
        )
        path = settings.outbox_path
        wan.mode = "refuse"
        async with run_hub(settings):
            await asyncio.gather(*(lane.run(count=20) for lane in lanes))
        acked = set().union(*(lane.stats.acked for lane in lanes))
        victim = sorted(lanes[0].stats.acked)[10]
        rung_up = lanes[0].journal.sales[victim][1]["totals"]["total"]
        flip_a_bit_in(path, f'"txn_id":"{victim}"'.encode(), b'"total":"')
        with contextlib.closing(sqlite3.connect(path)) as db:
            (stored,) = db.execute("SELECT payload FROM items WHERE key = ?", (victim,)).fetchone()
            (check,) = db.execute("PRAGMA quick_check").fetchone()
        assert json.loads(stored)["totals"]["total"] != rung_up, "the premise: a total changed"
        assert check == "ok", "the premise: SQLite sees nothing wrong"
        wan.mode = "pass"
        async with journal_requests(broker) as retained, run_hub(settings) as hub:
            assert hub.outbox is not None
            await asyncio.wait_for(
                hq.wait_until(lambda s: acked - {victim} <= s.committed.keys()), 20
            )
            # The hub clears the topic as it connects; it asks once the sender found the damage.
            message = await asyncio.wait_for(next_with(retained, bool), 10)
            parked = await hub.outbox.store.find(victim)
            shown = (await hub.outbox.status())["journal_request"]
            posted_before = hq.sim.commit_count(victim)
            # Lane 1 re-sends the sale from its journal, and no new sale follows to wake the
            # sender: the repair must (its idle poll is a minute here).
            async with lane_client(broker.port, "lane-1") as register:
                resent = await register.request(SUBMIT, lanes[0].journal.sales[victim][1])
            await asyncio.wait_for(hq.wait_until(lambda s: victim in s.committed), 10)
            await one_more_sale_each(lanes, hq, acked)
            repaired = await hub.outbox.store.find(victim)
            audit = await hub.outbox.store.audit_log(victim)
            # Repaired: the request goes (an empty retained message, live to a subscriber).
            cleared = await asyncio.wait_for(next_with(retained, lambda p: not p), 10)
    request = json.loads(message.payload)
    assert posted_before == 0, "a damaged payload is never posted"
    assert resent.data is not None
    assert resent.data["duplicate"], "the re-send is answered as the sale it already holds"
    assert parked is not None
    assert (parked.status, (parked.last_error or "")[:16]) == ("parked", "PAYLOAD_DAMAGED:")
    assert request["reason"] == "1 damaged payload"
    assert request["since"] is not None, "from ten minutes before the damaged sale"
    assert shown == request, "`edge outbox status` shows what the registers are asked"
    assert all(hq.sim.commit_count(txn) == 1 for txn in acked), "every acked sale once"
    assert hq.sim.committed[victim]["data"]["totals"]["total"] == rung_up, "as rung up"
    assert repaired is not None
    assert json.loads(repaired.payload)["totals"]["total"] == rung_up, "repaired on disk too"
    assert [(a["action"], a["actor"]) for a in audit] == [
        ("parked", "hub"), ("repair", "lane lane-1")
    ]  # fmt: skip
    assert cleared.payload == b""


async def test_a_replaced_hub_s_backlog_reaches_hq_once_through_the_new_hub(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The hub died with the WAN down and a backlog on its disk. `edge outbox backup` copies its
    outbox (here while it still runs); on the new hub, already trading, `edge outbox import`
    adds what is not there yet; the new hub delivers it. HQ gets every sale once."""
    old_sales = [sale(n) for n in range(300, 320)]
    new_sales = [sale(n) for n in range(320, 323)] + [old_sales[0]]  # re-sent to the new hub
    async with run_hq_api(sim=HqApiSimulator()) as hq, WanProxy(hq.host, hq.port) as wan:
        url = f"http://127.0.0.1:{wan.port}"
        old = outbox_settings(tmp_path / "old", broker, url)
        wan.mode = "refuse"
        async with run_hub(old) as hub, lane_client(broker.port) as lane:
            for txn in old_sales:
                assert (await lane.request(SUBMIT, txn)).ok
            await hub.outbox.park(old_sales[1]["txn_id"], "ana", "price check")  # type: ignore[union-attr]
            copy = tmp_path / "usb" / "outbox-old-hub.db"
            copy.parent.mkdir()
            code, out = await edge_cli(old, "outbox", "backup", str(copy))
        assert (code, out.strip()) == (0, f"{copy}: 19 pending, 1 parked, 0 delivered")
        wan.mode = "pass"
        new = outbox_settings(tmp_path / "new", broker, url)
        async with run_hub(new) as hub, lane_client(broker.port) as lane:
            for txn in new_sales:
                assert (await lane.request(SUBMIT, txn)).ok
            code, out = await edge_cli(new, "outbox", "import", str(copy), "--json")
            sent = {t["txn_id"] for t in old_sales[:1] + old_sales[2:]}
            await asyncio.wait_for(hq.wait_until(lambda s: sent <= s.committed.keys()), 20)
            parked_keys = [i.key for i in await hub.outbox.store.list_items("parked")]  # type: ignore[union-attr]
    assert code == 0
    assert json.loads(out) == {"added": 19, "already_here": 1, "conflicts": [], "damaged": []}
    held = old_sales[1]["txn_id"]  # parked on the old hub: parked on the new one, not sent
    sent_once = [t["txn_id"] for t in old_sales + new_sales if t["txn_id"] != held]
    assert all(hq.sim.commit_count(txn) == 1 for txn in sent_once)
    assert hq.sim.commit_count(held) == 0
    assert parked_keys == [held]


async def edge_cli(settings: Any, *args: str) -> tuple[int, str]:
    """`edge --config FILE ...` with a config naming the hub's state directory."""
    config = settings.state_dir.parent / "edge-cli.toml"
    write_config(config, {"store_id": "s1", "state_dir": str(settings.state_dir)})
    process = await asyncio.create_subprocess_exec(
        EDGE, "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await process.communicate())[0].decode()
    assert process.returncode is not None
    return process.returncode, out


async def test_outbox_cli_human_and_json(tmp_path: Path, broker: MosquittoProcess) -> None:
    """`edge outbox status|list|park|retry` against a running hub, in both forms."""
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        for n in (40, 41):
            assert (await lane.request(SUBMIT, sale(n))).ok
        key = sale(40)["txn_id"]

        async def edge(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                EDGE, "outbox", "--url", hub.http.url, *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode()

        code, out = await edge("status")
        assert code == 0
        assert "pending" in out
        assert "2" in out
        code, out = await edge("status", "--json")
        assert json.loads(out)["pending"] == 2
        code, out = await edge("park", key, "--reason", "training till", "--actor", "ana")
        assert (code, "now parked" in out) == (0, True)
        code, out = await edge("list", "--parked", "--json")
        assert [i["key"] for i in json.loads(out)["items"]] == [key]
        code, out = await edge("list", "--parked")
        assert key in out
        code, out = await edge("retry", key, "--reason", "wrong till", "--actor", "ana")
        assert (code, "now pending" in out) == (0, True)
        code, out = await edge("retry", key, "--json")
        assert code == 1
        assert json.loads(out)["error"]["code"] == "WRONG_STATE"
        code, out = await edge("retry", "no-such-txn")
        assert code == 1
        assert "no outbox item" in out
        code, out = await edge("retry", "--all-parked", "--json")
        assert json.loads(out) == {"retried": 0}
        code, out = await edge("list", "--limit", "1")
        seq = json.loads((await edge("list", "--json"))[1])["items"][0]["seq"]
        assert (code, f"pending items: 1 of 2 (next: --after {seq})" in out) == (0, True)
        code, out = await edge("list", "--limit", "1", "--after", str(seq), "--json")
        assert [i["seq"] for i in json.loads(out)["items"]] == [seq + 1]
        code, out = await edge("show", key)
        assert code == 0
        assert f"{key} (seq {seq}): sale from lane-1, pending" in out
        trail = [[c.strip() for c in line.split("│")[2:-1]] for line in out.splitlines()
                 if line.startswith("│")]  # fmt: skip
        assert trail == [["park", "ana", "training till"], ["retry", "ana", "wrong till"]]
        code, out = await edge("show", key, "--json")
        assert [a["action"] for a in json.loads(out)["audit"]] == ["park", "retry"]
        audit = await hub.outbox.store.audit_log(key)  # type: ignore[union-attr]
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("park", "ana", "training till"),
        ("retry", "ana", "wrong till"),
    ]


async def in_terminal(columns: int, *argv: str) -> str:
    """Run a command on a pseudo-terminal ``columns`` wide, as a technician's SSH session is;
    what it wrote, with the terminal's CRLF and the ANSI styles taken out."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=slave, stdout=slave, stderr=slave, env=env | {"TERM": "xterm-256color"}
    )
    os.close(slave)

    def read_until_closed() -> bytes:
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the command has closed the terminal
            while chunk := os.read(master, 65536):
                chunks.append(chunk)
        return b"".join(chunks)

    try:
        out = await asyncio.get_running_loop().run_in_executor(None, read_until_closed)
        assert await process.wait() == 0, out
    finally:
        os.close(master)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.decode()).replace("\r\n", "\n")


async def test_outbox_list_shows_whole_txn_ids_in_a_narrow_terminal_and_in_a_pipe(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Ids are copied into commands: `edge outbox list` never cuts one. A terminal too narrow
    for the table gets one block per item; a wide one the table; a pipe the table too."""
    long_id = "s1-lane-1-20261124T070000-" + "0123456789" * 3  # 56 characters
    async with run_hub(outbox_settings(tmp_path, broker)) as hub, lane_client(broker.port) as lane:
        assert (await lane.request(SUBMIT, sale(60, txn_id=long_id))).ok
        command = (EDGE, "outbox", "--url", hub.http.url, "list")
        narrow = await in_terminal(80, *command)
        wide = await in_terminal(160, *command)
        piped = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        pipe_out = (await piped.communicate())[0].decode()
    assert f"txn id: {long_id}\n" in narrow
    assert "seq: 1\n" in narrow
    for table in (wide, pipe_out):
        assert "┃ seq ┃ txn id" in table
        assert f" {long_id} " in table
    assert "…" not in narrow + wide + pipe_out


async def test_outbox_drain_shows_the_backlog_going_out(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """`edge outbox drain`: still pending while the WAN is down (exit 1 at --wait), done once
    the cloud takes the backlog (exit 0), in both forms."""
    async with hub_with_cloud(tmp_path, broker) as (hub, hq, wan), lane_client(broker.port) as lane:

        async def edge(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                EDGE, "outbox", "--url", hub.http.url, "drain", "--every", "0.1", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode()

        wan.mode = "refuse"
        for n in range(60, 65):
            assert (await lane.request(SUBMIT, sale(n))).ok
        sender = hub.outbox.sender  # type: ignore[union-attr]
        await asyncio.wait_for(sender.wait_until(lambda: sender.breaker.down_since), 10)
        down_since = sender.breaker.down_since
        status = await asyncio.create_subprocess_exec(
            EDGE, "outbox", "--url", hub.http.url, "status", stdout=asyncio.subprocess.PIPE
        )  # fmt: skip
        shown = (await status.communicate())[0].decode()
        code, out = await edge("--wait", "0.3", "--json")
        assert code == 1
        waiting = json.loads(out)
        assert (waiting["drained"], waiting["pending"]) == (False, 5)
        code, out = await edge("--wait", "0.3")
        assert code == 1
        assert "still 5 pending" in out
        wan.mode = "pass"
        code, out = await edge("--wait", "30", "--json")
        assert code == 0, out
        done = json.loads(out)
        assert done["drained"] is True
        assert done["pending"] == 0
        code, out = await edge("--wait", "5")
        assert code == 0
        assert "nothing pending" in out
    assert {sale(n)["txn_id"] for n in range(60, 65)} <= hq.sim.committed.keys()
    assert f"the cloud unreachable since {when(down_since)}" in shown, shown
