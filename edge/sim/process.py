"""The hub as a real process (`edge run`): for tests, benchmarks and chaos runs that kill it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

EDGE = str(Path(sys.executable).parent / "edge")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """``sections`` as TOML: scalars and lists as keys, dicts as tables (any depth)."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        if name:
            lines.append(f"[{name}]")
        lines.extend(
            f"{_toml_key(k)} = {toml_value(v)}" for k, v in body.items() if not isinstance(v, dict)
        )
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{name}.{_toml_key(k)}" if name else _toml_key(k), v)

    table("", sections)
    path.write_text("\n".join(lines) + "\n")
    return path


class HubProcess:
    """Start `edge --config PATH run`, wait until it is ready, SIGKILL it, start it again.

    Readiness comes the way systemd gets it: the process is given its own ``NOTIFY_SOCKET``
    and we wait for ``READY=1`` (independent of the log level).
    """

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.process: asyncio.subprocess.Process | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=400)
        self._drain: asyncio.Task[None] | None = None
        self._notify: socket.socket | None = None
        self._notify_dir: tempfile.TemporaryDirectory[str] | None = None
        self.starts = 0

    async def start(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        self._close_notify()
        # Kept for the process's lifetime, as systemd keeps it: the hub also sends WATCHDOG=1
        # and STOPPING=1 to it.
        self._notify_dir = tempfile.TemporaryDirectory(prefix="edge-notify-")
        address = str(Path(self._notify_dir.name) / "notify.sock")
        notify = self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(address)
        notify.setblocking(False)
        self.process = await asyncio.create_subprocess_exec(
            EDGE,
            "--config",
            str(self.config),
            "run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**self.env, "NOTIFY_SOCKET": address},
        )
        self.starts += 1
        self._drain = asyncio.create_task(self._read(self.process))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    datagram = asyncio.ensure_future(loop.sock_recv(notify, 4096))
                    done, _ = await asyncio.wait(
                        [datagram, exited], return_when=asyncio.FIRST_COMPLETED
                    )
                    if datagram not in done:
                        datagram.cancel()
                        raise AssertionError("hub exited before ready:\n" + "\n".join(self.log))
                    if b"READY=1" in datagram.result().split(b"\n"):
                        return
        except TimeoutError:
            raise AssertionError("hub did not become ready:\n" + "\n".join(self.log)) from None
        finally:
            if not exited.done():
                exited.cancel()

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            self._notify_dir.cleanup()
            self._notify_dir = None

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:  # always drained: a full pipe would block the hub
            self.log.append(raw.decode(errors="replace").rstrip())

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        await self._stop_drain()

    async def stop(self) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        await self._stop_drain()
        return code

    async def _stop_drain(self) -> None:
        self._close_notify()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._drain, 5)
            self._drain = None
