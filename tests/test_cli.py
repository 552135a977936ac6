"""The `edge` command as a technician uses it: status (human and --json), demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MosquittoProcess, hub_settings, run_hub

EDGE = str(Path(sys.executable).parent / "edge")


async def _edge(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        EDGE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_ready_human_and_json(tmp_path: Path, broker: MosquittoProcess) -> None:
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub:
        code, out, _ = await _edge("status", "--url", hub.http.url)
        assert code == 0
        assert "READY" in out
        assert "ok   bus" in out
        code, out, _ = await _edge("status", "--url", hub.http.url, "--json")
        assert code == 0
        body = json.loads(out)
        assert body["ready"] is True
        assert body["store_id"] == "s1"
        assert body["checks"]["bus"]["ok"] is True


async def test_status_not_ready_exits_1(tmp_path: Path, broker: MosquittoProcess) -> None:
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port)) as hub:
        broker.kill()
        await hub.bus.wait_disconnected(timeout=10)
        code, out, _ = await _edge("status", "--url", hub.http.url)
        assert code == 1
        assert "NOT READY" in out
        assert "FAIL bus" in out
        code, out, _ = await _edge("status", "--url", hub.http.url, "--json")
        assert code == 1
        assert json.loads(out)["checks"]["bus"]["ok"] is False


async def test_status_unreachable_exits_3(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = await _edge("status", "--url", url)
    assert code == 3
    assert "UNREACHABLE" in out
    code, out, _ = await _edge("status", "--url", url, "--json")
    assert code == 3
    assert json.loads(out)["reachable"] is False


async def test_missing_mosquitto_is_a_clear_error(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """No broker binary: the hub says which package to install and exits 4, without a
    traceback."""
    code, _, err = await _edge(
        "run",
        env={
            "EDGE__STATE_DIR": str(tmp_path),
            "EDGE__BROKER__MOSQUITTO_PATH": "/nonexistent/mosquitto",
            "EDGE__BROKER__PORT": str(free_port()),
            "EDGE__HTTP__PORT": "0",
        },
    )
    assert code == 4
    assert "install the Debian package 'mosquitto'" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not Path("/usr/bin/systemd-analyze").exists(), reason="no systemd-analyze")
async def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this checkout's edge,
    since verify checks that the binary exists)."""
    unit = Path(__file__).resolve().parent.parent / "systemd" / "edge-hub.service"
    text = unit.read_text()
    assert "ExecStart=/opt/store-edge/bin/edge" in text
    copy = tmp_path / "edge-hub.service"
    copy.write_text(text.replace("/opt/store-edge/bin/edge", EDGE))
    process = await asyncio.create_subprocess_exec(
        "systemd-analyze",
        "verify",
        str(copy),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edge"):
        assert directive in text


async def test_config_check_and_show_never_print_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        'store_id = "store-042"\n'
        "[uplink.hq_http]\n"
        'url = "https://hq.example"\n'
        'token = "tok-very-secret-123"\n'
        "[uplink.netsuite]\n"
        'consumer_secret = "cs-very-secret-456"\n'
    )
    code, out, _ = await _edge("config", "check", str(config))
    assert code == 0
    assert "OK (store store-042" in out
    code, out, _ = await _edge("--config", str(config), "config", "show")
    assert code == 0
    shown = json.loads(out)
    assert shown["store_id"] == "store-042"
    assert shown["uplink"]["hq_http"] == {**shown["uplink"]["hq_http"], "token": "***"}
    assert "very-secret" not in out
    config.write_text('store_id = "store/042"\n')
    code, _, err = await _edge("config", "check", str(config))
    assert code == 2
    assert "store_id" in err
