"""The two simulators composed as the hub sees them: HQ behind the WAN proxy, over aiohttp.

The end-to-end outage scenarios are built from exactly this stack, so a client must see each WAN
mode as the aiohttp error a real outage gives, and HQ's one-record-per-event promise must survive
the worst case: a request frozen in a WAN cut and delivered late, after the client re-sent it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from edge.sim.hq_api import BATCH_CONTENT_TYPE, BATCH_PATH, HqApiSimulator, run_hq_api
from edge.sim.wan_proxy import WanProxy

TOKEN = "store-s1-token"


@dataclass
class Stack:
    sim: HqApiSimulator
    wan: WanProxy
    session: aiohttp.ClientSession

    async def post(self, event_id: str, key: str) -> dict[str, Any]:
        body = [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "/stores/s1/lanes/lane-1",
                "type": "com.example.pos.sale",
                "time": "2024-05-01T12:00:00Z",
                "datacontenttype": "application/json",
                "data": {"total": "1.00"},
            }
        ]
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "Idempotency-Key": key,
            "Content-Type": BATCH_CONTENT_TYPE,
        }
        url = f"http://127.0.0.1:{self.wan.port}{BATCH_PATH}"
        async with self.session.post(url, data=json.dumps(body), headers=headers) as response:
            assert response.status == 200
            result: dict[str, Any] = (await response.json())["results"][0]
            return result


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    sim = HqApiSimulator(token=TOKEN)
    async with (
        run_hq_api(sim=sim) as hq,
        WanProxy(hq.host, hq.port) as wan,
        # A new connection per request: what each test sees does not depend on pool timing.
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
    ):
        yield Stack(sim, wan, session)


async def test_each_wan_mode_gives_the_client_the_error_of_a_real_outage(stack: Stack) -> None:
    assert (await stack.post("txn-1", "k1"))["status"] == "accepted"

    stack.wan.mode = "refuse"
    with pytest.raises(aiohttp.ClientConnectorError):
        await stack.post("txn-2", "k2")

    stack.wan.mode = "reset"
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await stack.post("txn-2", "k2")

    stack.wan.mode = "blackhole"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await stack.post("txn-2", "k2")

    stack.wan.mode = "pass"
    assert (await stack.post("txn-2", "k2"))["status"] == "accepted"
    assert stack.sim.commit_count("txn-1") == stack.sim.commit_count("txn-2") == 1


async def test_a_request_frozen_in_a_wan_cut_and_resent_is_recorded_once(stack: Stack) -> None:
    """The request given up on during the cut may still reach HQ when the WAN returns; with the
    re-send that makes two deliveries of one sale, and HQ must keep one record."""
    stack.wan.mode = "blackhole"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await stack.post("txn-1", "k1")
    stack.wan.mode = "pass"
    result = await stack.post("txn-1", "k1")
    assert result["status"] == "accepted"
    assert result["record_id"] == stack.sim.record_id("txn-1")
    assert stack.sim.commit_count("txn-1") == 1
