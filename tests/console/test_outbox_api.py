"""The outbox's operator API while the hub starts or stops: the store refuses work, and the API
says so with a 503 a technician's tool can retry, not a 500. Real store, real HTTP
(aiohttp's TestServer on 127.0.0.1, a real ClientSession)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.console import outbox_api
from edge.metrics import Metrics
from edge.outbox.intake import DiskGuard
from edge.outbox.service import OutboxService
from edge.outbox.store import Entry, OutboxStore

NOW = 1_800_000_000.0
ACTION = {"actor": "tech-7", "reason": "price fixed upstream"}


async def test_a_closed_outbox_answers_503_with_retry_after_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store = OutboxStore(tmp_path / "outbox.db")
    await store.open()
    payload = json.dumps({"txn_id": "t-1"}).encode()
    appended = await store.append(
        Entry(key="t-1", kind="sale", event_type="sale.v1", lane="lane-1", payload=payload),
        now=NOW,
    )
    await store.mark_parked([(appended.seq, "REJECTED: price", None)], now=NOW)
    app = web.Application()
    outbox_api.add_routes(app, OutboxService(store, None, DiskGuard(tmp_path, 0), Metrics()))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/api/v1/outbox/items?status=parked")) as answer:
            assert answer.status == 200
            assert [i["key"] for i in (await answer.json())["items"]] == ["t-1"]

        await store.close()  # the hub stopping: its HTTP server closes after the stores

        for method, path, body in (
            ("GET", "/api/v1/outbox", None),
            ("GET", "/api/v1/outbox/items?status=parked", None),
            ("POST", "/api/v1/outbox/items/t-1/retry", ACTION),
            ("POST", "/api/v1/outbox/retry-parked", ACTION),
        ):
            async with http.request(method, server.make_url(path), json=body) as answer:
                assert answer.status == 503, (method, path)
                assert answer.headers["Retry-After"] == "5"
                assert (await answer.json())["error"]["code"] == "UNAVAILABLE"
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT status FROM items WHERE key = 't-1'").fetchall() == [("parked",)]
        assert db.execute("SELECT COUNT(*) FROM audit WHERE action = 'retry'").fetchone() == (0,)
