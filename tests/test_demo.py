"""`edge demo`, the README's run command: a whole store riding out a WAN outage."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.demo import Figures, Outcome, status_line, summary

EDGE = str(Path(sys.executable).parent / "edge")


def _env(free_port: Callable[[], int]) -> dict[str, str]:
    return {
        **os.environ,
        "EDGE__BROKER__PORT": str(free_port()),
        "EDGE__BROKER__LAN_PORT": str(free_port()),
        "EDGE__HTTP__PORT": str(free_port()),
        "EDGE__SECURITY__HTTPS_PORT": str(free_port()),
        "EDGE__UPLINK__HQ_HTTP__TIMEOUT_S": "0.5",
        "EDGE__UPLINK__NETSUITE__TIMEOUT_S": "0.5",
    }


@pytest.mark.parametrize(
    ("cloud", "shown_as"), [("netsuite", "simulated NetSuite account"), ("hq", "simulated HQ API")]
)
async def test_demo_rides_out_the_outage_and_keeps_the_promise(
    tmp_path: Path, free_port: Callable[[], int], cloud: str, shown_as: str
) -> None:
    """The store trades through the scripted outage, sales queue on disk while the WAN is down,
    drain when it is back, and every acknowledged sale is in the cloud exactly once (counted
    in the simulated cloud's own ledger: NetSuite records by external id, or HQ commits)."""
    env = _env(free_port)
    process = await asyncio.create_subprocess_exec(
        EDGE,
        "demo",
        "--state-dir",
        str(tmp_path / "demo"),
        "--lanes=3",
        "--outage-at=2",
        "--outage-for=3",
        "--sale-every=0.2",
        "--duration=8",
        "--report-every=0.5",
        f"--cloud={cloud}",
        "--catalogue-size=50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    text = out.decode()
    assert process.returncode == 0, text + err.decode()
    assert "Traceback" not in err.decode()
    down = [line for line in text.splitlines() if "WAN DOWN |" in line]
    queued = [int(m.group(1)) for line in down if (m := re.search(r"outbox\s+(\d+)", line))]
    assert max(queued) > 0, f"nothing queued during the outage:\n{text}"
    assert "WAN UP:" in text
    assert "backlog delivered" in text
    acked = int(re.search(r"acknowledged by the hub: (\d+)", text).group(1))  # type: ignore[union-attr]
    once = int(re.search(r"exactly once:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    assert acked > max(queued)
    assert once == acked
    assert "more than once:    0" in text
    assert "lost:                           0" in text
    assert "promise kept" in text
    assert "catalogue: every lane holds exactly the hub's" in text
    printed, cut = map(
        int,
        re.search(r"receipts printed:\s+(\d+) \(the emulated printer cut (\d+)\)", text).groups(),
    )  # type: ignore[union-attr]
    assert printed == cut, "every receipt printed once, none twice"
    assert printed >= acked - 3, "each lane's receipts, but for a sale rung as it stopped"
    assert re.search(r"console:  http://\S+/   login demo / \S+", text)
    assert "lanes online  3" in text, "each simulated lane announces itself"
    assert "enrolled 3 lanes with one-time codes" in text, "the lanes reach the broker by mTLS"
    assert "require_certificate true" in (tmp_path / "demo/broker/mosquitto.conf").read_text()
    assert f"cloud ({shown_as})" in text


async def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path, free_port: Callable[[], int]) -> None:
    """Ctrl-C stops lanes, hub, broker and simulators: exit 0, nothing left listening."""
    env = _env(free_port)
    process = await asyncio.create_subprocess_exec(
        EDGE,
        "demo",
        "--state-dir",
        str(tmp_path / "demo"),
        "--lanes=2",
        "--report-every=0.2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            async for raw in process.stdout:
                if "sales acked" in raw.decode():
                    break
        assert "set_tcp_nodelay true" in (tmp_path / "demo/broker/mosquitto.conf").read_text()
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = (await process.stdout.read()).decode()
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert returncode == 0, rest
    assert "promise kept" in rest
    for port in (
        "EDGE__BROKER__PORT",
        "EDGE__BROKER__LAN_PORT",
        "EDGE__HTTP__PORT",
        "EDGE__SECURITY__HTTPS_PORT",
    ):
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", int(env[port]))


def test_summary_flags_a_duplicate_and_a_loss() -> None:
    assert summary(Outcome(acked={"a", "b"}, committed_counts={"a": 1, "b": 1}))[0]
    kept, lines = summary(Outcome(acked={"a", "b"}, committed_counts={"a": 1, "b": 2}))
    assert not kept
    assert "duplicated ['b']" in lines[-1]
    kept, lines = summary(Outcome(acked={"a", "b"}, committed_counts={"a": 1}))
    assert not kept
    assert "lost ['b']" in lines[-1]
    on_disk = Outcome(acked={"a", "b", "c"}, committed_counts={"a": 1})
    on_disk.on_disk = {"b": "pending", "c": "parked"}
    assert summary(on_disk)[0]


def test_status_line_shows_the_backlog_and_its_age() -> None:
    line = status_line(
        Figures(
            elapsed_s=61,
            wan="DOWN",
            rung=40,
            acked=40,
            pending=12,
            oldest_pending_s=9.6,
            parked=0,
            in_cloud=28,
            breaker="open",
        )
    )
    assert "WAN DOWN" in line
    assert "outbox    12, oldest 10 s" in line
    assert "cloud    28" in line
