"""The chaos harness: a whole store under a randomized fault schedule, then the promise checked.

Theory of operation
-------------------
Every part is real and owned by this process, except the hub, which runs as its own process
(`edge --config chaos.toml run`, :class:`edge.sim.process.HubProcess`) so that it can be
SIGKILLed:

1. the state filesystem: a tmpfs mounted on ``<workdir>/state`` (the hub's ``state_dir``), so
   that a ballast file can fill it for real (:class:`StateDisk`). Where mounting is refused
   (no CAP_SYS_ADMIN), the hub's own free-space floor is set just under the free space of the
   workdir's filesystem and the ballast pushes it below the floor; the summary says which;
2. the broker: Mosquitto in *external* mode, as on the appliance where it has its own systemd
   unit; the harness starts it, SIGKILLs or SIGTERMs it and starts it again on the same port
   with the same persistence file (:class:`Broker`);
3. the cloud: the NetSuite-shaped simulator (:mod:`edge.sim.netsuite`) with its fault switches,
   behind the WAN fault proxy (:class:`edge.sim.wan_proxy.WanProxy`); the hub only knows the
   proxy's address. The simulated HQ edits the item catalogue as the run goes;
4. the hub process, supervised as systemd would: restarted one second after it exits by itself
   (counted as an unplanned exit), or after the scheduled down time of a SIGKILL;
5. ``lanes`` registers (:class:`ChaosLane`): each rings up valid sales, keeps the sale in hand
   in its journal until the hub acknowledges it (through hub restarts, broker restarts, a full
   disk and its own power cuts: a switched-off lane re-sends it with the same id and content
   when it comes back), and follows the hub's catalogue feed.

The schedule (:mod:`edge.chaos.schedule`) is drawn from the seed before anything starts; one
task per episode sleeps until its start, applies the fault, waits its duration and undoes it.
At the end of ``duration_s``:

1. the faults stop: every episode task is cancelled and every fault undone (WAN passes, cloud
   healthy, ballast removed, broker, hub and every lane running); the cloud's business
   rejections stay, they are rules, not faults;
2. the lanes stop ringing up and finish the sale in hand (bounded);
3. the backlog drains: the hub's outbox is polled until nothing is pending (bounded by
   ``drain_timeout_s``); the drain time is measured from step 1;
4. the catalogue settles: the hub downsyncs once more, every lane pulls the feed;
5. the evidence is read: the lanes' acks, the cloud's ledger, the hub's parked and pending
   items (HTTP API); the hub stops (SIGTERM) and its catalogue is read from its own file;
6. :func:`edge.chaos.invariants.check` turns the evidence into findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import getpass
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import msgspec

from edge.broker import find_mosquitto, wait_for_port
from edge.bus import Requester, Topics
from edge.bus.client import Message
from edge.bus.errors import BusError
from edge.catalogue.store import CatalogueStore
from edge.chaos.invariants import Catalogue, OutboxRecord, Records, Tally, check
from edge.chaos.invariants import Finding as Finding
from edge.chaos.schedule import DEFAULT_KINDS, Episode, FaultKind, draw_schedule
from edge.demo import NetSuiteCloud
from edge.settings import settings_from_dict
from edge.sim.catalogue_follower import FeedFollower, FeedRefused, IncompleteFeed, hub_records
from edge.sim.damage import damage_a_page, flip_a_pending_amount, flip_a_pending_dependency
from edge.sim.netsuite.faults import FaultPlan, FaultProfile
from edge.sim.netsuite.server import NetSuiteSim, run_netsuite_sim
from edge.sim.process import HubProcess
from edge.sim.registers import CATALOGUE, Journal, make_sale
from edge.sim.wan_proxy import WanProxy
from edge.uplink.netsuite.mapping import external_id

log = logging.getLogger(__name__)

STORE_ID = "chaos"
MiB = 1024 * 1024
#: Record types that carry a transaction's own external id (the others are its payments).
REQUEST_POLL_S = 0.2
"""How often a lane with nothing to ring up looks for the hub's journal requests."""

PRIMARY_RECORDS = ("cashsale", "invoice", "cashrefund", "creditmemo")
#: systemd's RestartSec for the hub after it exits by itself.
RESTART_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    duration_s: float = 120.0
    seed: int = 1
    lanes: int = 4
    kinds: tuple[FaultKind, ...] = DEFAULT_KINDS
    rate_per_min: float = 12.0
    """Faults per minute, over all kinds."""
    sale_every_s: float = 0.5
    """Mean seconds between two sales on one lane."""
    drain_timeout_s: float = 120.0
    catalogue_size: int = 300
    disk_mb: int = 256
    """Size of the tmpfs holding the hub's state."""
    floor_mb: int = 32
    """The hub's free-space floor (outbox.min_free_bytes)."""
    workdir: Path | None = None
    keep: bool = False
    """Keep the workdir (hub log, broker log, state) even after a clean run."""


# -- the state filesystem ---------------------------------------------------------------------


