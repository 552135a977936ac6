"""`edge catalogue ...`: the store's catalogue as the running hub serves it, over its HTTP API.

``status`` (version, last sync, registers current/behind/stale, quarantine), ``sync`` (start a
downsync now; ``--wait`` for its result), ``lookup CODE`` (an item by barcode or SKU with its
price and promotions). ``--json`` on each. Exit codes as in edge.cli: a failed sync or an
unknown item is 1, an unreachable hub 3.

For a hub that will not start, ``edge netsuite catalogue-sync`` works on the catalogue file
directly.
"""

from __future__ import annotations

import argparse
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
)


def add_parser(sub: Any) -> None:
    catalogue = sub.add_parser("catalogue", help="the store's catalogue: version, sync, lookup")
    catalogue.add_argument("--url", help="hub HTTP address (default: from the config)")
    catalogue.add_argument("--timeout", type=float, default=5.0)
    cat_sub = catalogue.add_subparsers(dest="catalogue_command", required=True)
    status = cat_sub.add_parser("status", help="version, last sync, registers, quarantine")
    status.add_argument("--json", action="store_true")
    sync = cat_sub.add_parser("sync", help="download what changed from the cloud now")
    sync.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the result (0: do not)"
    )
    sync.add_argument("--json", action="store_true")
    lookup = cat_sub.add_parser("lookup", help="an item by barcode or SKU, priced now")
    lookup.add_argument("code")
    lookup.add_argument("--at", help="price at this RFC 3339 time instead of now")
    lookup.add_argument("--level", default="base", help="price level (default: base)")
    lookup.add_argument("--json", action="store_true")


def run_catalogue_command(base: str, args: argparse.Namespace) -> int:
    console = output_console()
    api = f"{base}/api/v1/catalogue"
    command = args.catalogue_command
    timeout = args.timeout
    try:
        if command == "status":
            code, body = call(api, timeout)
        elif command == "sync":
            timeout = max(timeout, args.wait + 5)
            code, body = call(f"{api}/sync?wait={args.wait}", timeout, {})
        else:
            query = {"level": args.level} | ({"at": args.at} if args.at else {})
            code, body = call(
                f"{api}/items/{urllib.parse.quote(args.code, safe='')}?"
                + urllib.parse.urlencode(query),
                timeout,
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
    elif command == "status":
        _status(console, body)
    elif command == "sync":
        _sync(console, body)
    else:
        _item(console, body)
    if code == 400:
        return EXIT_USAGE
    if code >= 400:
        return EXIT_PROBLEM
    if command == "sync" and body.get("done") and not body["result"]["ok"]:
        return EXIT_PROBLEM
    return EXIT_OK


def _status(console: Console, body: dict[str, Any]) -> None:
    stats = body["stats"]
    console.print(
        f"catalogue version {body['version']} ({stats['items']:,} items, "
        f"{stats['prices']:,} prices, {stats['promotions']:,} promotions), "
        f"source {body['source']}, every {age(body['interval_s'])}"
    )
    last, good = body["last_sync"], body["last_success"]
    if body["syncing"]:
        console.print(f"syncing now ({body['syncing']})")
    if last is None:
        console.print("no sync since the hub started")
    else:
        outcome = "ok" if last["ok"] else f"FAILED ({last['failure']}): {last['error']}"
        console.print(
            f"last sync: {last['mode']}, {last['changes']:,} changes in "
            f"{last['duration_s']:.1f}s: {outcome}"
        )
        if not last["ok"] and good is not None:
            console.print(f"last successful sync: version {good['version']}")
    counts = body["registers"]["counts"]
    table = Table(
        title="registers: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        if any(counts.values())
        else "registers: none has fetched the feed yet"
    )
    for column in ("register", "state", "behind", "last contact", "last answer"):
        table.add_column(column, no_wrap=True)
    for row in body["registers"]["all"]:
        table.add_row(
            row["register"], row["state"], "-" if row["behind"] is None else str(row["behind"]),
            f"{age(row['idle_s'])} ago", row["last_mode"],
        )  # fmt: skip
    if body["registers"]["all"]:
        print_table(console, table)
    else:
        console.print(table.title)
    for entry in body["quarantine"]:
        console.print(f"quarantined: {entry}")


def _sync(console: Console, body: dict[str, Any]) -> None:
    if not body.get("done"):
        console.print("sync requested; it is still running (edge catalogue status)")
        return
    result = body["result"]
    if result["ok"]:
        console.print(
            f"{result['mode']} sync: {result['changes']:,} changes in {result['parts']} part(s), "
            f"{result['duration_s']:.1f}s; catalogue version {result['version']}"
        )
    else:
        console.print(
            f"sync FAILED ({result['failure']}): {result['error']}; "
            f"still serving version {result['version']}"
        )


def _item(console: Console, body: dict[str, Any]) -> None:
    item, price = body["item"], body["price"]
    name = next(iter(item.get("names", {}).values()), item["sku"])
    console.print(f"{item['sku']}  {name}  (matched by {body['matched_by']})")
    console.print(f"  barcodes: {', '.join(item.get('barcodes', [])) or '-'}")
    console.print(f"  tax code: {item.get('tax_code', '-')}")
    if price is None:
        console.print("  price: none in force")
    else:
        console.print(f"  price: {price['amount']} ({price['level']})")
    for promotion in body["promotions"]:
        text = promotion.get("description") or promotion.get("kind", "")
        console.print(f"  promotion {promotion['promotion_id']}: {text}")
