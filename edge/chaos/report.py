"""The chaos run's summary: a rich table for people, a JSON document for bench and CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary", "write_json"]


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Print the summary (the document :meth:`ChaosResult.as_json` returns)."""
    faults = Table(title="Faults injected", title_justify="left")
    faults.add_column("kind")
    faults.add_column("injected", justify="right")
    faults.add_column("variants")
    by_variant: dict[str, int] = summary["faults"]["by_variant"]
    for kind, count in summary["faults"]["by_kind"].items():
        variants = ", ".join(
            f"{label.split(':', 1)[1]} {n}"
            for label, n in by_variant.items()
            if label.split(":", 1)[0] == kind
        )
        faults.add_row(kind, str(count), variants)
    faults.add_row(
        "total",
        str(summary["faults"]["injected"]),
        f"{summary['faults']['scheduled']} scheduled",
        style="bold",
    )
    console.print(faults)

    t = summary["transactions"]
    hub = summary["hub"]
    lanes = summary["lanes"]
    catalogue = summary["catalogue"]
    drain = summary["drain_s"]
    figures = Table(title="Transactions and the promise", title_justify="left")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    rows: list[tuple[str, str, bool]] = [
        ("sent (rung up by the lanes)", str(t["sent"]), True),
        ("acknowledged by the hub", str(t["acked"]), True),
        ("delivered (in the cloud exactly once)", str(t["delivered"]), True),
        ("parked with the cloud's reason", str(t["parked"]), True),
        ("duplicated in the cloud", str(t["duplicates"]), t["duplicates"] == 0),
        ("lost", str(t["lost"]), t["lost"] == 0),
        (
            "altered in the cloud",
            f"{t['altered']} of {t['amounts_checked']} checked",
            t["altered"] == 0,
        ),
        ("still pending after the drain", str(t["stuck"]), t["stuck"] == 0),
        ("drain time", "not in time" if drain is None else f"{drain:.1f} s", drain is not None),
        ("lane re-sends (journal)", str(lanes["resends"]), True),
        ("sales re-sent on the hub's request", str(lanes["journal_resent"]), True),
        (
            "retryable refusals seen by lanes",
            ", ".join(f"{k} {v}" for k, v in lanes["retryable_errors"].items()) or "0",
            True,
        ),
        ("hub starts / SIGKILLs", f"{hub['starts']} / {hub['sigkills']}", True),
        ("hub exits by itself", str(len(hub["unplanned_exits"])), not hub["unplanned_exits"]),
        ("hub start failures", str(len(hub["start_failures"])), not hub["start_failures"]),
        ("broker starts", str(summary["broker_starts"]), True),
        (
            "catalogue: lanes equal to the hub",
            f"{catalogue['lanes_equal']} of {summary['options']['lanes']} "
            f"({catalogue['hub_records']} records, {catalogue['edits']} HQ edits)",
            catalogue["lanes_equal"] == summary["options"]["lanes"],
        ),
    ]
    for name, value, good in rows:
        figures.add_row(name, value, style=None if good else "bold red")
    console.print(figures)

    if summary["findings"]:
        found = Table(title="Findings", title_justify="left")
        found.add_column("kind", style="red")
        found.add_column("subject")
        found.add_column("detail")
        for f in summary["findings"][:30]:
            found.add_row(f["kind"], f["subject"], f["detail"])
        if len(summary["findings"]) > 30:
            found.add_row("...", f"{len(summary['findings']) - 30} more", "see the JSON summary")
        console.print(found)
    if summary["verdict"] == "clean":
        console.print("[bold green]verdict: CLEAN[/] - the promise held under every fault")
    else:
        console.print(
            f"[bold red]verdict: BROKEN[/] - {len(summary['findings'])} findings; "
            f"logs and state kept in {summary['workdir']}"
        )


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
