"""The lane registry: presence and discovery drive the lifecycle, kept in a real SQLite file,
and a hub shows its registers over HTTP as they come and go (real Mosquitto, real last will)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from edge.lanes.lifecycle import LaneState, LaneStateError, Timers
from edge.lanes.registry import LaneRegistry, LaneStore
from tests.conftest import (
    MosquittoProcess,
    fill_to_the_last_byte,
    hub_settings,
    run_hub,
    small_disk,
)

DAY = 86400.0
TIMERS = Timers(heartbeat_timeout_s=90, stale_after_s=3 * DAY, retire_after_s=90 * DAY)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def online(device: str = "REG-7", software: str = "4.2") -> bytes:
    return json.dumps(
        {"v": 1, "state": "online", "device_id": device, "software": software}
    ).encode()


def state_of(registry: LaneRegistry, device: str) -> str | None:
    return next((r["state"] for r in registry.snapshot() if r["device_id"] == device), None)


async def test_first_contact_enrolls_and_the_registry_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    registry = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=clock)
    await registry.open()
    await registry.on_presence("lane-03", online())
    assert state_of(registry, "REG-7") == "online"
    (row,) = registry.snapshot()
    assert (row["lane_id"], row["software"]) == ("lane-03", "4.2")
    history = await registry.history("REG-7")
    assert [h["after"] for h in reversed(history)] == ["discovered", "enrolled", "online"]
    await registry.close()

    again = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=clock)
    await again.open()
    assert state_of(again, "REG-7") == "online"
    await again.on_presence("lane-03", b'{"v": 1, "state": "offline"}')
    assert state_of(again, "REG-7") == "offline", "the will names no device: found by lane"
    await again.close()


async def test_timers_take_a_silent_lane_offline_then_stale_then_retired(tmp_path: Path) -> None:
    clock = Clock()
    registry = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=clock)
    await registry.open()
    await registry.on_presence("lane-01", online())
    clock.now += 60
    await registry.on_presence("lane-01", online())  # heartbeat
    clock.now += 89
    await registry.tick()
    assert state_of(registry, "REG-7") == "online"
    clock.now += 2
    await registry.tick()
    assert state_of(registry, "REG-7") == "offline"
    clock.now += 3 * DAY
    await registry.tick()
    assert state_of(registry, "REG-7") == "stale"
    (row,) = registry.snapshot()
    assert [a["code"] for a in row["alerts"]] == ["STALE"]
    clock.now += 90 * DAY
    await registry.tick()
    assert state_of(registry, "REG-7") == "retired"
    await registry.close()


async def test_a_retired_register_does_not_come_back_by_itself(tmp_path: Path) -> None:
    clock = Clock()
    registry = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=clock)
    await registry.open()
    await registry.on_presence("lane-01", online())
    await registry.retire("REG-7", "replaced by REG-9")
    await registry.on_presence("lane-01", online())
    assert state_of(registry, "REG-7") == "retired"
    with pytest.raises(LaneStateError):
        await registry.retire("REG-7")
    await registry.enroll("REG-7", "back in service")
    await registry.on_presence("lane-01", online())
    assert state_of(registry, "REG-7") == "online"
    await registry.close()


async def test_without_auto_enroll_a_register_waits_for_a_technician(tmp_path: Path) -> None:
    registry = LaneRegistry(LaneStore(tmp_path / "l.db"), TIMERS, auto_enroll=False, clock=Clock())
    await registry.open()
    await registry.on_presence("lane-01", online())
    assert state_of(registry, "REG-7") == "discovered"
    (row,) = registry.snapshot()
    assert [a["code"] for a in row["alerts"]] == ["NOT_ENROLLED"]
    await registry.close()


async def test_a_known_register_on_a_new_address_is_the_same_lane(tmp_path: Path) -> None:
    registry = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=Clock())
    await registry.open()
    await registry.on_discovered("REG-7", address="10.0.0.21", lane_id="lane-01", software="4.2")
    await registry.on_presence("lane-01", online())
    await registry.on_discovered("REG-7", address="10.0.0.57", lane_id="lane-01", software="4.2")
    (row,) = registry.snapshot()
    assert (row["address"], row["state"]) == ("10.0.0.57", "online")
    await registry.close()


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'{"state": 5}', b"\xff\xfe"])
async def test_garbage_status_changes_nothing(tmp_path: Path, payload: bytes) -> None:
    registry = LaneRegistry(LaneStore(tmp_path / "lanes.db"), TIMERS, clock=Clock())
    await registry.open()
    await registry.on_presence("lane-01", online())
    await registry.on_presence("lane-01", payload)
    assert state_of(registry, "REG-7") in ("online", "offline")
    if payload:
        assert state_of(registry, "REG-7") == "online"
    await registry.close()


def states_in(path: Path) -> dict[str, str]:
    """What the file says, read by another connection (as the next start would read it)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {d: json.loads(data)["state"] for d, data in db.execute("SELECT * FROM lanes")}


