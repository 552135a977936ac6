"""The console's alerts: what a technician must look at, derived from the hub's figures.
Pure: the figures and ``now`` come in, alerts come out (the overview page, the SSE stream and
`edge status` share them).

Each alert has a stable ``code``, a ``level`` (``critical``: sales or the store are affected
now; ``warning``: act today; ``info``) and one sentence saying what to do. The thresholds are
the ones docs/operations.md explains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from edge.api_client import when

Level = Literal["critical", "warning", "info"]

OLDEST_PENDING_WARN_S: Final = 15 * 60.0
"""A sale waiting longer than this while the WAN is up means the cloud refuses or lags."""
DISK_WARN_FACTOR: Final = 2.0
"""Warn when free space falls below this many times the outbox's floor."""


@dataclass(frozen=True, slots=True)
class Alert:
    level: Level
    code: str
    message: str


def store_alerts(
    outbox: Mapping[str, Any] | None,
    lanes: Mapping[str, int],
    catalogue: Mapping[str, Any] | None,
) -> list[Alert]:
    """Every alert for the store, most severe first."""
    found: list[Alert] = []
    if outbox is not None:
        found += _outbox_alerts(outbox)
    offline, stale = lanes.get("offline", 0), lanes.get("stale", 0)
    if offline:
        found.append(
            Alert(
                "warning",
                "LANES_OFFLINE",
                f"{offline} register(s) offline: check power and network (Lanes page)",
            )
        )
    if stale:
        found.append(
            Alert(
                "warning",
                "LANES_STALE",
                f"{stale} register(s) silent for days: find them or retire them (Lanes page)",
            )
        )
    if lanes.get("discovered", 0):
        found.append(
            Alert(
                "info",
                "LANES_DISCOVERED",
                f"{lanes['discovered']} device(s) discovered but not enrolled",
            )
        )
    if catalogue is not None:
        found += _catalogue_alerts(catalogue)
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda a: order[a.level])


def _outbox_alerts(outbox: Mapping[str, Any]) -> list[Alert]:
    found: list[Alert] = []
    breaker = outbox.get("breaker", {}).get("state")
    pending = int(outbox.get("pending", 0))
    # Half-open (a probe in flight) is still the outage: the alert must not blink off.
    down = breaker in ("open", "half_open")
    if down:
        since = outbox.get("breaker", {}).get("down_since")
        found.append(
            Alert(
                "warning",
                "WAN_DOWN",
                f"the cloud is unreachable{f' since {when(since)}' if since else ''}; "
                f"{pending} sale(s) kept safely on the hub, sent when it is back",
            )
        )
    oldest = outbox.get("oldest_pending_age_s")
    if not down and oldest is not None and oldest > OLDEST_PENDING_WARN_S:
        found.append(
            Alert(
                "warning",
                "OUTBOX_SLOW",
                f"the oldest sale has waited "
                f"{oldest / 60:.0f} min with the WAN up: check the Outbox page",
            )
        )
    parked = int(outbox.get("parked", 0))
    if parked:
        found.append(
            Alert(
                "critical",
                "OUTBOX_PARKED",
                f"{parked} sale(s) refused by the cloud "
                "and parked: fix and retry them (Outbox page)",
            )
        )
    disk = outbox.get("disk") or {}
    free, floor = disk.get("free_bytes"), disk.get("floor_bytes")
    if free is not None and floor:
        if free < floor:
            found.append(
                Alert(
                    "critical",
                    "DISK_FULL",
                    "the disk is below its floor: the hub refuses new sales until space is freed",
                )
            )
        elif free < DISK_WARN_FACTOR * floor:
            found.append(
                Alert(
                    "warning",
                    "DISK_LOW",
                    f"{free / 1e6:.0f} MB free: free space before the hub must refuse sales",
                )
            )
    return found


def _catalogue_alerts(catalogue: Mapping[str, Any]) -> list[Alert]:
    found: list[Alert] = []
    if catalogue.get("version", 0) == 0 and catalogue.get("source") != "none":
        found.append(
            Alert(
                "warning",
                "CATALOGUE_EMPTY",
                "the hub has no catalogue yet: its first download has not finished",
            )
        )
    last = catalogue.get("last_sync")
    if last is not None and not last.get("ok"):
        found.append(
            Alert(
                "warning" if last.get("retryable") else "critical",
                "CATALOGUE_SYNC_FAILED",
                f"the last catalogue sync failed "
                f"({last.get('failure')}); the tills price from version "
                f"{catalogue.get('version')}",
            )
        )
    stale = catalogue.get("registers", {}).get("stale", [])
    if stale:
        found.append(
            Alert(
                "warning",
                "REGISTERS_NOT_FOLLOWING",
                f"{len(stale)} register(s) have "
                f"not fetched the catalogue for days: {', '.join(stale[:5])}",
            )
        )
    return found
