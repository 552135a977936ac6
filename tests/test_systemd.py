"""systemd/: the hub's unit, the broker's drop-in, sysusers.d and tmpfiles.d, checked with this
machine's systemd tools, and the hub's side of the contract (sd_notify, the sandbox) checked on a
real `edge run` process.

What each test prevents:

- a unit systemd would reject or warn about (`systemd-analyze verify`);
- hardening drifting above the exposure budget of issue 7 (`systemd-analyze security`);
- a sysusers/tmpfiles line that does not parse, or gives the state directory the wrong owner;
- a hub that never says READY=1 (systemd kills it after TimeoutStartSec) or stops pinging the
  watchdog (killed every WatchdogSec);
- a sandbox that kills the hub: a system call outside SystemCallFilter= is answered with SIGSYS,
  a socket family outside RestrictAddressFamilies= with EAFNOSUPPORT, a writable+executable
  mapping under MemoryDenyWriteExecute= with EPERM. systemd cannot run inside this container, so
  the hub (with its managed mosquitto) runs under strace and every call it makes is held against
  the unit's own lists, expanded by `systemd-analyze syscall-filter`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.sim.process import write_config

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
HUB_UNIT = UNITS / "edge-hub.service"
INSTALLED_EDGE = "/opt/store-edge/bin/edge"
EDGE = str(Path(sys.executable).parent / "edge")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
DEBIAN_MOSQUITTO_UNIT = Path("/lib/systemd/system/mosquitto.service")
EXPOSURE_BUDGET = 2.0

needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _hub_unit_copy(directory: Path) -> Path:
    """The unit with ExecStart pointed at this checkout's `edge`: `verify` checks that the
    binary exists, and /opt/store-edge is only there on the appliance."""
    text = HUB_UNIT.read_text()
    assert f"ExecStart={INSTALLED_EDGE} " in text
    copy = directory / HUB_UNIT.name
    copy.write_text(text.replace(INSTALLED_EDGE, EDGE))
    return copy


def _unit_values(key: str) -> list[str]:
    """Every value of ``key=`` in the hub's unit, in order (comments skipped)."""
    values = []
    for line in HUB_UNIT.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key and not line.lstrip().startswith("#"):
            values.append(value.strip())
    return values


# -- systemd-analyze ---------------------------------------------------------------------------