async def test_a_full_disk_holds_lane_changes_in_memory_until_there_is_room(
    tmp_path: Path,
) -> None:
    """The disk fills up to the last byte (a runaway log): registers that come and go are still
    shown as they are, history included, and nothing raises; once space returns, the next
    timer tick saves what was held, and a restart finds it."""
    clock = Clock()
    with small_disk(tmp_path, 8) as mount:
        path = mount / "lanes.db"
        registry = LaneRegistry(LaneStore(path), TIMERS, clock=clock)
        await registry.open()
        await registry.on_presence("lane-01", online("REG-1"))
        ballast = fill_to_the_last_byte(mount)
        clock.now += 5
        await registry.on_presence("lane-02", online("REG-2"))
        await registry.on_presence("lane-01", b'{"v": 1, "state": "offline"}')
        await registry.tick()  # tries again, still full
        shown = {row["device_id"]: row["state"] for row in registry.snapshot()}
        history = [h["after"] for h in await registry.history("REG-1")]
        on_disk_while_full = states_in(path)
        ballast.unlink()
        await registry.tick()
        saved = states_in(path)
        await registry.close()
        again = LaneRegistry(LaneStore(path), TIMERS, clock=clock)
        await again.open()
        after_restart = {row["device_id"]: row["state"] for row in again.snapshot()}
        history_after_restart = [h["after"] for h in await again.history("REG-1")]
        await again.close()
    assert on_disk_while_full == {"REG-1": "online"}, "the premise: nothing more was saved"
    assert shown == {"REG-1": "offline", "REG-2": "online"}
    assert history == ["offline", "online", "enrolled", "discovered"]
    assert saved == shown
    assert after_restart == shown
    assert history_after_restart == history


