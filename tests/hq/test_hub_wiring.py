"""The HQ link inside a real Hub: a signed config from HQ changes the running hub, a replay is
refused, and the telemetry carries the hub's own figures (issue 7, "Done when")."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import MosquittoProcess, hub_settings, run_hub
from tests.hq.conftest import hq_side
from tests.hq.keys import signed
from tests.test_cli import _edge
from tests.test_console_pages import console_session


async def test_hq_config_reaches_the_running_hub_and_telemetry_is_the_hubs(
    tmp_path: Path,
    broker: MosquittoProcess,
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
) -> None:
    settings = hub_settings(
        tmp_path,
        broker_port=broker.port,
        hq={
            "enabled": True,
            "host": cloud.host,
            "port": cloud.port,
            "tls": False,
            "telemetry_interval_s": 3600.0,
            "telemetry_debounce_s": 0.1,
            "reconnect_min_s": 0.02,
            "reconnect_max_s": 0.2,
        },
        catalogue__interval_s=300.0,
    )
    assert pinned_key_path.parent == settings.state_dir / "pki"
    async with hq_side(cloud) as hq, run_hub(settings) as hub:
        first = await hq.next_telemetry()
        assert first["hub_version"] == hub.version
        assert first["catalogue_version"] == await hub.catalogue.store.version()
        assert first["wan"] in ("up", "down", "unknown")
        assert first["free_disk_bytes"] > 0

        config = signed(hq_key, version=1, payload={"catalogue": {"interval_s": 120}})
        await hq.send("config", config)
        assert await hq.stages(3) == [
            ("received", 1, None),
            ("validated", 1, None),
            ("applied", 1, None),
        ]
        assert hub.catalogue.interval == 120

        await hq.send("config", config)  # the same document again: a replay
        ack = await hq.ack()
        assert (ack["stage"], ack["code"]) == ("rejected", "STALE_VERSION")
        assert hub.catalogue.interval == 120

        # The technician sees it all: the console's Config page and `edge hq status`.
        async with console_session(hub) as http, http.get(f"{hub.http.url}/config") as page:
            text = await page.text()
        assert '<span id="config-version">1</span>' in text
        assert "&#34;interval_s&#34;: 120" in text or '"interval_s": 120' in text
        assert "STALE_VERSION" in text
        code, out, _ = await _edge("hq", "--url", hub.http.url, "status")
        assert code == 0
        assert "connected; config version 1 in force" in out
        assert "config v1" in out
        code, out, _ = await _edge("hq", "--url", hub.http.url, "status", "--json")
        body = json.loads(out)
        assert body["applied_version"] == 1
        assert [d["outcome"] for d in body["documents"]] == ["rejected", "applied"]
        assert body["documents"][1]["stages"][0]["stage"] == "received"
