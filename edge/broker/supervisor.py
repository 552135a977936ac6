"""Run Mosquitto as a supervised child process (managed mode).

Theory of operation
-------------------
:meth:`BrokerSupervisor.run` loops:

1. render mosquitto.conf into ``<state>/broker/`` (every start: the file follows the settings);
2. start ``mosquitto -c <conf>``; its output is relayed into the hub's log;
3. wait until the loopback listener accepts TCP connections (bounded by ``start_timeout_s``);
   then ``ready`` is set;
4. wait for the process to exit; an exit while the hub runs is a crash: log it, wait a growing
   backoff (reset after a minute of good running), go to 2.

Cancellation (hub shutdown) stops the child with SIGTERM (Mosquitto saves its persistence) and
SIGKILL if it does not exit within 5 s.

Errors::

    BrokerError                   base
    ├── BrokerNotInstalled        no mosquitto binary; names the Debian package (not retryable)
    └── BrokerStartFailed         did not accept connections in time (retryable)
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import random
import shutil
import signal
import time
from pathlib import Path

from edge.broker.config import LanSecurity, render_config
from edge.metrics import Metrics
from edge.settings import BrokerSettings

log = logging.getLogger(__name__)
broker_log = logging.getLogger("mosquitto")

_FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# systemd's notify and watchdog variables are the hub's alone: Debian's mosquitto (built with
# systemd support) would send its own READY=1 to the hub's socket, which systemd drops (with a
# warning) under NotifyAccess=main.
_SYSTEMD_ONLY_ENV = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


class BrokerError(Exception):
    retryable = False


class BrokerNotInstalled(BrokerError):
    pass


class BrokerStartFailed(BrokerError):
    retryable = True


def find_mosquitto(configured: str) -> str:
    """The mosquitto binary: the configured path or name, searched on PATH and in sbin dirs."""
    if os.sep in configured:
        if os.access(configured, os.X_OK):
            return configured
    else:
        found = shutil.which(configured) or shutil.which(
            configured, path=os.pathsep.join(_FALLBACK_DIRS)
        )
        if found:
            return found
    raise BrokerNotInstalled(
        f"mosquitto not found ({configured!r}): install the Debian package 'mosquitto' "
        '(apt-get install mosquitto), or set broker.mode = "external"'
    )


async def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Poll until ``host:port`` accepts a TCP connection; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


#: MQTT 5 CONNECT (clean start, no keepalive, no credentials): Mosquitto answers it with a
#: CONNACK from its event loop, refused once the hub has its identity.
_PROBE_ID = b"edge-hub-reload-check"
_PROBE_BODY = b"\x00\x04MQTT\x05\x02\x00\x00\x00" + len(_PROBE_ID).to_bytes(2, "big") + _PROBE_ID
_PROBE_CONNECT = bytes([0x10, len(_PROBE_BODY)]) + _PROBE_BODY


async def _round_trip(host: str, port: int) -> None:
    """One exchange through Mosquitto's event loop: a CONNECT and its CONNACK."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_PROBE_CONNECT)
        await writer.drain()
        if (await reader.readexactly(1))[0] >> 4 != 2:
            raise OSError("the broker did not answer the probe with a CONNACK")
        if not writer.is_closing():
            writer.write(b"\xe0\x00")  # DISCONNECT, in case the probe was let in
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class BrokerSupervisor:
    def __init__(
        self,
        settings: BrokerSettings,
        *,
        state_dir: Path,
        metrics: Metrics,
        rng: random.Random | None = None,
        security: LanSecurity | None = None,
    ) -> None:
        self._settings = settings
        self._security = security
        self._dir = state_dir / "broker"
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._first_start: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reload_lock = asyncio.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._ready.is_set()

    @property
    def config_path(self) -> Path:
        return self._dir / "mosquitto.conf"

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the first start; raises the error that stopped it, if any."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._first_start)

    async def wait_running(self, timeout: float | None = None) -> None:
        """Wait until the broker accepts connections (again, after a restart)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def reload(self) -> bool:
        """SIGHUP: Mosquitto re-reads its ACL, password file, CRL and certificates without
        dropping a connection. Returns once it runs with the files as they are now (True), or
        False if it is not running (it reads them when it starts) or did not answer.

        The signal alone is not enough. Mosquitto blocks it while it waits for traffic and acts
        on it at the end of a turn of its event loop, and a SIGHUP that arrives while a reload
        is running is lost (the reload clears the flag when it ends): two enrollments in a row
        could leave the second device's rules unloaded, every message from it denied. So one
        reload at a time, each confirmed by two round trips on the loopback listener (a CONNECT
        answered by a CONNACK): the second is answered on a later turn of the loop than the
        reload the signal triggered."""
        async with self._reload_lock:
            try:
                async with asyncio.timeout(self._settings.start_timeout_s):
                    process = self._process
                    if process is None or process.returncode is not None:
                        return False  # it reads the files when it (re)starts
                    # Still starting, it may have read them before they changed: reload it once up.
                    await self._ready.wait()
                    process.send_signal(signal.SIGHUP)
                    for _ in range(2):
                        await _round_trip(self._settings.host, self._settings.port)
            except ProcessLookupError:
                return False
            except (OSError, EOFError, TimeoutError) as exc:
                log.warning("broker: reload signalled but not confirmed: %r", exc)
                return False
            log.info("broker: reloaded (access rules, revocations, certificates)")
            return True

    async def run(self) -> None:
        try:
            await self._loop(find_mosquitto(self._settings.mosquitto_path))
        except BrokerError as exc:
            if not self._first_start.done():
                self._first_start.set_exception(exc)
                self._first_start.exception()  # retrieved here; run() re-raises it
            raise

    async def _loop(self, binary: str) -> None:
        failures = 0
        while True:
            self._write_config()
            started = time.monotonic()
            await self._start(binary)
            try:
                returncode = await self._wait_exit()
            finally:
                self._ready.clear()
                self._metrics.broker_up.set(0)
            failures = 0 if time.monotonic() - started > 60 else failures + 1
            delay = min(
                self._settings.restart_backoff_max_s,
                self._settings.restart_backoff_min_s * 2 ** min(failures, 16),
            ) * (0.5 + self._rng.random() / 2)
            log.error(
                "broker: mosquitto exited with code %s; restarting in %.1fs", returncode, delay
            )
            self._metrics.broker_restarts.inc()
            await asyncio.sleep(delay)

    def _write_config(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        text = render_config(
            self._settings,
            persistence_dir=self._dir.resolve(),
            run_as_user=getpass.getuser(),
            security=self._security,
        )
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    async def _start(self, binary: str) -> None:
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k not in _SYSTEMD_ONLY_ENV},
        )
        self.starts += 1
        log.info("broker: started mosquitto pid %d", self._process.pid)
        try:
            await wait_for_port(
                self._settings.host, self._settings.port, self._settings.start_timeout_s
            )
        except TimeoutError:
            await self._terminate()
            raise BrokerStartFailed(
                f"mosquitto did not accept connections on {self._settings.host}:"
                f"{self._settings.port} within {self._settings.start_timeout_s:g}s "
                f"(see the 'mosquitto' log lines above; config {self.config_path})"
            ) from None
        self._ready.set()
        self._metrics.broker_up.set(1)
        if not self._first_start.done():
            self._first_start.set_result(None)

    async def _wait_exit(self) -> int:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        try:
            async for line in process.stdout:
                broker_log.info("%s", line.decode(errors="replace").rstrip())
            return await process.wait()
        except asyncio.CancelledError:
            await self._terminate()
            raise

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                if process.stdout is not None:
                    async for line in process.stdout:
                        broker_log.info("%s", line.decode(errors="replace").rstrip())
                await process.wait()
        except TimeoutError:
            log.warning("broker: mosquitto ignored SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        log.info("broker: mosquitto stopped")