class StateDisk:
    """The hub's state directory on a filesystem a ballast file can fill.

    Calling contract: :meth:`setup` once, then :meth:`fill` / :meth:`free` alternately (both
    blocking: run them on a worker thread), :meth:`teardown` at the end.
    """

    def __init__(self, path: Path, size_bytes: int, floor_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self.floor_bytes = floor_bytes
        self.mounted = False
        self.how = ""
        self._ballast = path / "chaos-ballast"

    def setup(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_bytes},mode=0755", "edge-chaos",
             str(self.path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            self.mounted = True
            self.how = f"tmpfs of {self.size_bytes // MiB} MiB, floor {self.floor_bytes // MiB} MiB"
            return
        # No mount (not root, or no CAP_SYS_ADMIN): put the hub's floor just under the free
        # space here, so a ballast of a few tens of MiB pushes it below; "full" cannot be done.
        free = self._free()
        self.floor_bytes = max(MiB, free - 64 * MiB)
        self.how = (
            f"no tmpfs ({(result.stderr or result.stdout).strip() or 'mount failed'}); the "
            f"hub's floor set to {self.floor_bytes // MiB} MiB, 64 MiB under the free space"
        )

    def _free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, variant: str) -> str:
        """Write the ballast; the variant actually applied."""
        if variant == "full" and self.mounted:
            self._write_until_full()
            return "full"
        target = self._free() - self.floor_bytes // 2 if self.mounted else (
            self._free() - self.floor_bytes + MiB
        )  # fmt: skip
        self._write(max(0, target))
        return "below_floor"

    def _write(self, size: int) -> None:
        chunk = b"\0" * MiB
        with self._ballast.open("ab") as fh:
            written = 0
            while written < size:
                n = min(len(chunk), size - written)
                try:
                    fh.write(chunk[:n])
                    fh.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return
                written += n

    def _write_until_full(self) -> None:
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (MiB, 4096):
                block = b"\0" * size
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self._ballast.unlink(missing_ok=True)

    def teardown(self) -> None:
        self.free()
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


# -- the broker -------------------------------------------------------------------------------


