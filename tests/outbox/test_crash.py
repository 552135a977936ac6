"""Nothing lost, nothing twice: lanes hand over sales while the hub is SIGKILLed at random
moments (and the WAN and the cloud misbehave); at the end every transaction a register got an
ack for is in the cloud exactly once, and nothing is there that was not rung up."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edge.sim import FaultProfile, HqApiSimulator, WanProxy, run_hq_api
from edge.sim.process import HubProcess, write_config
from edge.sim.registers import SimLane
from tests.conftest import MosquittoProcess

LANES = 4
KILLS_PER_TEST = 25  # two tests: at least 50 kills in the suite


def hub_config(tmp_path: Path, broker_port: int, cloud_url: str, http_port: int) -> Path:
    return write_config(
        tmp_path / "edge.toml",
        {
            "store_id": "s1",
            "hub_id": "hub-crash",
            "state_dir": str(tmp_path / "state"),
            "broker": {"mode": "external", "port": broker_port},
            "bus": {"reconnect_min_s": 0.02, "reconnect_max_s": 0.2, "keepalive_s": 5},
            "http": {"port": http_port},
            "log": {"level": "INFO"},
            "outbox": {
                "connector": "hq_http",
                "min_free_bytes": 0,
                "retry_base_s": 0.05,
                "retry_cap_s": 0.5,
                "breaker_threshold": 3,
                "breaker_cooldown_s": 0.1,
                "breaker_cooldown_cap_s": 0.5,
                "idle_poll_s": 0.2,
                "batch_max": 20,
                "concurrency": 4,
            },
            "uplink": {"hq_http": {"url": cloud_url, "token": "sim-token", "timeout_s": 1.0}},
        },
    )


@contextlib.asynccontextmanager
async def lanes_running(broker: MosquittoProcess) -> AsyncIterator[list[SimLane]]:
    lanes = [
        SimLane(
            host="127.0.0.1",
            port=broker.port,
            store_id="s1",
            lane_id=f"lane-{i}",
            seed=i,
            timeout_s=1.0,
        )
        for i in range(LANES)
    ]
    tasks = [asyncio.create_task(lane.run()) for lane in lanes]
    try:
        yield lanes
    finally:
        for lane in lanes:
            lane.stop.set()
        # Each lane finishes the sale in hand: it re-sends until the hub acknowledges it.
        await asyncio.wait_for(asyncio.gather(*tasks), 120)


async def kill_at_random_moments(hub: HubProcess, kills: int, rng: random.Random) -> None:
    for _ in range(kills):
        # The fault schedule, not synchronisation: kill at a random point of the traffic.
        await asyncio.sleep(rng.uniform(0.02, 0.3))
        await hub.kill()
        await hub.start()


async def assert_exactly_once(lanes: list[SimLane], hq: object, sim: HqApiSimulator) -> None:
    acked = set().union(*(lane.stats.acked for lane in lanes))
    assert all(not lane.stats.refused for lane in lanes), [lane.stats.refused for lane in lanes]
    assert len(acked) > 50, "too little traffic to prove anything"
    try:
        await asyncio.wait_for(
            hq.wait_until(lambda s: acked <= s.committed.keys()),  # type: ignore[attr-defined]
            60,
        )
    except TimeoutError:
        missing = sorted(acked - sim.committed.keys())
        raise AssertionError(
            f"{len(missing)} acked sales never in the cloud: {missing[:5]}"
        ) from None
    duplicates = {i: sim.commit_count(i) for i in sim.committed if sim.commit_count(i) != 1}
    assert duplicates == {}, "committed more than once"
    rung = {f"s1-{lane.lane_id}-{n:07d}" for lane in lanes for n in range(1, lane.stats.rung + 1)}
    assert set(sim.committed) <= rung, "the cloud holds something no lane rang up"


async def test_acked_sales_survive_random_sigkills(
    tmp_path: Path, broker: MosquittoProcess, free_port: Callable[[], int]
) -> None:
    sim = HqApiSimulator(max_batch=100)
    async with run_hq_api(sim=sim) as hq:
        hub = HubProcess(hub_config(tmp_path, broker.port, hq.url, free_port()))
        await hub.start()
        try:
            async with lanes_running(broker) as lanes:
                await kill_at_random_moments(hub, KILLS_PER_TEST, random.Random(1))
            await assert_exactly_once(lanes, hq, sim)
        finally:
            await hub.kill()
    assert hub.starts == KILLS_PER_TEST + 1


async def test_acked_sales_survive_sigkills_with_wan_flaps_and_cloud_faults(
    tmp_path: Path, broker: MosquittoProcess, free_port: Callable[[], int]
) -> None:
    """The same promise with the WAN flapping (refuse, blackhole, reset) and the cloud
    answering 429, 5xx, timeouts, resets and losing responses after it committed."""
    sim = HqApiSimulator(
        max_batch=100,
        seed=3,
        profile=FaultProfile(
            throttle=0.05,
            server_error=0.05,
            timeout=0.03,
            reset=0.03,
            commit_then_lose=0.08,
            retry_after_s=0,
        ),
    )
    rng = random.Random(2)
    async with run_hq_api(sim=sim) as hq, WanProxy(hq.host, hq.port) as wan:
        hub = HubProcess(
            hub_config(tmp_path, broker.port, f"http://127.0.0.1:{wan.port}", free_port())
        )
        await hub.start()

        async def flap() -> None:
            while True:
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                wan.mode = rng.choice(["refuse", "blackhole", "reset", "pass", "pass"])

        flapper = asyncio.create_task(flap())
        try:
            async with lanes_running(broker) as lanes:
                await kill_at_random_moments(hub, KILLS_PER_TEST, rng)
            flapper.cancel()
            wan.mode = "pass"
            sim.profile = FaultProfile()
            await assert_exactly_once(lanes, hq, sim)
        finally:
            flapper.cancel()
            await hub.kill()
    assert sim.stats.as_json()  # the simulator saw the traffic
