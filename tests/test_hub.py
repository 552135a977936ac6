"""The hub process: managed broker supervision, reconnects, presence, readiness, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from edge.bus import Topics
from edge.systemd import Notifier
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub
from tests.schemas import validate_hub_status

TOPICS = Topics("s1")
PING = TOPICS.hub_rpc("ping")


async def _get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_managed_broker_starts_serves_and_stops(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """`broker.mode = managed`: the hub renders its config, starts mosquitto, is ready, answers
    requests on the loopback listener, and takes mosquitto down with it on shutdown."""
    settings = hub_settings(tmp_path, broker_port=free_port(), mode="managed")
    async with run_hub(settings) as hub:
        conf = (settings.state_dir / "broker" / "mosquitto.conf").read_text()
        assert "set_tcp_nodelay true" in conf
        status, body = await _get(f"{hub.http.url}/readyz")
        assert status == 200
        assert body["ready"] is True
        async with lane_client(hub) as lane:
            assert (await lane.request(PING, {"x": 1})).ok
        # Registers use the LAN listener.
        async with lane_client(settings.broker.lan_port) as lane:
            assert (await lane.request(PING, {"x": 2})).ok
        assert hub.broker is not None
        pid = hub.broker.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_managed_broker_killed_is_restarted_and_hub_resubscribes(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """mosquitto dies under the hub: /readyz goes 503 while it is down, the supervisor restarts
    it, the bus reconnects and re-subscribes, /readyz is 200 again and requests work."""
    settings = hub_settings(tmp_path, broker_port=free_port(), mode="managed")
    async with run_hub(settings) as hub:
        assert hub.broker is not None
        first_pid = hub.broker.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await hub.bus.wait_disconnected(timeout=10)
        status, body = await _get(f"{hub.http.url}/readyz")
        assert status == 503
        assert body["checks"]["bus"]["ok"] is False  # type: ignore[index]
        await hub.bus.wait_connected(timeout=15)
        await hub.broker.wait_running(timeout=15)  # the bus can reconnect first
        status, _ = await _get(f"{hub.http.url}/readyz")
        assert status == 200
        assert hub.broker.pid != first_pid
        async with lane_client(hub) as lane:
            assert (await lane.request(PING, {"after": "restart"})).ok
        metrics = hub.metrics.broker_restarts._value.get()
    assert metrics == 1


async def test_external_broker_restart_hub_reconnects(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """`broker.mode = external` (systemd runs mosquitto): the broker restarts, the hub
    reconnects with backoff and serves again without being restarted itself."""
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub:
        broker.kill()
        await hub.bus.wait_disconnected(timeout=10)
        status, _ = await _get(f"{hub.http.url}/readyz")
        assert status == 503
        await broker.start()
        await hub.bus.wait_connected(timeout=15)
        async with lane_client(broker.port) as lane:
            assert (await lane.request(PING, {"back": True})).ok
        assert hub.bus.connects == 2


async def test_requests_sent_while_hub_is_down_are_answered_when_it_returns(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The hub's persistent session keeps its subscriptions in the broker: a register's request
    published while the hub restarts waits there and is answered once the hub is back."""
    settings = hub_settings(tmp_path, broker_port=broker.port)
    async with run_hub(settings):
        pass  # first run creates the session
    async with lane_client(broker.port) as lane:
        # Acknowledged by the broker (PUBACK) while no hub is connected.
        pending = await lane.send(PING, b'{"v": 1, "id": "while-down", "data": {"queued": 1}}')
        assert not pending.done()
        async with run_hub(settings):
            reply = json.loads(await asyncio.wait_for(pending, 10))
    assert reply["ok"] is True
    assert reply["id"] == "while-down"
    assert reply["data"]["echo"] == {"queued": 1}


