"""`edge outbox ...`: the technician's view of the outbox, over the hub's HTTP API.

Human output is a table (rich); ``--json`` prints the API's JSON for scripts. Exit codes as in
edge.cli: 0 ok, 1 problem (unknown item, wrong state), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import socket
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
from edge.outbox.store import OutboxError, OutboxStore
from edge.outbox.transfer import Imported, backup, import_items


def run_outbox_command(base: str, args: argparse.Namespace) -> int:
    console = output_console()
    api = f"{base}/api/v1/outbox"
    if args.outbox_command == "drain":
        return _drain(console, api, args)
    actor = getattr(args, "actor", None) or f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        if args.outbox_command == "status":
            code, body = call(api, args.timeout)
        elif args.outbox_command == "list":
            query = urllib.parse.urlencode(
                {"status": _listed(args), "limit": args.limit, "after": args.after}
            )
            code, body = call(f"{api}/items?{query}", args.timeout)
        elif args.outbox_command == "show":
            key = urllib.parse.quote(args.key, safe="")
            code, body = call(f"{api}/items/{key}", args.timeout)
        elif args.outbox_command == "retry" and args.all_parked:
            code, body = call(
                f"{api}/retry-parked", args.timeout, {"actor": actor, "reason": args.reason}
            )
        else:
            action = args.outbox_command
            key = urllib.parse.quote(args.key, safe="")
            code, body = call(
                f"{api}/items/{key}/{action}", args.timeout, {"actor": actor, "reason": args.reason}
            )
    except Unreachable as exc:
        if getattr(args, "json", False):
            print(json.dumps({"reachable": False, "url": base, "error": str(exc)}))
        else:
            console.print(f"hub at {base}: UNREACHABLE ({exc})")
        return EXIT_UNREACHABLE
    if getattr(args, "json", False):
        print(json.dumps(body))
    elif code >= 400:
        error = body.get("error", {})
        console.print(f"refused: {error.get('message', body)} ({error.get('code', code)})")
    else:
        _human(console, args, body)
    if code >= 400:
        return EXIT_USAGE if code == 400 else EXIT_PROBLEM
    return EXIT_OK


def run_outbox_file_command(outbox: Path, args: argparse.Namespace) -> int:
    """`backup` and `import`: on the files themselves, the hub running or not."""
    console = output_console()
    try:
        if args.outbox_command == "backup":
            counts = backup(outbox, Path(args.dest))
            body: dict[str, Any] = {"file": args.dest, "items": counts}
            text = f"{args.dest}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
        else:
            if not Path(args.file).is_file():
                raise FileNotFoundError(f"no file {args.file}")
            result = asyncio.run(_import(outbox, Path(args.file)))
            body = dataclasses.asdict(result)
            text = (
                f"{args.file}: {result.added} added, {result.already_here} already here"
                + (f", {len(result.conflicts)} CONFLICTS (other content under the same txn id:"
                   f" {', '.join(result.conflicts[:10])})" if result.conflicts else "")
                + (f", {len(result.damaged)} damaged (seq {result.damaged[:10]})"
                   if result.damaged else "")
            )  # fmt: skip
    except (OSError, sqlite3.Error, ValueError, OutboxError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            console.print(f"edge outbox {args.outbox_command}: {exc}")
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps(body))
    else:
        console.print(text)
    return EXIT_PROBLEM if body.get("conflicts") or body.get("damaged") else EXIT_OK


async def _import(outbox: Path, source: Path) -> Imported:
    store = OutboxStore(outbox)
    await store.open()
    try:
        return await import_items(source, store, now=time.time())
    finally:
        await store.close()


def _listed(args: argparse.Namespace) -> str:
    return "parked" if args.parked else "delivered" if args.delivered else "pending"


def _human(console: Console, args: argparse.Namespace, body: Any) -> None:
    command = args.outbox_command
    if command == "status":
        table = Table(title="outbox", show_header=False, box=None)
        breaker = body.get("breaker", {})
        disk = body.get("disk", {})
        rows = [
            ("pending", str(body["pending"])),
            ("oldest pending", age(body.get("oldest_pending_age_s"))),
            ("parked", str(body["parked"])),
            ("delivered (kept)", str(body["delivered"])),
            ("delivered/min", f"{body.get('delivered_per_min', 0):.0f}"),
            ("accepted/min", f"{body.get('accepted_per_min', 0):.0f}"),
            ("connector", str(body.get("connector"))),
            ("WAN breaker", _breaker(breaker)),
            (
                "disk free",
                f"{disk.get('free_bytes', 0) / 1e6:.0f} MB"
                f" (floor {disk.get('floor_bytes', 0) / 1e6:.0f} MB)",
            ),
            ("outbox file", f"{disk.get('db_bytes', 0) / 1e6:.1f} MB"),
        ]
        if body.get("disk_full_for_s"):
            rows.append(("sending", "paused: the disk is full (the cloud's answers cannot be "
                                    "recorded); goes on once space is back"))  # fmt: skip
        if body.get("salvage"):
            rows.append(("SALVAGED", body["salvage"]))
        if asked := body.get("journal_request"):
            since = asked["since"] or "the start of their journals"
            rows.append(("journals asked", f"from {since} ({asked['reason']})"))
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
    elif command == "list":
        items = body["items"]
        title = f"{_listed(args)} items: {len(items)} of {body['total']}"
        if items and len(items) < body["total"] and len(items) == args.limit:
            title += f" (next: --after {items[-1]['seq']})"
        table = Table(title=title)
        for column in ("seq", "txn id", "kind", "lane", "accepted", "tries"):
            # Ids are copied into commands: never wrap them.
            table.add_column(column, no_wrap=True)
        table.add_column("last error", overflow="fold")
        for item in items:
            table.add_row(
                str(item["seq"]), item["key"], item["kind"], item["lane"],
                when(item["accepted_at"]), str(item["attempts"]), item["last_error"] or "",
            )  # fmt: skip
        print_table(console, table)
    elif command == "show":
        _show(console, body)
    elif command == "retry" and "retried" in body:
        console.print(f"re-queued {body['retried']} parked item(s)")
    else:
        console.print(
            f"{body['key']} (seq {body['seq']}): now {body['status']}"
            f" (at {time.strftime('%H:%M:%S')})"
        )


def _breaker(breaker: dict[str, Any]) -> str:
    """The breaker's state and, in an outage, since when and the next probe."""
    state = str(breaker.get("state", "-"))
    if state not in ("open", "half_open"):
        return state
    text = "open" if state == "open" else "half-open (probing)"
    if since := breaker.get("down_since"):
        text += f": the cloud unreachable since {when(since)}"
    if state == "open" and (probe := breaker.get("next_probe_at")):
        text += f"; next probe {when(probe)}"
    return text


