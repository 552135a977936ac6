"""The chaos schedule: which faults strike when, drawn from a seed (pure: no I/O, no clock).

Theory of operation
-------------------
Each fault kind has its own timeline, drawn from its own ``random.Random(f"{seed}:{kind}")``:
adding or removing a kind never moves the others, and the same seed, duration, lanes, kinds and
rate give the same schedule on every machine. On one timeline the episodes never overlap (one
WAN state at a time, one ballast at a time, ...); episodes of different kinds overlap freely,
which is the point: a hub killed while the broker is down and the disk is full.

The first episode of each kind starts within the first 60 % of the run (so a short run injects
every kind it was asked for); after that, the gap from the end of one episode to the start of
the next is exponential with mean ``kinds / rate`` minutes, so ``rate`` is the number of
faults per minute over all kinds. Episodes starting after the end of the run are dropped; an
episode running past it is ended by the harness when it stops the faults.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_KINDS", "Episode", "FaultKind", "draw_schedule", "parse_kinds"]


class FaultKind(enum.StrEnum):
    HUB_KILL = "hub_kill"
    """SIGKILL of the `edge run` process; restarted after ``duration_s`` (as systemd would)."""
    BROKER_RESTART = "broker_restart"
    """SIGKILL or SIGTERM of Mosquitto (variant); started again after ``duration_s``."""
    WAN_FLAP = "wan_flap"
    """The WAN proxy refuses, blackholes, resets or delays (variant) for ``duration_s``."""
    CLOUD_FAULT = "cloud_fault"
    """The simulated NetSuite misbehaves (variant) for ``duration_s``."""
    DISK_FULL = "disk_full"
    """A ballast file fills the hub's state filesystem (variant: to below the hub's free-space
    floor, or completely) for ``duration_s``."""
    LANE_FLAP = "lane_flap"
    """Register ``lane`` is switched off abruptly (its sale in hand unacknowledged, its MQTT
    connection dropped) and on again after ``duration_s``; it re-sends its journal."""
    REJECTION = "rejection"
    """The cloud is told to refuse a sale lane ``lane`` will ring up ``ahead`` sales from now
    (a business rule): it must end parked on the hub, with the cloud's error."""
    DISK_DAMAGE = "disk_damage"
    """SIGKILL of the hub and, while it is down for ``duration_s``, its outbox file damaged:
    ``bad_sector``, one page overwritten (it salvages the file at its start and asks the
    lanes for their journals from just before what it lost); ``bit_rot``, one bit flipped in
    a pending sale's amount, every page still valid (it never posts that sale, asks for the
    journals, and the lane's re-send repairs it); ``column_rot``, one bit flipped in a pending
    sale's dependency list, which no longer parses (the hub restores it from the sale and
    sends the sale once, as rung up)."""


DEFAULT_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)

VARIANTS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.HUB_KILL: ("sigkill",),
    FaultKind.BROKER_RESTART: ("sigkill", "sigterm"),
    FaultKind.WAN_FLAP: ("blackhole", "refuse", "reset", "latency"),
    FaultKind.CLOUD_FAULT: (
        "5xx",
        "429",
        "401_under_load",
        "slow",
        "timeout",
        "reset",
        "lost_response",
    ),
    FaultKind.DISK_FULL: ("below_floor", "full"),
    FaultKind.LANE_FLAP: ("off",),
    FaultKind.REJECTION: ("business_rule",),
    FaultKind.DISK_DAMAGE: ("bad_sector", "bit_rot", "column_rot"),
}

#: (shortest, longest) episode in seconds: how long the fault lasts, or the down time.
DURATIONS: dict[FaultKind, tuple[float, float]] = {
    FaultKind.HUB_KILL: (0.0, 2.0),
    FaultKind.BROKER_RESTART: (0.2, 4.0),
    FaultKind.WAN_FLAP: (1.0, 12.0),
    FaultKind.CLOUD_FAULT: (2.0, 12.0),
    FaultKind.DISK_FULL: (2.0, 10.0),
    FaultKind.LANE_FLAP: (1.0, 10.0),
    FaultKind.REJECTION: (0.0, 0.0),
    FaultKind.DISK_DAMAGE: (0.0, 2.0),
}


@dataclass(frozen=True, slots=True)
class Episode:
    at_s: float
    """Start, in seconds from the start of the run."""
    kind: FaultKind
    variant: str
    duration_s: float
    lane: int | None = None
    """Index of the lane concerned (lane_flap, rejection)."""
    ahead: int = 0
    """rejection: how many sales ahead of the lane's current one the refused sale is."""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.variant}"


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"all"`` or a comma-separated list of kinds; ValueError names an unknown one."""
    if text.strip() in ("", "all"):
        return DEFAULT_KINDS
    kinds: list[FaultKind] = []
    for name in (part.strip() for part in text.split(",")):
        try:
            kind = FaultKind(name)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault kind {name!r} (known: {known}, or all)") from None
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def draw_schedule(
    *,
    seed: int,
    duration_s: float,
    kinds: Iterable[FaultKind],
    rate_per_min: float,
    lanes: int,
) -> list[Episode]:
    """Every episode of the run, in start order (ties: by kind)."""
    kinds = tuple(kinds)
    if duration_s <= 0 or rate_per_min <= 0 or not kinds:
        return []
    if lanes < 1:
        raise ValueError("lanes must be >= 1")
    mean_gap_s = 60.0 * len(kinds) / rate_per_min
    episodes: list[Episode] = []
    for kind in kinds:
        rng = random.Random(f"{seed}:{kind.value}")
        at = rng.uniform(0.0, min(mean_gap_s, 0.6 * duration_s))
        while at < duration_s:
            low, high = DURATIONS[kind]
            episode = Episode(
                at_s=round(at, 3),
                kind=kind,
                variant=rng.choice(VARIANTS[kind]),
                duration_s=round(rng.uniform(low, high), 3),
                lane=rng.randrange(lanes) if kind in (FaultKind.LANE_FLAP, FaultKind.REJECTION)
                else None,
                ahead=rng.randint(1, 4) if kind is FaultKind.REJECTION else 0,
            )  # fmt: skip
            episodes.append(episode)
            at = at + episode.duration_s + rng.expovariate(1.0 / mean_gap_s)
    episodes.sort(key=lambda e: (e.at_s, e.kind.value))
    return episodes