@needs_analyze
def test_hub_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    result = _run("systemd-analyze", "verify", str(_hub_unit_copy(tmp_path)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.strip() == "", output


@needs_analyze
@pytest.mark.skipif(
    not DEBIAN_MOSQUITTO_UNIT.exists(), reason="Debian's mosquitto package is not installed"
)
def test_broker_drop_in_verifies_on_debians_mosquitto_unit(tmp_path: Path) -> None:
    """The drop-in is read with the unit it extends (SYSTEMD_UNIT_PATH puts both first on the
    search path); an unknown or misspelt key would be printed here."""
    shutil.copy(DEBIAN_MOSQUITTO_UNIT, tmp_path / "mosquitto.service")
    shutil.copytree(UNITS / "mosquitto.service.d", tmp_path / "mosquitto.service.d")
    env = {"SYSTEMD_UNIT_PATH": f"{tmp_path}:"}
    result = _run("systemd-analyze", "verify", str(tmp_path / "mosquitto.service"), env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.strip() == "", output
    # The drop-in really was applied: the exposure falls from Debian's 9.6 (UNSAFE).
    security = _run(
        "systemd-analyze",
        "security",
        "--offline=yes",
        "--no-pager",
        str(tmp_path / "mosquitto.service"),
        env=env,
    )
    assert _exposure(security.stdout + security.stderr, "mosquitto.service") < 5.0


def _exposure(output: str, unit: str) -> float:
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+(?:\.\d+)?)", output)
    assert match, output
    return float(match.group(1))


@needs_analyze
def test_hub_unit_exposure_within_budget(tmp_path: Path) -> None:
    """Issue 7 item 6: `systemd-analyze security` exposure of edge-hub.service <= 2.0."""
    result = _run(
        "systemd-analyze", "security", "--offline=yes", "--no-pager", str(_hub_unit_copy(tmp_path))
    )
    exposure = _exposure(result.stdout + result.stderr, "edge-hub.service")
    assert exposure <= EXPOSURE_BUDGET, result.stdout


def test_hub_unit_promises_what_the_hub_does() -> None:
    """The directives the hub's code relies on: Type=notify with the watchdog (edge/systemd.py),
    the main process alone may notify (not its mosquitto child), the secrets key credential by
    the name edge/secrets.py reads, and no restart loop on a configuration error (exit 2)."""
    assert _unit_values("Type") == ["notify"]
    assert _unit_values("NotifyAccess") == ["main"]
    assert _unit_values("WatchdogSec") == ["30s"]
    assert _unit_values("Restart") == ["on-failure"]
    assert _unit_values("RestartPreventExitStatus") == ["2"]
    # The names edge/secrets.py and edge/security/identity.py read.
    assert _unit_values("LoadCredentialEncrypted") == ["edge-secrets-key", "edge-ca-key"]
    assert _unit_values("StateDirectory") == ["edge"]
    assert _unit_values("User") == ["edge"]


# -- sysusers.d and tmpfiles.d -------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers or systemd-tmpfiles not installed",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles.d ownership needs root to chown")
def test_sysusers_and_tmpfiles_build_the_accounts_and_directories(tmp_path: Path) -> None:
    """Applied to an empty root as the image build applies them: the edge user exists, is in
    dialout and lp, and owns a 0700 state directory; /etc/edge is there for the config file."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = _run("systemd-sysusers", f"--root={root}", str(UNITS / "sysusers.d" / "edge.conf"))
    assert sysusers.returncode == 0, sysusers.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
    }
    edge = passwd["edge"]
    assert edge[5] == "/var/lib/edge"
    assert edge[6].endswith("nologin")
    assert int(edge[2]) < 1000  # a system user
    for group in ("dialout", "lp"):
        assert "edge" in groups[group][3].split(","), groups[group]

    tmpfiles = _run(
        "systemd-tmpfiles",
        f"--root={root}",
        "--create",
        str(UNITS / "tmpfiles.d" / "edge.conf"),
    )
    assert tmpfiles.returncode == 0, tmpfiles.stderr
    state = (root / "var/lib/edge").stat()
    assert (state.st_mode & 0o777, state.st_uid, state.st_gid) == (
        0o700,
        int(edge[2]),
        int(edge[3]),
    )
    config = (root / "etc/edge").stat()
    assert (config.st_mode & 0o777, config.st_uid) == (0o755, 0)
    for credstore in ("etc/credstore", "etc/credstore.encrypted"):
        assert (root / credstore).stat().st_mode & 0o777 == 0o700


# -- the hub's side: sd_notify and the sandbox ------------------------------------------------


def _hub_config(tmp_path: Path, free_port: Callable[[], int]) -> Path:
    """A managed-mode hub (it starts its own mosquitto, as on the appliance) on loopback."""
    return write_config(
        tmp_path / "edge.toml",
        {
            "store_id": "s1",
            "hub_id": "hub-systemd",
            "state_dir": str(tmp_path / "state"),
            "broker": {"mode": "managed", "port": free_port(), "lan_port": free_port()},
            "http": {"port": 0},
            "shutdown": {"grace_s": 2.0},
        },
    )


class NotifySocket:
    """What systemd's manager holds for a Type=notify service: an AF_UNIX datagram socket
    whose path is the service's $NOTIFY_SOCKET, with SO_PASSCRED so that each message comes with
    its sender's PID (systemd drops messages from other PIDs under NotifyAccess=main)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.seen: list[tuple[str, int]] = []

    @property
    def states(self) -> list[str]:
        return [state for state, _ in self.seen]

    def senders(self, state: str) -> set[int]:
        return {pid for seen, pid in self.seen if seen == state}

    async def until(self, state: str, count: int = 1) -> None:
        while self.states.count(state) < count:
            data, pid = await self._receive()
            self.seen.extend((line, pid) for line in data.decode().split("\n"))

    async def _receive(self) -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                await self._readable(loop)
                continue
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, _uid, _gid = struct.unpack("iII", payload[:12])
                    return data, pid
            raise AssertionError("notify message without SCM_CREDENTIALS")

    async def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(self.sock, wake)
        try:
            await readable
        finally:
            loop.remove_reader(self.sock)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    notify = NotifySocket(tmp_path / "notify.sock")
    yield notify
    notify.close()


async def _run_hub_until_stopped(
    argv: list[str], notify: NotifySocket, env: dict[str, str]
) -> tuple[int, str, int]:
    """Start the hub, wait for READY=1 and two watchdog pings, SIGTERM the process that said
    READY=1 (the main PID, as `systemctl stop` does), wait for STOPPING=1 and the exit.
    Returns (exit code, stderr, PID of the process started)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env, "NOTIFY_SOCKET": str(notify.path)},
    )
    assert process.stderr is not None
    stderr = asyncio.ensure_future(process.stderr.read())
    exited = asyncio.ensure_future(process.wait())
    try:
        async with asyncio.timeout(60):
            ready = asyncio.ensure_future(notify.until("READY=1"))
            await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                raise AssertionError(f"hub exited before READY=1:\n{(await stderr).decode()}")
            await notify.until("WATCHDOG=1", count=2)
            # The hub says READY=1 with STATUS=ready in one message (edge/app.py).
            (main_pid,) = notify.senders("STATUS=ready")
            os.kill(main_pid, signal.SIGTERM)
            await notify.until("STOPPING=1")
            code = await exited
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, (await stderr).decode(errors="replace"), process.pid


@pytest.mark.usefixtures("mosquitto_bin")
async def test_edge_run_speaks_sd_notify(
    tmp_path: Path, free_port: Callable[[], int], notify_socket: NotifySocket
) -> None:
    """The real `edge run` (what ExecStart= starts) under Type=notify and WatchdogSec=: READY=1
    once it serves, WATCHDOG=1 again and again, STOPPING=1 on SIGTERM, then a clean exit 0 (no
    restart under Restart=on-failure). Every message comes from the main process itself, not
    from its mosquitto child or a helper process: NotifyAccess=main would drop those."""
    config = _hub_config(tmp_path, free_port)
    code, stderr, pid = await _run_hub_until_stopped(
        [EDGE, "--config", str(config), "run"],
        notify_socket,
        # 0.2 s instead of the unit's 30 s, so the pings come quickly.
        {"WATCHDOG_USEC": "200000"},
    )
    assert code == 0, stderr
    states = notify_socket.states
    assert states.index("READY=1") < states.index("WATCHDOG=1") < states.index("STOPPING=1")
    assert "STATUS=ready" in states
    for state in ("WATCHDOG=1", "STOPPING=1", "STATUS=ready"):
        assert notify_socket.senders(state) == {pid}
    assert pid in notify_socket.senders("READY=1")


@pytest.mark.usefixtures("mosquitto_bin")
async def test_managed_mosquitto_leaves_the_hubs_notify_socket_alone(
    tmp_path: Path, free_port: Callable[[], int], notify_socket: NotifySocket
) -> None:
    """Only the hub speaks for the unit: a READY=1 from its broker child would, under a laxer
    NotifyAccess=, tell systemd the hub is ready before it is."""
    config = _hub_config(tmp_path, free_port)
    code, stderr, pid = await _run_hub_until_stopped(
        [EDGE, "--config", str(config), "run"], notify_socket, {"WATCHDOG_USEC": "200000"}
    )
    assert code == 0, stderr
    assert {sender for _, sender in notify_socket.seen} == {pid}, notify_socket.seen


def _expand_syscall_group(group: str, cache: dict[str, set[str]]) -> set[str]:
    """The system calls of ``@group`` as this systemd defines them, nested groups included."""
    if group not in cache:
        listing = _run("systemd-analyze", "syscall-filter", "--no-pager", group).stdout
        names: set[str] = set()
        for line in listing.splitlines()[1:]:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            names |= _expand_syscall_group(entry, cache) if entry.startswith("@") else {entry}
        cache[group] = names
    return cache[group]


def _allowed_syscalls() -> set[str]:
    """SystemCallFilter= of the hub's unit: an allow list, then ``~`` lines taken out of it
    (systemd.exec(5)); an allow list always includes @default."""
    cache: dict[str, set[str]] = {}
    allowed = set(_expand_syscall_group("@default", cache))
    for value in _unit_values("SystemCallFilter"):
        deny = value.startswith("~")
        for entry in value.lstrip("~").split():
            names = _expand_syscall_group(entry, cache) if entry.startswith("@") else {entry}
            allowed = allowed - names if deny else allowed | names
    return allowed


# Files outside /proc/<pid> that are read, are absent under ProcSubset=pid, and whose absence is
# handled where they are read.
_PROC_READS_THAT_MAY_FAIL = {
    # prometheus_client builds a ProcessCollector for its default registry at import and reads
    # the boot time here, catching OSError. The hub exports its own registry (edge/metrics.py),
    # without process metrics, so nothing it shows depends on this file.
    "/proc/stat",
}
_CALL = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
_WRITE_FLAGS = re.compile(r"O_(?:WRONLY|RDWR|CREAT)")


@pytest.fixture
def unprivileged() -> Iterator[tuple[list[str], Path]]:
    """How to run the hub as a user without privileges, as User=edge does, and a directory that
    user owns. As root (this container), setpriv(1) drops to nobody: a root hub would make calls
    the unit's hub never makes (SQLite chowns its journal to the database's owner when euid is
    0, for one). As any other user, the hub simply runs as that user."""
    if os.geteuid() != 0:
        directory = Path(tempfile.mkdtemp(prefix="edge-sandbox-"))
        yield [], directory
    else:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv(1) is not installed to drop privileges")
        nobody = pwd.getpwnam("nobody")
        directory = Path(tempfile.mkdtemp(prefix="edge-sandbox-", dir="/tmp"))
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        prefix = [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            "--inh-caps=-all",
        ]
        yield prefix, directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.usefixtures("mosquitto_bin")
async def test_hub_and_managed_broker_fit_the_units_sandbox(
    tmp_path: Path, free_port: Callable[[], int], unprivileged: tuple[list[str], Path]
) -> None:
    """Start, serve, ping the watchdog and stop a managed-mode hub under `strace -f` (the hub,
    its threads and its mosquitto child), as an unprivileged user, and hold every call against
    the unit: no system call outside SystemCallFilter=, no socket family outside
    RestrictAddressFamilies=, no mapping made writable and executable or mprotect(PROT_EXEC)
    (MemoryDenyWriteExecute=), no /proc file outside the process's own (ProcSubset=pid),
    nothing opened for writing outside the state directory, /tmp and /dev (ProtectSystem=strict,
    PrivateTmp=).

    What this run does not reach (a serial scale, a USB printer, NetSuite over TLS) uses the same
    families of calls (ioctl, read/write, connect) but is not traced here."""
    drop, workdir = unprivileged
    config = _hub_config(workdir, free_port)
    notify = NotifySocket(workdir / "notify.sock")
    os.chmod(notify.path, 0o666)  # the hub, as another user, must be able to send to it
    trace = tmp_path / "strace.log"
    try:
        strace = ["strace", "-f", "-qq", "-s", "256", "-o", str(trace)]
        code, stderr, _ = await _run_hub_until_stopped(
            [*strace, *drop, EDGE, "--config", str(config), "run"],
            notify,
            {
                "WATCHDOG_USEC": "200000",
                # mDNS on loopback too: zeroconf lists interfaces and joins multicast groups.
                "EDGE__DISCOVERY__ENABLED": "true",
                "EDGE__DISCOVERY__INTERFACES": '["127.0.0.1"]',
            },
        )
    finally:
        notify.close()
    assert code == 0, stderr
    lines = trace.read_text(errors="replace").splitlines()
    # The trace starts with strace's and setpriv's own calls: keep what follows the exec of
    # the hub itself.
    started = next(
        i for i, line in enumerate(lines) if f'execve("{EDGE}"' in line and line.endswith("= 0")
    )
    lines = lines[started:]
    assert any("mosquitto" in line and "execve(" in line for line in lines), "no mosquitto child"

    allowed = _allowed_syscalls()
    used: dict[str, str] = {}
    for line in lines:
        match = _CALL.match(line)
        if match:
            used.setdefault(match.group(2) or match.group(3), line)
    # strace's own first execve is of the hub itself: allowed (@default) like any exec.
    outside = {name: line for name, line in used.items() if name not in allowed}
    assert not outside, "system calls outside SystemCallFilter=:\n" + "\n".join(outside.values())

    families = set(_unit_values("RestrictAddressFamilies")[0].split())
    sockets = [line for line in lines if re.match(r"^\d+\s+socket\(", line)]
    assert sockets
    for line in sockets:
        family = line.split("socket(", 1)[1].split(",", 1)[0]
        assert family in families, line

    for line in lines:
        call = re.match(r"^\d+\s+(mmap|mprotect|pkey_mprotect)\(([^)]*)\)", line)
        if not call:
            continue
        prot = call.group(2).split(", ")[2]
        assert "PROT_EXEC" not in prot or (call.group(1) == "mmap" and "PROT_WRITE" not in prot), (
            f"refused under MemoryDenyWriteExecute=yes: {line}"
        )

    state_dir = str(workdir / "state")
    for line in lines:
        opened = re.match(r'^\d+\s+(?:open|openat|creat)\((?:[^,"]+, )?"([^"]+)", ([A-Z_|]+)', line)
        if not opened:
            continue
        path, flags = opened.groups()
        if path.startswith("/proc/") and path not in _PROC_READS_THAT_MAY_FAIL:
            own = re.match(r"^/proc/(self|thread-self|\d+)(/|$)", path)
            assert own, f"hidden by ProcSubset=pid: {line}"
        if _WRITE_FLAGS.search(flags) and " = -1 " not in line:
            assert path.startswith((state_dir, "/tmp/", "/dev/")), f"read-only there: {line}"