LANE_SCRIPT = """
import asyncio, json, sys
import aiomqtt
async def main():
    port, topic = int(sys.argv[1]), sys.argv[2]
    will = aiomqtt.Will(topic, json.dumps({"v": 1, "state": "offline", "reason": "lost"}), 1, True)
    async with aiomqtt.Client("127.0.0.1", port, identifier="reg-7", will=will) as client:
        status = {"v": 1, "state": "online", "device_id": "REG-7", "software": "4.2"}
        await client.publish(topic, json.dumps(status), qos=1, retain=True)
        print("online", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def _wait_state(registry: LaneRegistry, device: str, state: str) -> None:
    async with asyncio.timeout(10), registry.changed:
        await registry.changed.wait_for(lambda: state_of(registry, device) == state)


async def test_hub_shows_a_register_online_and_offline_by_its_last_will(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    settings = hub_settings(tmp_path, broker_port=broker.port)
    async with run_hub(settings) as hub:
        lane = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LANE_SCRIPT,
            str(broker.port),
            hub.topics.lane_status("lane-07"),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert lane.stdout is not None
            assert (await asyncio.wait_for(lane.stdout.readline(), 10)).strip() == b"online"
            await _wait_state(hub.lanes, "REG-7", "online")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{hub.http.url}/api/v1/lanes") as response:
                    listing = await response.json()
                async with http.get(f"{hub.http.url}/metrics") as response:
                    metrics = await response.text()
            assert listing["counts"]["online"] == 1
            assert listing["lanes"][0]["lane_id"] == "lane-07"
            assert 'edge_lanes{state="online"} 1.0' in metrics
        finally:
            lane.kill()
            await lane.wait()
        await _wait_state(hub.lanes, "REG-7", "offline")  # the broker sent the will
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{hub.http.url}/api/v1/lanes/REG-7/retire", json={}) as r:
                assert r.status == 200
                assert (await r.json())["state"] == "retired"
            async with http.post(f"{hub.http.url}/api/v1/lanes/REG-7/retire", json={}) as r:
                assert r.status == 409
            async with http.get(f"{hub.http.url}/api/v1/lanes/NOPE") as r:
                assert r.status == 404
    assert LaneState.RETIRED.value == state_of(hub.lanes, "REG-7")


async def _edge(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "edge"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_edge_lanes_cli_human_and_json(tmp_path: Path, broker: MosquittoProcess) -> None:
    settings = hub_settings(tmp_path, broker_port=broker.port)
    async with run_hub(settings) as hub:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reg-9") as client:
            await client.publish(hub.topics.lane_status("lane-09"), online("REG-9"), 1, retain=True)
            await _wait_state(hub.lanes, "REG-9", "online")
        url = hub.http.url
        code, out = await _edge("lanes", "--url", url, "list")
        assert code == 0, out
        assert "lane-09" in out
        assert "REG-9" in out
        assert "online" in out
        code, out = await _edge("lanes", "--url", url, "list", "--json")
        assert code == 0
        assert json.loads(out)["lanes"][0]["state"] == "online"
        code, out = await _edge("lanes", "--url", url, "retire", "REG-9", "--reason", "broken")
        assert code == 0, out
        code, out = await _edge("lanes", "--url", url, "show", "REG-9")
        assert code == 0
        assert "online -> retired  (broken)" in out
        code, out = await _edge("lanes", "--url", url, "show", "REG-404", "--json")
        assert code == 1
        assert json.loads(out)["error"]["code"] == "UNKNOWN_DEVICE"
        # A technician brings it back; both actions also in --json.
        code, out = await _edge("lanes", "--url", url, "enroll", "REG-9", "--json")
        assert code == 0, out
        assert json.loads(out)["state"] == "enrolled"
        code, out = await _edge("lanes", "--url", url, "show", "REG-9", "--json")
        assert code == 0
        assert json.loads(out)["state"] == "enrolled"
        code, out = await _edge(
            "lanes", "--url", url, "retire", "REG-9", "--reason", "stolen", "--json"
        )
        assert code == 0, out
        assert json.loads(out)["state"] == "retired"
        code, out = await _edge("lanes", "--url", url, "enroll", "REG-9")
        assert code == 0, out
        assert "REG-9" in out
    code, out = await _edge("lanes", "--url", url, "list")
    assert code == 3, "hub gone: unreachable"


async def test_hub_lists_a_register_found_on_mdns_as_discovered(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Discovery on (bound to loopback only): a register announcing itself is listed, not yet
    enrolled, with its address; once it speaks on the broker it is enrolled and online."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    from tests.test_discovery import register_info

    settings = hub_settings(
        tmp_path,
        broker_port=broker.port,
        discovery__enabled=True,
        discovery__interfaces=["127.0.0.1"],
    )
    async with run_hub(settings) as hub:
        peer = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            await peer.async_register_service(register_info("REG-5", "127.0.0.1", "lane-05"))
            await _wait_state(hub.lanes, "REG-5", "discovered")
            (row,) = hub.lanes.snapshot()
            assert (row["address"], row["lane_id"], row["software"]) == (
                "127.0.0.1",
                "lane-05",
                "pos-4.2",
            )
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reg-5") as client:
                await client.publish(hub.topics.lane_status("lane-05"), online("REG-5"), 1)
                await _wait_state(hub.lanes, "REG-5", "online")
        finally:
            await peer.async_close()
