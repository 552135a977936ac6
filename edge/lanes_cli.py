"""`edge lanes ...`: the registers as the hub sees them, over the hub's HTTP API.

``list`` (a table, or ``--json``), ``show DEVICE`` (with its transitions), ``retire DEVICE`` and
``enroll DEVICE`` (``--reason``). Exit codes as in edge.cli.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import urllib.parse
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.api_client import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Unreachable,
    age,
    call,
    output_console,
    print_table,
    when,
)


def add_parser(sub: Any) -> None:
    lanes = sub.add_parser("lanes", help="registers: state, last contact, alerts")
    lanes.add_argument("--url", help="hub HTTP address (default: from the config)")
    lanes.add_argument("--timeout", type=float, default=5.0)
    lanes_sub = lanes.add_subparsers(dest="lanes_command", required=True)
    listing = lanes_sub.add_parser("list", help="every register with its state and alerts")
    listing.add_argument("--json", action="store_true")
    show = lanes_sub.add_parser("show", help="one register and its history")
    show.add_argument("device")
    show.add_argument("--json", action="store_true")
    for action, text in (("retire", "retire a register now"), ("enroll", "enroll a register")):
        parser = lanes_sub.add_parser(action, help=text)
        parser.add_argument("device")
        parser.add_argument("--reason", default=f"{action} by technician")
        parser.add_argument("--json", action="store_true")


def run_lanes_command(base: str, args: argparse.Namespace) -> int:
    console = output_console()
    api = f"{base}/api/v1/lanes"
    command = args.lanes_command
    try:
        if command == "list":
            code, body = call(api, args.timeout)
        else:
            device = urllib.parse.quote(args.device, safe="")
            if command == "show":
                code, body = call(f"{api}/{device}", args.timeout)
            else:
                code, body = call(
                    f"{api}/{device}/{command}", args.timeout, {"reason": args.reason}
                )
    except Unreachable as exc:
        if args.json:
            print(json.dumps({"reachable": False, "url": base, "error": str(exc)}))
        else:
            console.print(f"hub at {base}: UNREACHABLE ({exc})")
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(body))
    elif code >= 400:
        error = body.get("error", {})
        console.print(f"refused: {error.get('message', body)} ({error.get('code', code)})")
    elif command == "list":
        _table(console, body)
    else:
        _one(console, body)
    if code >= 400:
        return EXIT_USAGE if code == 400 else EXIT_PROBLEM
    return EXIT_OK


def _table(console: Console, body: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in body["counts"].items() if n)
    table = Table(title=f"registers ({counts or 'none'})")
    for column in ("lane", "device", "state", "last seen", "address", "software"):
        table.add_column(column, no_wrap=True)
    table.add_column("alerts", overflow="fold")
    for lane in body["lanes"]:
        table.add_row(
            lane["lane_id"] or "-", lane["device_id"], lane["state"],
            f"{age(lane['silent_s'])} ago" if lane["silent_s"] is not None else "-",
            lane["address"] or "-", lane["software"] or "-",
            "; ".join(f"{a['level']}: {a['message']}" for a in lane["alerts"]),
        )  # fmt: skip
    print_table(console, table)


def _one(console: Console, lane: dict[str, Any]) -> None:
    console.print(
        f"{lane['device_id']} (lane {lane['lane_id'] or '-'}): {lane['state']} since "
        f"{when(lane['since'])}, last seen {when(lane['last_seen'])}"
    )
    for alert in lane["alerts"]:
        console.print(f"  {alert['level']}: {alert['message']}")
    for entry in lane.get("history", []):
        at = dt.datetime.fromtimestamp(entry["at"]).strftime("%Y-%m-%d %H:%M:%S")
        console.print(
            f"  {at}  {entry['before'] or 'new'} -> {entry['after']}  ({entry['reason']})"
        )
