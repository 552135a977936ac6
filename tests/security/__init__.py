"""Tests of the hub's identity, enrollment and the LAN's access rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edge.security.identity import Identity, initialize


def init_hub_identity(state_dir: Path) -> Identity:
    """What `edge init --store s1` does, for a hub under test (hub_settings: store s1)."""
    return initialize(
        state_dir,
        store_id="s1",
        hub_id="hub-test",
        names=[],
        addresses=[],
        hq_public_key=None,
        now=dt.datetime.now(dt.UTC),
    )
