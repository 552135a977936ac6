"""Shared fixtures: a real Mosquitto on an ephemeral loopback port, free ports, hub settings.

No mock of the broker anywhere: every MQTT test talks to a real Mosquitto 2 process.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import Hub
from edge.broker import find_mosquitto, wait_for_port
from edge.bus import Requester, Topics
from edge.settings import Settings, settings_from_dict


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A factory of currently free loopback TCP ports (Mosquitto cannot listen on port 0)."""
    return _free_port


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    try:
        return find_mosquitto("mosquitto")
    except Exception as exc:  # pragma: no cover - the Makefile installs it
        pytest.fail(f"{exc} (make test installs it)")


class MosquittoProcess:
    """A Mosquitto the test controls: start, kill (SIGKILL), restart on the same port."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.dir = directory
        self.port = port
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "set_tcp_nodelay true",
                    "allow_anonymous true",
                    "max_queued_messages 100000",
                    "log_type all",
                    f"listener {self.port} 127.0.0.1",
                    "",
                ]
            )
        )

    async def start(self) -> None:
        self.write_config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        await wait_for_port(self.host, self.port, 10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
async def broker(
    tmp_path: Path, mosquitto_bin: str, free_port: Callable[[], int]
) -> AsyncIterator[MosquittoProcess]:
    """A running Mosquitto on 127.0.0.1:<ephemeral>, stopped after the test."""
    proc = MosquittoProcess(mosquitto_bin, tmp_path / "broker", free_port())
    await proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def hub_settings(
    tmp_path: Path,
    *,
    broker_port: int,
    lan_port: int | None = None,
    mode: str = "external",
    **overrides: object,
) -> Settings:
    """Settings for a hub under test: its own state dir, ephemeral HTTP port, given broker."""
    raw: dict[str, object] = {
        "store_id": "s1",
        "hub_id": "hub-test",
        "state_dir": str(tmp_path / "state"),
        "broker": {
            "mode": mode,
            "port": broker_port,
            "lan_port": lan_port or _free_port(),
            "restart_backoff_min_s": 0.05,
            "restart_backoff_max_s": 0.2,
        },
        "bus": {"reconnect_min_s": 0.02, "reconnect_max_s": 0.2, "request_timeout_s": 5.0},
        "http": {"port": 0},
        "shutdown": {"grace_s": 2.0},
        # The product's 16 MiB reserve in every test's state dir would add up to gigabytes
        # in the runs pytest keeps; the full-disk tests set their own.
        "outbox": {"reserve_bytes": 256 * 1024},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            raw.setdefault(section, {})[name] = value  # type: ignore[index]
        else:
            raw[key] = value
    return settings_from_dict(raw, "test")


@contextlib.asynccontextmanager
async def run_hub(settings: Settings, **kwargs: Any) -> AsyncIterator[Hub]:
    """Run a hub in this event loop until the block ends; then stop it gracefully."""
    hub = Hub(settings, **kwargs)
    task = asyncio.create_task(hub.run(handle_signals=False), name="hub-under-test")
    ready = asyncio.create_task(hub.ready.wait())
    done, _ = await asyncio.wait([task, ready], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # raises the start error
        task.cancel()
        raise TimeoutError("hub did not become ready within 20 s")
    try:
        yield hub
    finally:
        hub.request_stop()
        async with asyncio.timeout(15):
            await task


@contextlib.asynccontextmanager
async def lane_client(
    hub_or_port: Hub | int, lane: str = "lane-1", store: str = "s1", **kwargs: Any
) -> AsyncIterator[Requester]:
    """A register-side MQTT 5 client on lane ``lane``, replying on its conventional topic."""
    port = hub_or_port if isinstance(hub_or_port, int) else hub_or_port.settings.broker.port
    topics = Topics(store)
    async with Requester(
        "127.0.0.1",
        port,
        client_id=f"reg-{lane}-{_free_port()}",
        reply_topic=topics.lane_reply(lane),
        **kwargs,
    ) as client:
        yield client


@contextlib.contextmanager
def small_disk(tmp_path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB a test can really fill (skipped where mounting is refused)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_to_the_last_byte(mount: Path) -> Path:
    """Fill the filesystem at ``mount`` with a ballast file until not a byte is free; returns
    the ballast (unlink it to give the space back)."""
    ballast = mount / "ballast"
    with ballast.open("wb") as fill, contextlib.suppress(OSError):
        while True:
            fill.write(b"\0" * 65536)
            fill.flush()
    return ballast