class Broker:
    """Mosquitto on ``127.0.0.1:port`` with persistence, killed and started again at will."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.host = "127.0.0.1"
        self.binary = find_mosquitto("mosquitto")
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "set_tcp_nodelay true",
                    "allow_anonymous true",
                    "max_queued_messages 100000",
                    f"listener {self.port} {self.host}",
                    "",
                ]
            )
        )
        with (self.dir / "mosquitto.log").open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(conf), stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        self.starts += 1
        await wait_for_port(self.host, self.port, 15)

    async def stop(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


# -- the hub ----------------------------------------------------------------------------------


class _LoggedHubProcess(HubProcess):
    """`edge run` whose stderr also goes to a file (the run's post-mortem)."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        super().__init__(config)
        self.env = env
        self.log_path = log_path

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        with self.log_path.open("a") as out:
            out.write(f"===== start {self.starts} (pid {process.pid}) =====\n")
            async for raw in process.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.log.append(line)
                out.write(line + "\n")


class SupervisedHub:
    """The hub process as systemd runs it: restarted after it exits by itself, and kept down
    for the scheduled time after a chaos SIGKILL.

    Calling contract: :meth:`supervise` runs as one task for the run; :meth:`kill` (any number
    of callers, one at a time per schedule) and :meth:`stop` come from other tasks.
    """

    def __init__(self, process: HubProcess) -> None:
        self.process = process
        self.kills = 0
        self.unplanned_exits: list[str] = []
        self.start_failures: list[str] = []
        self.ready = asyncio.Event()
        self._down = 0  # SIGKILL episodes keeping the hub down right now
        self._resume = asyncio.Event()
        self._resume.set()

    async def supervise(self) -> None:
        while True:
            await self._start()
            proc = self.process.process
            assert proc is not None
            code = await proc.wait()
            self.ready.clear()
            await self.process.kill()  # the process is gone: end its stderr reader
            if self._down:
                continue
            tail = " | ".join(list(self.process.log)[-3:])
            self.unplanned_exits.append(f"exit {code}: {tail}")
            log.warning("chaos: the hub exited by itself (%s); restarting", code)
            await asyncio.sleep(RESTART_AFTER_S)

    async def _start(self) -> None:
        while True:
            await self._resume.wait()
            try:
                await self.process.start(timeout=60)
            except AssertionError as exc:
                if not self._down:
                    self.start_failures.append(_why_not_started(str(exc)))
                    log.warning("chaos: the hub did not start: %s", self.start_failures[-1])
                    await asyncio.sleep(RESTART_AFTER_S)
                continue
            self.ready.set()
            return

    async def kill(self, down_s: float, while_down: Callable[[], object] | None = None) -> None:
        """SIGKILL whatever hub process is there (counted in :attr:`kills`); keep it down
        ``down_s``. ``while_down`` runs (in a thread) once the process it killed is gone, and
        only then: nothing else has the hub's files open."""
        proc = self.process.process
        alive = proc is not None and proc.returncode is None
        self._down += 1
        self._resume.clear()
        try:
            if alive:
                assert proc is not None
                proc.send_signal(signal.SIGKILL)
                self.kills += 1
                if while_down is not None:
                    await proc.wait()
                    await asyncio.to_thread(while_down)
            await asyncio.sleep(down_s)
        finally:
            self._down -= 1
            if not self._down:
                self._resume.set()

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.ready.wait()


def _why_not_started(text: str) -> str:
    """The first line of a failed start's message and the last error its log names (the
    frames of an exception group's traceback say nothing)."""
    lines = [line.strip(" |+-") for line in text.splitlines()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Group)\b", line)]
    return " ".join([lines[0] if lines else "", *errors[-1:]])[:300]


# -- the lanes --------------------------------------------------------------------------------


def _status(state: str, *, device: str | None = None, reason: str | None = None) -> bytes:
    status: dict[str, Any] = {"v": 1, "state": state}
    if device:
        status |= {"device_id": device, "software": "chaos-1"}
    if reason:
        status["reason"] = reason
    return json.dumps(status).encode()


@dataclass
class LaneFigures:
    rung: set[str] = field(default_factory=set)
    amounts: dict[str, Decimal] = field(default_factory=dict)
    """By txn id: what the sale adds up to in the cloud's record (lines less discounts)."""
    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    resends: int = 0
    retryable_errors: Counter[str] = field(default_factory=Counter)
    power_cycles: int = 0
    journal_resent: int = 0
    """Acknowledged sales sent again because the hub asked for the journals (a salvage, an
    unclean stop, a damaged payload)."""


class ChaosLane:
    """A register with a journal that survives its own power cuts.

    :meth:`powered` is one powered-on period: cancelling its task is pulling the plug (the
    MQTT connection drops, the last will says ``offline``); the sale in hand stays in
    :attr:`pending` and is re-sent, same id and content, by the next :meth:`powered`. Once
    :attr:`closing` is set it rings up nothing more, sets :attr:`idle` once nothing is in
    hand, and goes on answering the hub's journal requests until :attr:`off` is set.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        lane_id: str,
        seed: int,
        interval_s: float,
        hub_url: str,
        timeout_s: float = 2.0,
        feed_every_s: float = 2.0,
    ) -> None:
        self.lane_id = lane_id
        self._broker = broker
        self._rng = random.Random(seed)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._feed_every_s = feed_every_s
        self._topics = Topics(STORE_ID)
        self.device_id = f"CHAOS-{lane_id}".upper()
        self.number = 0
        self.pending: dict[str, Any] | None = None
        self.closing = False
        """Set by the run: ring up nothing more once the sale in hand is acknowledged."""
        self.idle = asyncio.Event()
        """Closing, and nothing in hand."""
        self.off = asyncio.Event()
        """Set by the run after the drain: :meth:`powered` returns."""
        self.figures = LaneFigures()
        self.follower = FeedFollower(hub_url, lane_id)
        self.journal = Journal()
        self._resend_requests: asyncio.Queue[Message] | None = None

    def txn_id(self, number: int) -> str:
        """The id of the lane's sale ``number`` (as :func:`make_sale` names it)."""
        return f"{STORE_ID}-{self.lane_id}-{number:07d}"

    async def powered(self, http: aiohttp.ClientSession) -> None:
        async with asyncio.TaskGroup() as tg:
            follow = tg.create_task(self._follow(http), name=f"{self.lane_id}-feed")
            try:
                await self._sell()
            finally:
                follow.cancel()

    async def _sell(self) -> None:
        attempt = 0
        while not self.off.is_set():
            try:
                async with self._connect() as requester:
                    attempt = 0
                    while not self.off.is_set():
                        if self.closing and self.pending is None:
                            # Nothing more to ring up; still on, as a register stays on: it
                            # answers the hub's re-send requests until the run ends.
                            self.idle.set()
                            self.figures.journal_resent += await self.journal.answer(
                                self._resend_requests, lambda txn: self._submit(requester, txn)
                            )
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(REQUEST_POLL_S):
                                    await self.off.wait()
                            continue
                        if self.pending is None:
                            self.number += 1
                            self.pending = make_sale(
                                store_id=STORE_ID,
                                lane_id=self.lane_id,
                                number=self.number,
                                rng=self._rng,
                            )
                            self.figures.rung.add(self.pending["txn_id"])
                            totals = self.pending["totals"]
                            self.figures.amounts[self.pending["txn_id"]] = Decimal(
                                totals["subtotal"]
                            ) - Decimal(totals["discount_total"])
                        self.figures.journal_resent += await self.journal.answer(
                            self._resend_requests, lambda txn: self._submit(requester, txn)
                        )
                        if await self._submit(requester, self.pending):
                            self.pending = None
                            if not self.closing:
                                await asyncio.sleep(self._rng.expovariate(1 / self._interval_s))
                    await requester.publish(
                        self._topics.lane_status(self.lane_id), _status("offline"), retain=True
                    )
            except (BusError, OSError) as exc:  # the broker is gone: reconnect
                log.debug("chaos lane %s: %s; reconnecting", self.lane_id, exc)
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
                attempt += 1

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Requester]:
        status = self._topics.lane_status(self.lane_id)
        async with (
            Requester(
                self._broker.host,
                self._broker.port,
                client_id=f"chaos-{self.lane_id}",
                reply_topic=self._topics.lane_reply(self.lane_id),
                will=(status, _status("offline", reason="lost")),
                keepalive=5,
            ) as requester,
            requester.subscription(self._topics.journal_resend) as requests,
        ):
            self._resend_requests = requests
            await requester.publish(status, _status("online", device=self.device_id), retain=True)
            yield requester

    async def _submit(self, requester: Requester, txn: dict[str, Any]) -> bool:
        """True once the sale is acknowledged or refused for good."""
        topic = self._topics.lane_rpc(self.lane_id, "txn.submit")
        try:
            reply = await requester.request(topic, txn, timeout=self._timeout_s)
        except TimeoutError:
            self.figures.resends += 1
            return False
        if reply.ok:
            self.figures.acked.add(txn["txn_id"])
            self.journal.record(txn)
            return True
        assert reply.error is not None
        if not reply.error.retryable:
            self.figures.refused[txn["txn_id"]] = reply.error.code
            return True
        self.figures.retryable_errors[reply.error.code] += 1
        self.figures.resends += 1
        await asyncio.sleep(0.2)  # a register backs off before it re-sends from its journal
        return False

    async def _follow(self, http: aiohttp.ClientSession) -> None:
        while True:
            await self.pull(http)
            await asyncio.sleep(self._feed_every_s)

    async def pull(self, http: aiohttp.ClientSession) -> bool:
        """Fetch the feed until current; False if the hub could not be read (kept as was)."""
        try:
            async with asyncio.timeout(15):
                await self.follower.pull(http)
        except (FeedRefused, IncompleteFeed, aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return True


# -- the run ----------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    options: ChaosOptions
    clean: bool
    findings: list[Finding]
    tally: Tally
    injected: Counter[str]
    """Faults really applied, by ``kind:variant``."""
    scheduled: int
    drain_s: float | None
    """From the faults stopping to an empty outbox (None: it did not empty in time)."""
    figures: dict[str, Any]
    workdir: Path

    def as_json(self) -> dict[str, Any]:
        by_kind: Counter[str] = Counter()
        for label, n in self.injected.items():
            by_kind[label.split(":", 1)[0]] += n
        return {
            "verdict": "clean" if self.clean else "broken",
            "options": {
                "duration_s": self.options.duration_s,
                "seed": self.options.seed,
                "lanes": self.options.lanes,
                "faults": [k.value for k in self.options.kinds],
                "rate_per_min": self.options.rate_per_min,
                "sale_every_s": self.options.sale_every_s,
                "drain_timeout_s": self.options.drain_timeout_s,
            },
            "faults": {
                "scheduled": self.scheduled,
                "injected": sum(self.injected.values()),
                "by_kind": dict(sorted(by_kind.items())),
                "by_variant": dict(sorted(self.injected.items())),
            },
            "transactions": {
                "sent": self.tally.sent,
                "acked": self.tally.acked,
                "delivered": self.tally.delivered,
                "parked": self.tally.parked,
                "duplicates": self.tally.duplicates,
                "lost": self.tally.lost,
                "stuck": self.tally.stuck,
                "altered": self.tally.altered,
                "amounts_checked": self.tally.amounts_checked,
            },
            "drain_s": self.drain_s,
            "findings": [
                {"kind": f.kind.value, "subject": f.subject, "detail": f.detail}
                for f in self.findings
            ],
            **self.figures,
            "workdir": str(self.workdir),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def to_toml(data: dict[str, Any]) -> str:
    """Plain data as TOML (tables for dicts, inline tables inside lists; None left out)."""

    def key(name: str) -> str:
        return json.dumps(name)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            inner = ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items() if x is not None)
            return "{" + inner + "}"
        return json.dumps(str(v))

    lines: list[str] = []

    def table(node: dict[str, Any], path: list[str]) -> None:
        if path:
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        for k, v in node.items():
            if v is not None and not isinstance(v, dict):
                lines.append(f"{key(k)} = {value(v)}")
        for k, v in node.items():
            if isinstance(v, dict):
                table(v, [*path, k])

    table(data, [])
    return "\n".join(lines) + "\n"


class ChaosRun:
    def __init__(self, options: ChaosOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.injected: Counter[str] = Counter()
        self.rejected: set[str] = set()
        self.catalogue_edits = 0
        self._rng = random.Random(f"{options.seed}:harness")
        self._t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {text}", file=self.out, flush=True)

    async def run(self) -> ChaosResult:
        o = self.options
        workdir = o.workdir or Path(tempfile.mkdtemp(prefix="edge-chaos-"))
        workdir.mkdir(parents=True, exist_ok=True)
        disk = StateDisk(workdir / "state", o.disk_mb * MiB, o.floor_mb * MiB)
        await asyncio.to_thread(disk.setup)
        try:
            result = await self._run(workdir, disk)
        finally:
            await asyncio.to_thread(disk.teardown)
        if result.clean and not o.keep and o.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return result

    async def _run(self, workdir: Path, disk: StateDisk) -> ChaosResult:
        o = self.options
        schedule = draw_schedule(
            seed=o.seed,
            duration_s=o.duration_s,
            kinds=o.kinds,
            rate_per_min=o.rate_per_min,
            lanes=o.lanes,
        )
        (workdir / "schedule.json").write_text(json.dumps(_plain(schedule), indent=1))
        self.say(
            f"chaos: seed {o.seed}, {o.duration_s:.0f} s, {o.lanes} lanes, "
            f"{len(schedule)} faults scheduled ({', '.join(k.value for k in o.kinds)}); "
            f"state disk: {disk.how}; workdir {workdir}"
        )
        broker = Broker(workdir / "broker", _free_port())
        await broker.start()
        sim = NetSuiteSim(
            catalogue_size=o.catalogue_size, latency_s=0.05, faults=FaultPlan(seed=o.seed)
        )
        base_latency = sim.latency_s
        base_concurrency = sim.concurrency
        try:
            async with (
                run_netsuite_sim(sim) as server,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
            ):
                host, port = server.url.removeprefix("http://").rsplit(":", 1)
                cloud = NetSuiteCloud(sim, host, int(port), server.url)
                async with WanProxy(cloud.host, cloud.port) as wan:
                    http_port = _free_port()
                    config = self._write_config(workdir, disk, broker, cloud, wan, http_port)
                    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
                    hub = SupervisedHub(
                        _LoggedHubProcess(config, env, workdir / "hub.log"),
                    )
                    hub_url = f"http://127.0.0.1:{http_port}"

                    def undo_faults() -> None:
                        wan.mode = "pass"
                        wan.latency_s = 0.0
                        sim.faults.profile = FaultProfile()
                        sim.faults.clear_script()
                        sim.latency_s = base_latency
                        sim.concurrency = base_concurrency
                        sim.over_limit_status = 429

                    return await self._trade(
                        workdir, disk, broker, cloud, wan, hub, hub_url, http, schedule,
                        undo_faults,
                    )  # fmt: skip
        finally:
            await broker.stop(signal.SIGTERM)

    def _write_config(
        self,
        workdir: Path,
        disk: StateDisk,
        broker: Broker,
        cloud: NetSuiteCloud,
        wan: WanProxy,
        http_port: int,
    ) -> Path:
        raw: dict[str, Any] = {
            "store_id": STORE_ID,
            "hub_id": "hub-chaos",
            "state_dir": str(disk.path),
            "broker": {"mode": "external", "host": broker.host, "port": broker.port},
            "bus": {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "keepalive_s": 5},
            "http": {"host": "127.0.0.1", "port": http_port},
            "shutdown": {"grace_s": 2.0},
            "log": {"level": "INFO"},
            "outbox": {
                "min_free_bytes": disk.floor_bytes,
                "retry_base_s": 0.2,
                "retry_cap_s": 2.0,
                "breaker_cooldown_s": 0.5,
                "breaker_cooldown_cap_s": 3.0,
                "idle_poll_s": 0.5,
            },
            "uplink": {"netsuite": {"timeout_s": 2.0}},
            "catalogue": {"interval_s": 5.0, "retry_min_s": 1.0, "timeout_s": 5.0},
        }
        settings = cloud.configure(settings_from_dict(raw, "chaos"), f"http://127.0.0.1:{wan.port}")
        plain = msgspec.to_builtins(settings, enc_hook=str)
        path = workdir / "chaos.toml"
        path.write_text(to_toml(plain))
        settings_from_dict(plain, str(path))  # what the hub will read must be valid
        return path

    async def _trade(
        self,
        workdir: Path,
        disk: StateDisk,
        broker: Broker,
        cloud: NetSuiteCloud,
        wan: WanProxy,
        hub: SupervisedHub,
        hub_url: str,
        http: aiohttp.ClientSession,
        schedule: list[Episode],
        undo_faults: Callable[[], None],
    ) -> ChaosResult:
        o = self.options
        lanes = [
            ChaosLane(
                broker=broker,
                lane_id=f"lane-{n:02d}",
                seed=o.seed * 1000 + n,
                interval_s=o.sale_every_s,
                hub_url=hub_url,
            )
            for n in range(1, o.lanes + 1)
        ]
        power: dict[str, asyncio.Task[None]] = {}
        lanes_off: dict[str, int] = {}

        def switch_on(lane: ChaosLane) -> None:
            power[lane.lane_id] = asyncio.create_task(lane.powered(http), name=lane.lane_id)

        async def switch_off(lane: ChaosLane) -> None:
            task = power[lane.lane_id]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        started = time.monotonic()
        supervisor = asyncio.create_task(hub.supervise(), name="hub-supervisor")
        episodes: list[asyncio.Task[None]] = []
        edits: asyncio.Task[None] | None = None
        drain_s: float | None = None
        try:
            await hub.wait_ready(90)
            self.say(f"hub ready ({hub_url}); lanes start trading")
            for lane in lanes:
                switch_on(lane)
            edits = asyncio.create_task(self._edit_catalogue(cloud.sim), name="hq-edits")

            async def apply(episode: Episode) -> None:
                await asyncio.sleep(max(0.0, started + episode.at_s - time.monotonic()))
                await self._apply(
                    episode, hub, broker, wan, cloud.sim, disk, lanes, lanes_off,
                    switch_on, switch_off,
                )  # fmt: skip

            episodes = [asyncio.create_task(apply(e), name=e.label) for e in schedule]
            progress = asyncio.create_task(self._progress(lanes, cloud, hub), name="progress")
            await asyncio.sleep(max(0.0, started + o.duration_s - time.monotonic()))
            progress.cancel()

            # 1. The faults stop.
            stopped_at = time.monotonic()
            for task in (*episodes, edits):
                task.cancel()
            await asyncio.gather(*episodes, edits, return_exceptions=True)
            undo_faults()
            await asyncio.to_thread(disk.free)
            if not broker.running:
                await broker.start()
            await hub.wait_ready(120)
            for lane in lanes:
                if power[lane.lane_id].done():
                    switch_on(lane)
            self.say("faults stopped; the lanes finish the sale in hand")
            # 2. The lanes stop ringing up and finish the sale in hand (still on: they answer
            # the hub's journal requests, as registers do).
            for lane in lanes:
                lane.closing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(o.drain_timeout_s):
                    await asyncio.gather(*(lane.idle.wait() for lane in lanes))
            # 3. The backlog drains.
            drain_s = await self._drain(http, hub_url, stopped_at, o.drain_timeout_s)
            for lane in lanes:
                lane.off.set()
            tasks = list(power.values())
            _, late = await asyncio.wait(tasks, timeout=o.drain_timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.say(
                "outbox empty "
                + (f"{drain_s:.1f} s after the faults stopped" if drain_s is not None
                   else f"NOT within {o.drain_timeout_s:.0f} s")
            )  # fmt: skip
            # 4. The catalogue settles.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(f"{hub_url}/api/v1/catalogue/sync?wait=30"):
                    pass
            for lane in lanes:
                await lane.pull(http)
            # 5. The evidence (from a hub that is up: a killed one cannot answer).
            await hub.wait_ready(120)
            outbox = await self._outbox_items(http, hub_url, lanes, cloud)
            hub_status = await _get_json(http, f"{hub_url}/api/v1/outbox")
        finally:
            for task in (*episodes, *power.values(), *([edits] if edits else [])):
                task.cancel()
            supervisor.cancel()
            await asyncio.gather(*episodes, *power.values(), supervisor, return_exceptions=True)
            await asyncio.to_thread(disk.free)
            exit_code: int | None = None
            if hub.process.process is not None and hub.process.process.returncode is None:
                exit_code = await hub.process.stop()
        hub_catalogue = await self._hub_catalogue(disk.path / "catalogue.db", workdir)
        return self._verdict(
            workdir, lanes, cloud, outbox, hub, broker, hub_catalogue, drain_s, len(schedule),
            exit_code, hub_status, disk,
        )  # fmt: skip

    async def _apply(
        self,
        episode: Episode,
        hub: SupervisedHub,
        broker: Broker,
        wan: WanProxy,
        sim: NetSuiteSim,
        disk: StateDisk,
        lanes: list[ChaosLane],
        lanes_off: dict[str, int],
        switch_on: Callable[[ChaosLane], None],
        switch_off: Callable[[ChaosLane], Any],
    ) -> None:
        kind, variant, duration = episode.kind, episode.variant, episode.duration_s
        label = episode.label
        if kind is FaultKind.HUB_KILL:
            before = hub.kills
            try:
                await hub.kill(duration)
            finally:  # counted even when the faults stop during the down time
                self.injected[label] += hub.kills - before
        elif kind is FaultKind.BROKER_RESTART:
            if broker.running:
                await broker.stop(signal.SIGKILL if variant == "sigkill" else signal.SIGTERM)
                self.injected[label] += 1
                try:
                    await asyncio.sleep(duration)
                finally:
                    await broker.start()
        elif kind is FaultKind.WAN_FLAP:
            self.injected[label] += 1
            try:
                if variant == "latency":
                    wan.latency_s = self._rng.uniform(0.3, 1.5)
                else:
                    wan.mode = variant  # type: ignore[assignment]
                await asyncio.sleep(duration)
            finally:
                wan.mode = "pass"
                wan.latency_s = 0.0
        elif kind is FaultKind.CLOUD_FAULT:
            self.injected[label] += 1
            saved = (sim.latency_s, sim.concurrency, sim.over_limit_status)
            try:
                self._cloud_fault(sim, variant)
                await asyncio.sleep(duration)
            finally:
                sim.faults.profile = FaultProfile()
                sim.latency_s, sim.concurrency, sim.over_limit_status = saved
        elif kind is FaultKind.DISK_FULL:
            applied = await asyncio.to_thread(disk.fill, variant)
            self.injected[f"{kind}:{applied}"] += 1
            try:
                await asyncio.sleep(duration)
            finally:
                await asyncio.to_thread(disk.free)
        elif kind is FaultKind.LANE_FLAP:
            assert episode.lane is not None
            lane = lanes[episode.lane]
            await switch_off(lane)
            lane.figures.power_cycles += 1
            self.injected[label] += 1
            try:
                await asyncio.sleep(duration)
            finally:
                switch_on(lane)
        elif kind is FaultKind.DISK_DAMAGE:
            outbox = disk.path / "outbox.db"
            damaged: list[object | None] = []
            rng = self._rng
            how = {"bit_rot": flip_a_pending_amount, "column_rot": flip_a_pending_dependency}
            damage_with = how.get(variant, damage_a_page)
            try:
                await hub.kill(duration, lambda: damaged.append(damage_with(outbox, rng)))
            finally:
                self.injected[label] += sum(1 for done in damaged if done is not None)
        elif kind is FaultKind.REJECTION:
            assert episode.lane is not None
            lane = lanes[episode.lane]
            txn = lane.txn_id(lane.number + episode.ahead)
            sim.reject(
                external_id(txn),
                code="INVALID_FLD_VALUE",
                detail=f"Chaos: a business rule refuses {txn} (simulated).",
            )
            self.rejected.add(txn)
            self.injected[label] += 1

    def _cloud_fault(self, sim: NetSuiteSim, variant: str) -> None:
        p = self._rng.uniform(0.3, 0.8)
        if variant == "5xx":
            sim.faults.profile = FaultProfile(server_error=p)
        elif variant == "429":
            sim.faults.profile = FaultProfile(throttle=p)
        elif variant == "401_under_load":
            # NetSuite's quirk (ref §6): over the account's concurrency limit it answers 401
            # INVALID_LOGIN. One slot for the hub's five makes most requests over the limit.
            sim.over_limit_status = 401
            sim.concurrency = 1
            sim.latency_s = 0.2
        elif variant == "slow":
            sim.latency_s = self._rng.uniform(0.5, 2.5)  # around the hub's 2 s timeout
            sim.faults.profile = FaultProfile(latency_jitter_s=1.0)
        elif variant == "timeout":
            sim.faults.profile = FaultProfile(timeout=p / 2)
        elif variant == "reset":
            sim.faults.profile = FaultProfile(reset=p)
        elif variant == "lost_response":
            sim.faults.profile = FaultProfile(commit_then_lose=p)
        else:  # pragma: no cover - the schedule only draws the variants above
            raise ValueError(f"unknown cloud fault {variant!r}")

    async def _edit_catalogue(self, sim: NetSuiteSim) -> None:
        """HQ edits the catalogue as the store trades: prices, names, retired and new items
        (never the items the lanes sell, so that every sale stays valid)."""
        rng = random.Random(f"{self.options.seed}:hq-edits")
        sold = set(sim.active_item_ids(len(CATALOGUE) + 1))
        while True:
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            ids = [i for i in range(1, self.options.catalogue_size + 1) if i not in sold]
            item = rng.choice(ids)
            now = time.time()
            op = rng.choice(("price", "price", "rename", "deactivate", "add"))
            if not sim.catalogue.exists(item):
                continue
            if op == "price":
                sim.catalogue.set_price(item, 1, Decimal(rng.randint(50, 5000)) / 100, now)
                sim.catalogue.update_item(item, now, salesdescription=f"price edit {now:.0f}")
            elif op == "rename":
                sim.catalogue.update_item(item, now, displayname=f"Renamed {item} {now:.3f}")
            elif op == "deactivate":
                sim.catalogue.deactivate(item, now)
            else:
                sim.catalogue.add_item(now, displayname=f"Chaos item {self.catalogue_edits}")
            self.catalogue_edits += 1

    async def _progress(
        self, lanes: list[ChaosLane], cloud: NetSuiteCloud, hub: SupervisedHub
    ) -> None:
        while True:
            await asyncio.sleep(10)
            acked = sum(len(lane.figures.acked) for lane in lanes)
            self.say(
                f"acked {acked}, in the cloud {cloud.recorded()}, "
                f"faults {sum(self.injected.values())}, hub starts {hub.process.starts}, "
                f"catalogue edits {self.catalogue_edits}"
            )

    async def _drain(
        self, http: aiohttp.ClientSession, hub_url: str, since: float, timeout: float
    ) -> float | None:
        """Seconds from ``since`` until the hub's outbox holds nothing pending and no sale
        parked for a damaged payload (its lane's re-send repairs it: None when that or the
        drain takes longer than ``timeout``). Polls the hub's status, as a technician's `edge
        outbox status` would."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            status = await _get_json(http, f"{hub_url}/api/v1/outbox")
            asked = (status or {}).get("journal_request") or {}
            if (
                status is not None
                and int(status.get("pending", 1)) == 0
                and "damaged payload" not in asked.get("reason", "")
            ):
                return time.monotonic() - since
            await asyncio.sleep(0.25)
        return None

    async def _outbox_items(
        self,
        http: aiohttp.ClientSession,
        hub_url: str,
        lanes: list[ChaosLane],
        cloud: NetSuiteCloud,
    ) -> dict[str, OutboxRecord]:
        """Every pending and parked item, and the status of each acknowledged transaction the
        cloud does not hold (from the hub's HTTP API)."""
        held: dict[str, OutboxRecord] = {}
        for status in ("pending", "parked"):
            after = 0
            for _ in range(10_000):  # bounded paging
                page = await _get_json_patiently(
                    http, f"{hub_url}/api/v1/outbox/items?status={status}&limit=1000&after={after}"
                )
                items = page.get("items", [])
                for item in items:
                    held[item["key"]] = OutboxRecord(item["status"], _explanation(item))
                    after = max(after, int(item["seq"]))
                if len(items) < 1000:
                    break
        acked = set().union(*(lane.figures.acked for lane in lanes))
        for txn in sorted(acked - set(held)):
            if cloud.count(txn):
                continue
            item = await _get_json_patiently(http, f"{hub_url}/api/v1/outbox/items/{txn}")
            if "status" in item:  # else 404: the hub has no such item
                held[txn] = OutboxRecord(item["status"], _explanation(item))
        return held

    async def _hub_catalogue(self, path: Path, workdir: Path) -> Catalogue | None:
        """The hub's catalogue as its own file holds it (read after the hub stopped)."""
        copy = workdir / "catalogue-final.db"

        def copy_files() -> bool:
            if not path.exists():
                return False
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{path}{suffix}")
                if source.exists():
                    shutil.copyfile(source, f"{copy}{suffix}")
            return True

        if not await asyncio.to_thread(copy_files):
            return None
        store = CatalogueStore(copy)
        await store.open()
        try:
            cursor, records = await hub_records(store)
        finally:
            await store.close()
        return Catalogue(cursor, records)

    def _verdict(
        self,
        workdir: Path,
        lanes: list[ChaosLane],
        cloud: NetSuiteCloud,
        outbox: dict[str, OutboxRecord],
        hub: SupervisedHub,
        broker: Broker,
        hub_catalogue: Catalogue | None,
        drain_s: float | None,
        scheduled: int,
        exit_code: int | None,
        hub_status: dict[str, Any] | None,
        disk: StateDisk,
    ) -> ChaosResult:
        rung = frozenset().union(*(lane.figures.rung for lane in lanes))
        by_eid = {external_id(txn).lower(): txn for txn in rung}
        cloud_counts: Counter[str] = Counter()
        cloud_amounts: dict[str, Decimal] = {}
        unknown: set[str] = set()
        for (record_type, eid), n in cloud.sim.ledger().items():
            if record_type.lower() not in PRIMARY_RECORDS:
                continue
            if eid in by_eid:
                cloud_counts[by_eid[eid]] += n
                if (record := cloud.sim.record(record_type, eid)) is not None:
                    cloud_amounts[by_eid[eid]] = record.total
            else:
                unknown.add(eid)
        lane_catalogues = {
            lane.lane_id: Catalogue(
                lane.follower.cursor,
                {k: _canonical(v) for k, v in lane.follower.records.items()},
            )
            for lane in lanes
        }
        records = Records(
            rung=rung,
            acked=frozenset().union(*(lane.figures.acked for lane in lanes)),
            cloud=dict(cloud_counts),
            cloud_unknown=frozenset(unknown),
            outbox=outbox,
            rejected=frozenset(self.rejected),
            refused={k: v for lane in lanes for k, v in lane.figures.refused.items()},
            hub_catalogue=hub_catalogue,
            lane_catalogues=lane_catalogues if hub_catalogue is not None else {},
            rung_amounts={k: v for lane in lanes for k, v in lane.figures.amounts.items()},
            cloud_amounts=cloud_amounts,
            hub_exits=tuple(hub.unplanned_exits),
            hub_start_failures=tuple(hub.start_failures),
        )
        findings, tally = check(records)
        if drain_s is None and not any(f.kind == "stuck" for f in findings):
            # Not a finding of the records (nothing acked is stuck), but say so.
            log.warning("chaos: the outbox did not report empty within the drain time")
        retryable: Counter[str] = Counter()
        for lane in lanes:
            retryable.update(lane.figures.retryable_errors)
        figures = {
            "hub": {
                "starts": hub.process.starts,
                "sigkills": hub.kills,
                "unplanned_exits": hub.unplanned_exits,
                "start_failures": hub.start_failures,
                "final_exit_code": exit_code,
            },
            "broker_starts": broker.starts,
            "lanes": {
                "resends": sum(lane.figures.resends for lane in lanes),
                "retryable_errors": dict(retryable),
                "power_cycles": sum(lane.figures.power_cycles for lane in lanes),
                "journal_resent": sum(lane.figures.journal_resent for lane in lanes),
                "not_acked_at_end": sum(1 for lane in lanes if lane.pending is not None),
            },
            "cloud": {
                "requests": cloud.sim.requests,
                "responses": {str(k): v for k, v in sorted(cloud.sim.responses.items())},
                "rejections_set": len(self.rejected),
            },
            "catalogue": {
                "edits": self.catalogue_edits,
                "hub_cursor": hub_catalogue.cursor if hub_catalogue else None,
                "hub_records": len(hub_catalogue.records) if hub_catalogue else 0,
                "lanes_equal": sum(
                    1 for c in lane_catalogues.values() if hub_catalogue and c == hub_catalogue
                ),
            },
            "outbox_at_end": hub_status,
            "state_disk": disk.how,
        }
        return ChaosResult(
            options=self.options,
            clean=not findings,
            findings=findings,
            tally=tally,
            injected=self.injected,
            scheduled=scheduled,
            drain_s=drain_s,
            figures=figures,
            workdir=workdir,
        )


def _canonical(data: bytes) -> bytes:
    return msgspec.json.encode(msgspec.json.decode(data))


def _plain(schedule: list[Episode]) -> list[dict[str, Any]]:
    return [
        {
            "at_s": e.at_s,
            "kind": e.kind.value,
            "variant": e.variant,
            "duration_s": e.duration_s,
            "lane": e.lane,
            "ahead": e.ahead,
        }
        for e in schedule
    ]


def _explanation(item: dict[str, Any]) -> str | None:
    """Why an outbox item is where it is: its reason and the cloud's error body, if any."""
    parts = [str(part) for part in (item.get("last_error"), item.get("error_detail")) if part]
    return " | ".join(parts) or None


async def _get_json_patiently(http: aiohttp.ClientSession, url: str, timeout: float = 60) -> Any:
    """A GET of the hub's API that must answer (evidence): retried while the hub cannot."""
    async with asyncio.timeout(timeout):
        # Polling another process's HTTP API: there is no event to wait on across processes.
        while (answer := await _get_json(http, url)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    return answer


async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    """One GET of the hub's API; None while the hub cannot answer (killed, starting)."""
    try:
        async with asyncio.timeout(10), http.get(url) as response:
            if response.status >= 500:
                return None
            return await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