def _show(console: Console, item: dict[str, Any]) -> None:
    console.print(f"{item['key']} (seq {item['seq']}): {item['kind']} from {item['lane']}, "
                  f"{item['status']}")  # fmt: skip
    delivered = item["delivered_at"]
    facts = [
        ("accepted", when(item["accepted_at"])),
        ("tries", str(item["attempts"])),
        ("next try", when(item["next_attempt_at"]) if item["status"] == "pending" else "-"),
        ("delivered", f"{when(delivered)} as {item['record_id']}" if delivered else "-"),
        ("parked", when(item["parked_at"])),
        ("depends on", ", ".join(item["depends_on"]) or "-"),
        ("flags", ", ".join(item["flags"]) or "-"),
        ("last error", item["last_error"] or "-"),
    ]
    for name, value in facts:
        console.print(f"  {name:<11} {value}")
    if item["error_detail"]:
        console.print("  the cloud's error:")
        console.print(json.dumps(item["error_detail"], indent=2, sort_keys=True))
    if item["audit"]:
        trail = Table("when", "action", "who", "why", title="changes")
        for entry in item["audit"]:
            trail.add_row(when(entry["at"]), entry["action"], entry["actor"], entry["reason"])
        print_table(console, trail)


def _drain(console: Console, api: str, args: argparse.Namespace) -> int:
    """Watch the backlog go to the cloud (it drains by itself; this only shows it): a progress
    bar of what was pending at the start (and what arrives meanwhile), until nothing is pending
    (exit 0) or ``--wait`` seconds pass (exit 1). The cloud's state is shown as it goes."""
    started = time.monotonic()
    try:
        _, first = call(api, args.timeout)
        total, delivered_at_start = first["pending"], first["delivered"]
        body = first
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=args.json or not console.is_terminal,
        ) as progress:
            task = progress.add_task("sending the backlog", total=max(total, 1))
            while body["pending"] > 0 and time.monotonic() - started < args.wait:
                time.sleep(args.every)
                _, body = call(api, args.timeout)
                sent = body["delivered"] - delivered_at_start
                total = max(total, sent + body["pending"])
                breaker = body["breaker"].get("state", "n/a")
                progress.update(
                    task, total=total, completed=sent,
                    description=f"sending the backlog (cloud: {breaker})",
                )  # fmt: skip
    except Unreachable as exc:
        console.print(f"hub at {api}: UNREACHABLE ({exc})")
        return EXIT_UNREACHABLE
    drained = body["pending"] == 0
    result = {
        "drained": drained,
        "pending": body["pending"],
        "sent": body["delivered"] - delivered_at_start,
        "parked": body["parked"],
        "seconds": round(time.monotonic() - started, 1),
        "breaker": body["breaker"].get("state", "n/a"),
    }
    if args.json:
        print(json.dumps(result))
    elif drained:
        console.print(f"backlog sent: {result['sent']} in {result['seconds']} s; nothing pending")
    else:
        console.print(
            f"still {result['pending']} pending after {result['seconds']} s "
            f"(cloud: {result['breaker']}); the hub keeps sending: see 'edge outbox status'"
        )
    return EXIT_OK if drained else EXIT_PROBLEM
