"""The report's pictures (PNG, matplotlib without a display): data in, file out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def ack_latency(rows: Sequence[dict[str, float]], path: Path) -> None:
    """Ack latency (p50 and p99) against the number of lanes: the hub's durable ack next to
    the bare broker echo measured in the same run."""
    lanes = [r["lanes"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(lanes, [r["hub_p50"] for r in rows], "o-", color="#1f6feb", label="hub ack p50")
    ax.plot(lanes, [r["hub_p99"] for r in rows], "o--", color="#1f6feb", label="hub ack p99")
    ax.plot(lanes, [r["echo_p50"] for r in rows], "s-", color="#8b949e", label="bare echo p50")
    ax.plot(lanes, [r["echo_p99"] for r in rows], "s--", color="#8b949e", label="bare echo p99")
    ax.set_xscale("log")
    ax.set_xticks(lanes, [str(int(n)) for n in lanes])
    ax.set_xlabel("lanes sending at once")
    ax.set_ylabel("round trip (ms)")
    ax.set_title("Durable ack latency against lanes (fsync per commit group)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def outage_depth(
    samples: Sequence[tuple[float, int]], down_at: float, up_at: float, path: Path
) -> None:
    """The outbox's depth through a WAN outage: it rises while the cloud is unreachable and
    drains once it is back."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.axvspan(down_at, up_at, color="#f85149", alpha=0.15, label="WAN down")
    ax.step([t for t, _ in samples], [d for _, d in samples], where="post", color="#1f6feb",
            label="sales waiting in the outbox")  # fmt: skip
    ax.set_xlabel("seconds")
    ax.set_ylabel("sales waiting")
    ax.set_title("Outbox depth through a WAN outage")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
