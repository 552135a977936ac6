"""`edge init` and `edge device add|list|revoke`, human and --json, against a real hub."""

from __future__ import annotations

import json
from pathlib import Path

from edge.sim.enroll_client import enroll
from tests.conftest import _free_port, hub_settings, run_hub
from tests.security import init_hub_identity
from tests.test_cli import _edge


async def test_init_human_json_and_refusal(tmp_path: Path) -> None:
    env = {"EDGE__STATE_DIR": str(tmp_path / "state"), "EDGE__STORE_ID": "s1"}
    code, out, _ = await _edge("init", "--store", "s1", "--ip", "10.0.0.2", env=env)
    assert code == 0, out
    assert "CA fingerprint: sha256:" in out
    assert (tmp_path / "state" / "pki" / "ca.key").stat().st_mode & 0o077 == 0
    code, _, err = await _edge("init", "--store", "s1", "--json", env=env)
    assert code == 1
    assert "--force" in err
    code, out, _ = await _edge("init", "--store", "s1", "--force", "--json", env=env)
    assert code == 0
    assert json.loads(out)["ca_fingerprint"].startswith("sha256:")
    code, _, err = await _edge("init", "--store", "other", env=env)
    assert code == 2
    assert "store_id" in err


async def test_device_add_list_revoke_human_and_json(tmp_path: Path) -> None:
    identity = init_hub_identity(tmp_path / "state")
    settings = hub_settings(
        tmp_path, broker_port=_free_port(), mode="managed", security__https_port=_free_port()
    )
    async with run_hub(settings) as hub:
        url = ("--url", hub.http.url)
        code, out, _ = await _edge("device", *url, "add", "lane-1", "--role", "register")
        assert code == 0, out
        assert "enrollment code for lane-1 (register):" in out
        assert identity.ca_fingerprint in out
        code, out, _ = await _edge(
            "device", *url, "add", "scale-1", "--role", "peripheral", "--json"
        )
        assert code == 0
        added = json.loads(out)
        assert added["uri"].startswith(f"edge-enroll:{added['code']}?hub=https://")
        await enroll(hub.http.tls_url, added["code"], fingerprint=added["ca_fingerprint"])

        code, out, _ = await _edge("device", *url, "list")
        assert code == 0
        assert "scale-1" in out
        assert "enrolled" in out
        assert "pending" in out  # lane-1 has a code but no certificate yet
        code, out, _ = await _edge("device", *url, "list", "--json")
        states = {d["name"]: d["state"] for d in json.loads(out)["devices"]}
        assert states == {"lane-1": "pending", "scale-1": "enrolled"}

        code, out, _ = await _edge("device", *url, "revoke", "scale-1")
        assert code == 0
        assert "scale-1 revoked" in out
        code, out, _ = await _edge("device", *url, "revoke", "scale-1", "--json")
        assert code == 1  # already revoked
        code, _, err = await _edge("device", *url, "add", "bad/name", "--role", "register")
        assert code == 2
        assert "INVALID_DEVICE" in err
