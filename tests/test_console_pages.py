"""The web console's pages and live figures, over real HTTP from a real hub (the browser test,
tests/test_console_browser.py, drives the same pages in Chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from edge.api_client import when
from edge.app import Hub
from edge.console.alerts import store_alerts
from edge.console.auth import Accounts
from edge.sim import HqApiSimulator
from tests.conftest import MosquittoProcess, lane_client
from tests.outbox.test_outbox_hub import SUBMIT, hub_with_cloud, sale

TECHNICIAN, PASSWORD = "ana", "correct horse battery"
EDGE = str(Path(sys.executable).parent / "edge")


def add_technician(hub: Hub) -> None:
    """An account, as `edge console user add` makes it (the hub reads the file at login)."""
    accounts = Accounts.load(hub.settings.console_accounts_path, n=2**10)
    if TECHNICIAN not in accounts.names():
        accounts.add(TECHNICIAN, PASSWORD)


@contextlib.asynccontextmanager
async def console_session(hub: Hub) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like HTTP session logged in to the console (cookies kept for 127.0.0.1)."""
    add_technician(hub)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            f"{hub.http.url}/login",
            data={"name": TECHNICIAN, "password": PASSWORD, "next": "/"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, await response.text()
        yield http


async def csrf_of(http: aiohttp.ClientSession, url: str) -> str:
    """The CSRF token a page renders into its forms."""
    async with http.get(url) as response:
        page = await response.text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def read_event(response: aiohttp.ClientResponse) -> dict[str, object]:
    """The next ``figures`` event of a server-sent event stream."""
    event = ""
    async with asyncio.timeout(10):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "figures":
                data: dict[str, object] = json.loads(line[6:])
                return data
    raise AssertionError("the stream ended")


async def test_pages_render_the_store_and_a_parked_sale_is_retried_from_the_outbox_page(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    bad = sale(1)
    sim = HqApiSimulator(reject_ids={bad["txn_id"]})
    async with (
        hub_with_cloud(tmp_path, broker, sim) as (hub, hq, _),
        lane_client(broker.port) as lane,
        console_session(hub) as http,
    ):
        for txn in (bad, sale(2)):
            assert (await lane.request(SUBMIT, txn)).ok
        assert hub.outbox is not None
        assert hub.outbox.sender is not None
        outbox = hub.outbox

        async def parked() -> bool:
            return (await outbox.status())["parked"] == 1

        await asyncio.wait_for(outbox.sender.wait_until(parked), 10)

        async with http.get(f"{hub.http.url}/") as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            page = await response.text()
        assert "store s1" in page
        assert "OUTBOX_PARKED" in page, "the parked sale is an alert on the overview"
        for path in ("/lanes", "/devices", "/catalogue", "/logs?level=DEBUG&q=outbox"):
            async with http.get(f"{hub.http.url}{path}") as response:
                assert response.status == 200, path
        async with http.get(f"{hub.http.url}/static/console.js") as response:
            assert response.status == 200

        async with http.get(f"{hub.http.url}/outbox") as response:
            page = await response.text()
        assert bad["txn_id"] in page
        assert "BUSINESS_RULE_VIOLATION" in page, "the cloud's whole error is shown"

        sim.reject_ids.clear()
        retry = f"{hub.http.url}/outbox/items/{bad['txn_id']}/retry"
        async with http.post(retry, data={"reason": "fixed"}, allow_redirects=False) as response:
            assert response.status == 403, "no CSRF token, no action"
        assert hub.outbox.store is not None
        still = await outbox.store.get(bad["txn_id"])
        assert still is not None
        assert still.status == "parked"
        csrf = await csrf_of(http, f"{hub.http.url}/outbox")
        async with http.post(
            retry, data={"reason": "price fixed at HQ", "csrf": csrf}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert "re-queued" in response.headers["Location"]
        await hq.wait_until(lambda s: bad["txn_id"] in s.committed)
        audit = await outbox.store.audit_log(bad["txn_id"])
        assert any("console:ana" in json.dumps(entry) for entry in audit), audit
        async with http.post(
            retry, data={"reason": "", "csrf": csrf}, allow_redirects=False
        ) as response:
            assert "say+why" in response.headers["Location"]


async def test_the_event_stream_follows_the_outbox_and_ends_when_the_hub_stops(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with (
        hub_with_cloud(tmp_path, broker) as (hub, _, wan),
        lane_client(broker.port) as lane,
        console_session(hub) as http,
    ):
        async with http.get(f"{hub.http.url}/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await read_event(stream)
            assert first["wan"] == "up"
            assert first["pending"] == 0
            wan.mode = "blackhole"
            for n in range(3):
                assert (await lane.request(SUBMIT, sale(n))).ok
            while (figures := await read_event(stream))["pending"] != 3:
                pass
            assert figures["lanes_online"] == 0  # the test client publishes no presence
            wan.mode = "pass"
            while (await read_event(stream))["pending"] != 0:
                pass


async def test_the_logs_page_filters_by_level_and_text(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with hub_with_cloud(tmp_path, broker) as (hub, _, _), console_session(hub) as http:
        logging.getLogger("edge.test").warning("drawer 3 jammed <b>")
        logging.getLogger("edge.test").info("routine message")
        async with http.get(f"{hub.http.url}/logs?level=WARNING&q=drawer") as response:
            page = await response.text()
        assert "drawer 3 jammed &lt;b&gt;" in page, "escaped, never raw HTML"
        assert "routine message" not in page
        assert len(re.findall(r"<tr class=\"level-", page)) == 1


async def test_the_console_needs_a_login_and_the_api_and_health_do_not(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with hub_with_cloud(tmp_path, broker) as (hub, _, _), aiohttp.ClientSession() as http:
        for path in ("/", "/outbox", "/events"):
            async with http.get(f"{hub.http.url}{path}", allow_redirects=False) as response:
                assert response.status == 303, path
                assert response.headers["Location"].startswith("/login"), path
        for path in ("/readyz", "/api/v1/outbox", "/static/console.css"):
            async with http.get(f"{hub.http.url}{path}") as response:
                assert response.status == 200, path


def test_alerts_say_what_to_do_most_severe_first() -> None:
    outbox = {
        "pending": 40,
        "parked": 2,
        "oldest_pending_age_s": 3600.0,
        "breaker": {"state": "open", "down_since": 1_795_500_000.0},
        "disk": {"free_bytes": 300_000_000, "floor_bytes": 256_000_000},
    }
    catalogue = {
        "version": 12,
        "source": "hq",
        "last_sync": {"ok": False, "retryable": True, "failure": "unavailable"},
        "registers": {"stale": ["lane-4"]},
    }
    alerts = store_alerts(outbox, {"online": 3, "offline": 1}, catalogue)
    codes = [a.code for a in alerts]
    assert codes[0] == "OUTBOX_PARKED"
    assert set(codes) == {
        "OUTBOX_PARKED",
        "WAN_DOWN",
        "DISK_LOW",
        "LANES_OFFLINE",
        "CATALOGUE_SYNC_FAILED",
        "REGISTERS_NOT_FOLLOWING",
    }
    assert "OUTBOX_SLOW" not in codes, "a WAN outage explains the wait"
    wan = next(a for a in alerts if a.code == "WAN_DOWN")
    assert f"unreachable since {when(1_795_500_000.0)}; 40 sale(s)" in wan.message
    # While a probe is in flight (half-open) the WAN is still down: no blinking alert.
    probing = store_alerts({**outbox, "breaker": {"state": "half_open"}}, {"online": 3}, None)
    assert "WAN_DOWN" in [a.code for a in probing]
    assert "OUTBOX_SLOW" not in [a.code for a in probing]
    quiet = store_alerts(
        {"pending": 0, "parked": 0, "breaker": {"state": "closed"}}, {"online": 8}, None
    )
    assert quiet == []


async def _edge(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        EDGE, *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_technician_accounts_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE__STATE_DIR": str(tmp_path / "state")}
    code, text = await _edge(env, "console", "user", "list")
    assert (code, "no accounts" in text) == (0, True), text
    code, text = await _edge(
        env, "console", "user", "add", "ana", "--password-stdin", stdin=b"correct horse\n"
    )
    assert code == 0, text
    code, text = await _edge(
        env, "console", "user", "add", "bo", "--password-stdin", stdin=b"short\n"
    )
    assert code == 2, "a weak password is refused"
    code, text = await _edge(env, "console", "user", "add", "ana", "--password-stdin",
                             stdin=b"another password\n")  # fmt: skip
    assert code == 1, "the name is taken"
    code, text = await _edge(env, "console", "user", "list")
    assert text.split() == ["ana", "technician"]
    code, text = await _edge(env, "console", "user", "list", "--json")
    assert json.loads(text)["accounts"] == [{"name": "ana", "role": "technician"}]
    stored = (tmp_path / "state" / "console-accounts.json").read_text()
    assert "correct horse" not in stored
    assert oct((tmp_path / "state" / "console-accounts.json").stat().st_mode & 0o777) == "0o600"
    assert Accounts.load(tmp_path / "state" / "console-accounts.json").verify(
        "ana", "correct horse"
    )
    code, text = await _edge(env, "console", "user", "remove", "ana")
    assert code == 0, text
    code, text = await _edge(env, "console", "user", "list", "--json")
    assert json.loads(text)["accounts"] == []
