"""The appliance image (image/, issue 9 item 2): mkosi builds its root tree, and the hub becomes
ready inside it, booted by systemd under systemd-nspawn on a read-only root.

Slow, and not part of `make test`: it runs only with ``EDGE_SLOW_TESTS=1`` or ``-m slow``
(``EDGE_SLOW_TESTS=1 .venv/bin/pytest tests/test_image.py``). Prerequisites, as root on
Debian 12: ``apt-get install mkosi debootstrap systemd-container``; the network to
deb.debian.org and PyPI. The first run downloads ~200 MB of Debian packages into
``~/.cache/store-edge-image`` (``$EDGE_IMAGE_CACHE``); later runs reuse them.

The same recipe as ``make image`` (image/mkosi.default, mkosi.finalize -> install-hub.sh), with
``--format=directory --bootable=no``: the root tree of the disk image, without its kernel and
partitions. The partition layout itself (image/rootfs/usr/lib/repart.d) is checked by running
systemd-repart on a disk file.

Failures it prevents:
- an image recipe that no longer builds, or builds a tree without the hub in /opt/store-edge,
  its units enabled, its user (sysusers) and directories (tmpfiles), or mosquitto;
- units that `systemd-analyze verify` refuses inside the image;
- partition definitions that systemd-repart refuses;
- a first boot that does not provision the hub from the installer's store id, or a hub that is
  not ready on the read-only root with its state on a separate mount;
- an unprovisioned appliance starting its hub anyway (its LAN broker open to anyone), without
  saying what is missing, or not starting it once a technician gives the store id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "image"
CACHE = Path(os.environ.get("EDGE_IMAGE_CACHE", Path.home() / ".cache" / "store-edge-image"))
BUILD_TIMEOUT_S = 1800.0
BOOT_DEADLINE_S = 180.0
# Inside the container: no host environment (PIP_*, VIRTUAL_ENV) leaks into `edge` or systemctl.
CONTAINER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _asked(config: pytest.Config) -> bool:
    return os.environ.get("EDGE_SLOW_TESTS") == "1" or "slow" in (
        config.getoption("markexpr") or ""
    )


def _prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("the image build needs root (mkosi, chroot, systemd-nspawn)")
    missing = [
        t for t in ("mkosi", "debootstrap", "systemd-nspawn", "nsenter") if not shutil.which(t)
    ]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install mkosi debootstrap systemd-container")


@pytest.fixture(scope="module")
def root(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's root tree, built by mkosi from image/ (and removed afterwards: ~450 MB).
    Every test here uses it, so this is where the slow tests are skipped unless asked for."""
    if not _asked(pytestconfig):
        pytest.skip("image build: slow, run with EDGE_SLOW_TESTS=1 or -m slow")
    _prerequisites()
    base = tmp_path_factory.mktemp("image")
    (CACHE / "apt").mkdir(parents=True, exist_ok=True)
    tree = base / "root"
    log = base / "mkosi.log"
    started = time.monotonic()
    with log.open("wb") as out:
        build = subprocess.run(
            [
                "mkosi",
                "--format=directory",
                "--bootable=no",
                "--checksum=no",
                # No system bus in a container: run mkosi's nspawn steps in the current scope.
                "--nspawn-keep-unit",
                f"--cache={CACHE / 'apt'}",
                f"--output={tree}",
                "--force",
                "build",
            ],
            cwd=IMAGE,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    tail = log.read_text(errors="replace")[-4000:]
    assert build.returncode == 0, f"mkosi failed ({log}):\n{tail}"
    print(f"image root tree built in {time.monotonic() - started:.0f} s")
    try:
        yield tree
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the tree ------------------------------------------------------------------------------------


def test_root_tree_has_the_hub_its_units_user_and_broker(root: Path) -> None:
    edge = root / "opt/store-edge/bin/edge"
    assert edge.is_file()
    assert os.access(edge, os.X_OK)
    shipped = root / "usr/lib/systemd/system/edge-hub.service"
    assert shipped.read_text() == (REPO / "systemd/edge-hub.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("edge-hub.service", "edge-firstboot.service", "edge-firstboot.path"):
        assert (wants / unit).is_symlink(), f"{unit} not enabled"
    for mount in ("var.mount", "etc-edge.mount", "var-lib-edge.mount"):
        assert (root / "etc/systemd/system/local-fs.target.wants" / mount).is_symlink()
    # Managed mode: the hub starts mosquitto; Debian's own service would be a second broker.
    assert (root / "usr/sbin/mosquitto").is_file()
    assert not (wants / "mosquitto.service").exists()

    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    assert "edge" in passwd
    assert passwd["edge"][5] == "/var/lib/edge"
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",")
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert "edge" in groups["dialout"]
    assert "edge" in groups["lp"]
    state = (root / "var/lib/edge").stat()
    assert state.st_uid == int(passwd["edge"][2])
    assert state.st_mode & 0o777 == 0o700

    version = subprocess.run(
        ["chroot", str(root), "/usr/bin/env", "-i", "/opt/store-edge/bin/edge", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0, version.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_verify_inside_the_image(root: Path) -> None:
    units = ["edge-hub.service", "edge-firstboot.service", "edge-firstboot.path"]
    units += ["var.mount", "etc-edge.mount", "var-lib-edge.mount"]
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            *(f"/usr/lib/systemd/system/{u}" for u in units),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("systemd-repart") is None, reason="systemd-repart missing")
def test_first_boot_partitions_are_accepted_by_systemd_repart(root: Path, tmp_path: Path) -> None:
    """The repart.d definitions make /var, /etc/edge and /var/lib/edge on an empty disk (dry run:
    the layout is computed and checked, nothing formatted, no loop device)."""
    disk = tmp_path / "disk.raw"
    result = subprocess.run(
        [
            "systemd-repart",
            f"--definitions={root / 'usr/lib/repart.d'}",
            "--empty=create",
            "--size=8G",
            "--dry-run=yes",
            "--json=short",
            str(disk),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    planned = {p["label"]: p for p in json.loads(result.stdout)}
    assert set(planned) >= {"store-edge-var", "store-edge-config", "store-edge-state"}
    # The state partition takes the rest of the disk.
    assert planned["store-edge-state"]["raw_size"] > planned["store-edge-var"]["raw_size"]


# -- booting it ----------------------------------------------------------------------------------


class Container:
    """The root tree booted by systemd-nspawn, as the appliance's disk would be: the root read-only,
    /var a tmpfs (--volatile=state), /etc/edge and /var/lib/edge bound from directories that stand
    for their partitions. Its own network namespace (loopback only): no port of this machine."""

    def __init__(self, root: Path, work: Path, *credentials: str) -> None:
        self.config = work / "etc-edge"
        self.state = work / "var-lib-edge"
        self.config.mkdir(parents=True)
        self.state.mkdir(parents=True)
        self.console = work / "console.log"
        self.name = f"edge-image-{os.getpid()}-{work.name}"[:60]
        command = [
            "systemd-nspawn",
            f"--directory={root}",
            "--boot",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--volatile=state",
            "--private-network",
            f"--bind={self.config}:/etc/edge",
            f"--bind={self.state}:/var/lib/edge",
            "--console=pipe",
            *(f"--set-credential={c}" for c in credentials),
            # The container has no LAN to wait for (systemd's arguments are its kernel command
            # line): on the appliance, edge-firstboot waits for the network to find its address.
            "systemd.mask=systemd-networkd-wait-online.service",
        ]
        self.log = self.console.open("wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def leader(self) -> int:
        """The container's PID 1 as seen from here (nspawn's child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        # Until it execs systemd, the child is still nspawn: entering it would reach this host.
        if not pids or Path(f"/proc/{pids[0]}/comm").read_text().strip() != "systemd":
            raise ProcessLookupError("container not started yet")
        return int(pids[0])

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        enter = ["nsenter", f"--target={self.leader()}", "-m", "-u", "-i", "-n", "-p", "-r", "-w"]
        return subprocess.run(
            [*enter, *argv],
            capture_output=True,
            text=True,
            env=CONTAINER_ENV,
            timeout=timeout,
            check=False,
        )

    def wait_for(
        self, what: str, check: Callable[[], object], deadline_s: float = BOOT_DEADLINE_S
    ) -> None:
        """Poll ``check()`` (truthy = done) until the deadline; the boot log on failure."""
        deadline = time.monotonic() + deadline_s
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                last = check()
            except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
                last = exc  # not booted far enough yet: keep polling
            else:
                if last:
                    return
            time.sleep(0.5)  # polling interval, not synchronisation: the deadline bounds it
        journal = (
            self.run("journalctl", "-b", "--no-pager", "-n", "80").stdout
            if self.process.poll() is None
            else ""
        )
        pytest.fail(
            f"{what}: not within {deadline_s:.0f} s (last: {last!r})\n"
            f"console:\n{self.console.read_text(errors='replace')[-3000:]}\njournal:\n{journal}"
        )

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: nspawn asks the container's systemd to halt), then a kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()
        # nspawn leaves its propagation directory when /run is not a tmpfs (as in some CI
        # containers); nothing is mounted there any more.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)


@pytest.fixture
def boot(root: Path, tmp_path: Path) -> Iterator[Callable[..., Container]]:
    started: list[Container] = []

    def start(*credentials: str) -> Container:
        container = Container(root, tmp_path / f"c{len(started)}", *credentials)
        started.append(container)
        return container

    yield start
    for container in started:
        container.stop()


def _hub_status(container: Container) -> dict[str, object] | None:
    result = container.run(
        "/opt/store-edge/bin/edge", "--config", "/etc/edge/edge.toml", "status", "--json"
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    status: dict[str, object] = json.loads(result.stdout)
    return status


def test_first_boot_provisions_the_hub_which_becomes_ready_on_a_read_only_root(
    boot: Callable[..., Container],
) -> None:
    started = time.monotonic()
    container = boot("edge.store:store-img-1")
    container.wait_for(
        "hub ready (edge status)", lambda: (_hub_status(container) or {}).get("ready")
    )
    print(f"booted to a ready hub in {time.monotonic() - started:.1f} s")

    status = _hub_status(container)
    assert status is not None
    assert status["store_id"] == "store-img-1"
    assert container.run("systemctl", "is-active", "edge-hub.service").stdout.strip() == "active"
    # Type=notify: systemd counts it started only once the hub said READY=1.
    show = container.run("systemctl", "show", "-p", "StatusText", "--value", "edge-hub.service")
    assert show.stdout.strip() == "ready"
    # The root is read-only; the state and the config are where their partitions will be.
    options = container.run("findmnt", "-n", "-o", "OPTIONS", "/").stdout
    assert options.split(",")[0] == "ro", options
    assert 'store_id = "store-img-1"' in (container.config / "edge.toml").read_text()
    ca = container.state / "pki" / "ca.pem"
    assert ca.is_file()
    edge_uid = int(container.run("id", "-u", "edge").stdout)
    assert ca.stat().st_uid == edge_uid, "edge init must run as the hub's user"
    assert (container.state / "outbox.db").exists()
    failed = container.run("systemctl", "list-units", "--failed", "--plain", "--no-legend")
    assert failed.stdout.strip() == "", failed.stdout


def test_without_a_store_id_the_hub_waits_and_starts_once_a_technician_gives_one(
    boot: Callable[..., Container],
) -> None:
    container = boot()

    def firstboot_failed() -> bool:
        return (
            container.run("systemctl", "is-failed", "edge-firstboot.service").stdout.strip()
            == "failed"
        )

    container.wait_for("edge-firstboot failed without a store id", firstboot_failed)
    # The hub did not start: no identity, no open LAN broker.
    assert container.run("systemctl", "is-active", "edge-hub.service").stdout.strip() != "active"
    assert not (container.state / "pki").exists()
    journal = container.run("journalctl", "-b", "-u", "edge-firstboot.service", "--no-pager").stdout
    assert "no store id" in journal, journal
    assert "/etc/edge/provision.env" in journal, journal
    issue = container.run("cat", "/run/issue.d/50-store-edge.issue")
    assert "STORE_ID=" in issue.stdout

    # The technician's fix, on the config partition: edge-firstboot.path takes it from there.
    (container.config / "provision.env").write_text("STORE_ID=store-img-2\n")
    container.wait_for(
        "hub ready after provision.env", lambda: (_hub_status(container) or {}).get("ready")
    )
    status = _hub_status(container)
    assert status is not None
    assert status["store_id"] == "store-img-2"
    assert container.run("test", "-e", "/run/issue.d/50-store-edge.issue").returncode != 0