async def test_presence_online_then_offline_on_shutdown(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Every lane sees the hub's retained presence: online while it runs, offline (shutdown)
    after a clean stop."""
    settings = hub_settings(tmp_path, broker_port=broker.port)
    async with run_hub(settings):
        async with lane_client(broker.port) as lane, lane.subscription(TOPICS.hub_status) as q:
            online = json.loads((await asyncio.wait_for(q.get(), 5)).payload)
    async with lane_client(broker.port) as lane, lane.subscription(TOPICS.hub_status) as q:
        message = await asyncio.wait_for(q.get(), 5)
        offline = json.loads(message.payload)
    for status in (online, offline):
        validate_hub_status(status)
    assert online["state"] == "online"
    assert offline == {**offline, "state": "offline", "reason": "shutdown", "hub_id": "hub-test"}
    assert message.retain


async def test_presence_last_will_when_hub_dies(tmp_path: Path, broker: MosquittoProcess) -> None:
    """A hub that dies without a goodbye (SIGKILL, power cut) is reported offline (lost) by the
    broker's last will, so lanes know at once."""
    settings_file = tmp_path / "edge.toml"
    settings_file.write_text(
        f'store_id = "s1"\nhub_id = "hub-kill"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[broker]\nmode = "external"\nport = {broker.port}\n[http]\nport = 0\n'
        "[bus]\nkeepalive_s = 5\n"
    )
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "edge"),
        "--config",
        str(settings_file),
        "run",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(20):
            async for line in process.stderr:
                if b"hub: ready" in line:
                    break
        async with lane_client(broker.port) as lane, lane.subscription(TOPICS.hub_status) as q:
            assert json.loads((await asyncio.wait_for(q.get(), 5)).payload)["state"] == "online"
            process.kill()
            await process.wait()
            # The broker notices the dropped TCP connection at once and publishes the will.
            status = json.loads((await asyncio.wait_for(q.get(), 10)).payload)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    validate_hub_status(status)
    assert status["state"] == "offline"
    assert status["reason"] == "lost"
    assert status["hub_id"] == "hub-kill"


async def test_graceful_stop_finishes_inflight_requests(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A request in flight when SIGTERM arrives is still answered; one arriving after the stop
    began is refused with the retryable UNAVAILABLE."""
    settings = hub_settings(tmp_path, broker_port=broker.port)
    started = asyncio.Event()
    release = asyncio.Event()
    async with lane_client(broker.port) as lane:
        async with run_hub(settings) as hub:

            async def slow(ctx: object, data: object) -> dict[str, bool]:
                started.set()
                await release.wait()
                return {"slow": True}

            hub.rpc.register("hub", "slow", slow)
            inflight = asyncio.create_task(lane.request(TOPICS.hub_rpc("slow"), {}))
            await started.wait()
            hub.request_stop()
            await hub.bus.wait_stopping()
            refused = await lane.request(PING, {})
            release.set()
        answered = await inflight
    assert answered.ok
    assert answered.data == {"slow": True}
    assert refused.error is not None
    assert refused.error.code == "UNAVAILABLE"
    assert refused.error.retryable is True


async def test_systemd_notify_ready_watchdog_stopping(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """Under systemd (Type=notify) the hub reports READY=1 once connected, pings the watchdog,
    and reports STOPPING=1 on shutdown."""
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def until(state: str) -> None:
        while state not in seen:
            seen.extend((await loop.sock_recv(receiver, 4096)).decode().split("\n"))

    try:
        async with run_hub(hub_settings(tmp_path, broker_port=broker.port), notifier=notifier):
            await asyncio.wait_for(until("READY=1"), 5)
            await asyncio.wait_for(until("WATCHDOG=1"), 5)
        await asyncio.wait_for(until("STOPPING=1"), 5)
    finally:
        receiver.close()
    assert seen.index("READY=1") < seen.index("STOPPING=1")


async def test_metrics_exposition(tmp_path: Path, broker: MosquittoProcess) -> None:
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub:
        async with lane_client(broker.port) as lane:
            await lane.request(PING, {})
            await lane.request_raw(PING, b"nope")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{hub.http.url}/metrics") as response:
                text = await response.text()
                assert response.status == 200
    assert 'edge_requests_total{method="ping",outcome="ok"} 1.0' in text
    assert 'edge_requests_total{method="ping",outcome="MALFORMED_JSON"} 1.0' in text
    assert "edge_bus_connected 1.0" in text
    assert 'edge_build_info{hub_id="hub-test"' in text
