"""`edge reconcile --date D`, `edge netsuite journal --date D [--post]`, `edge netsuite
catalogue-sync`.

Both read the store's day from the outbox file (safe next to a running hub: SQLite WAL) and
talk to NetSuite with the hub's own ``[uplink.netsuite]`` settings; neither needs the hub to be
running, so a technician can reconcile a day on a hub that will not start.

`edge netsuite catalogue-sync` brings the hub's catalogue file up to date with NetSuite's items
(edge.uplink.netsuite.catalogue), with a progress bar.

Exit codes as in edge.cli: 0 clean (or posted, or synced), 1 differences (or nothing to post,
or NetSuite refused), 2 usage or configuration, 3 NetSuite unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

import msgspec
from rich.table import Table

from edge.api_client import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    output_console,
    print_table,
)
from edge.settings import Settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    netsuite_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    reconcile = sub.add_parser(
        "reconcile",
        help="compare the store's business day with what NetSuite holds (exit 1 on differences)",
    )
    reconcile.add_argument("--date", type=_date, required=True, help="register date YYYY-MM-DD")
    reconcile.add_argument("--json", action="store_true")
    journal = netsuite_sub.add_parser(
        "journal", help="the store's daily summary journalEntry (posting = daily_journal)"
    )
    journal.add_argument("--date", type=_date, required=True, help="register date YYYY-MM-DD")
    journal.add_argument("--post", action="store_true", help="upsert it into NetSuite")
    journal.add_argument("--json", action="store_true")
    catalogue = netsuite_sub.add_parser(
        "catalogue-sync",
        help="bring the hub's catalogue up to date with NetSuite's items (a full download the "
        "first time and every full_every_h; else only what changed)",
    )
    catalogue.add_argument("--json", action="store_true")


def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_with_netsuite(settings, args, _reconcile))


def run_netsuite_command(settings: Settings, args: argparse.Namespace) -> int:
    work = _journal if args.netsuite_command == "journal" else _catalogue_sync
    return asyncio.run(_with_netsuite(settings, args, work))


async def _with_netsuite(settings: Settings, args: argparse.Namespace, work: Any) -> int:
    from edge.app import build_netsuite
    from edge.outbox.policy import RetryLater
    from edge.outbox.store import OutboxStore
    from edge.settings import SettingsError
    from edge.uplink.netsuite.connector import NetSuiteConnector, RequestFailed

    uses: tuple[str, ...] = (settings.outbox.connector,)
    if work is _catalogue_sync:
        uses += (settings.catalogue.source,)
    if "netsuite" not in uses:
        print("edge: NetSuite is not used in this configuration", file=sys.stderr)
        return EXIT_USAGE
    if work is not _catalogue_sync and not settings.outbox_path.exists():
        print(f"edge: no outbox at {settings.outbox_path}", file=sys.stderr)
        return EXIT_USAGE
    try:
        connector = build_netsuite(settings)
    except SettingsError as exc:
        print(f"edge: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assert isinstance(connector, NetSuiteConnector)
    store = OutboxStore(settings.outbox_path) if work is not _catalogue_sync else None
    if store is not None:
        await store.open()
    try:
        code: int = await work(settings, store, connector, args)
        return code
    except RequestFailed as exc:
        print(f"edge: NetSuite: {exc.outcome}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(exc.outcome, RetryLater) else EXIT_PROBLEM
    except (TimeoutError, OSError) as exc:
        print(f"edge: NetSuite unreachable: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        if store is not None:
            await store.close()
        await connector.aclose()


async def _reconcile(
    settings: Settings, store: Any, connector: Any, args: argparse.Namespace
) -> int:
    from edge.uplink.netsuite.day import reconcile_day

    ns = settings.uplink.netsuite
    result = await reconcile_day(store, connector, ns.mapping, settings.store_id, args.date)
    report = result.as_json()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK if result.clean else EXIT_PROBLEM
    console = output_console()
    day = report["store"]
    counts = ", ".join(f"{n} {kind}" for kind, n in day["transactions"].items()) or "none"
    console.print(f"store {result.store_id}, {result.day}: {counts}")
    tenders = ", ".join(f"{t} {a}" for t, a in day["tenders"].items()) or "-"
    console.print(
        f"  revenue {day['revenue']}  discounts {day['discounts']}  tax {day['tax']}  "
        f"total {day['total']}  tenders: {tenders}"
    )
    console.print(f"  NetSuite records expected {result.expected}, held for the day {result.held}")
    if result.clean:
        console.print("clean: no differences")
        return EXIT_OK
    table = Table("kind", "external id", "detail", "expected", "NetSuite")
    for d in report["differences"]:
        table.add_row(
            d["kind"], d["external_id"], d["detail"], d["expected"] or "-", d["netsuite"] or "-"
        )
    print_table(console, table)
    by_kind = ", ".join(f"{n} {k}" for k, n in report["differences_by_kind"].items())
    console.print(f"{len(result.differences)} difference(s): {by_kind}")
    return EXIT_PROBLEM


async def _journal(settings: Settings, store: Any, connector: Any, args: argparse.Namespace) -> int:
    from edge.uplink.netsuite.day import journal_for_day, post_adjustment, post_journal
    from edge.uplink.netsuite.mapping import Preflight

    mapping = settings.uplink.netsuite.mapping
    try:
        body, stock = await journal_for_day(store, mapping, settings.store_id, args.date)
    except Preflight as exc:
        print(f"edge: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if body is None:
        print(f"edge: nothing to journal for {args.date}", file=sys.stderr)
        return EXIT_PROBLEM
    internal_id = await post_journal(connector, body) if args.post else None
    stock_id = await post_adjustment(connector, stock) if args.post and stock else None
    encoded = msgspec.json.encode(
        {
            "journal": body,
            "internal_id": internal_id,
            "inventory_adjustment": stock,
            "inventory_adjustment_id": stock_id,
        }
    )
    if args.json:
        print(msgspec.json.format(encoded, indent=2).decode())
        return EXIT_OK
    printable = json.loads(encoded, parse_float=str, parse_int=str)
    console = output_console()
    journal = printable["journal"]
    table = Table("account", "debit", "credit", "memo", title=journal["externalId"])
    for line in journal["line"]["items"]:
        table.add_row(
            line["account"]["id"],
            str(line.get("debit", "")),
            str(line.get("credit", "")),
            line.get("memo", ""),
        )
    console.print(table)
    console.print(f"posted: internal id {internal_id}" if args.post else "not posted (--post)")
    if stock is not None:
        adjustment = printable["inventory_adjustment"]
        table = Table("item", "location", "adjust qty by", title=adjustment["externalId"])
        for line in adjustment["inventory"]["items"]:
            table.add_row(line["item"]["id"], line["location"]["id"], line["adjustQtyBy"])
        console.print(table)
        if args.post:
            console.print(f"posted: internal id {stock_id}")
    return EXIT_OK


async def _catalogue_sync(
    settings: Settings, store: Any, connector: Any, args: argparse.Namespace
) -> int:
    """One sync into the hub's catalogue file, with a progress bar (or --json at the end)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edge.bus import Topics
    from edge.catalogue.service import CatalogueService
    from edge.catalogue.store import CatalogueStore
    from edge.metrics import Metrics
    from edge.uplink.netsuite.catalogue import NetSuiteCatalogueSource

    mapping = settings.uplink.netsuite.catalogue
    if not mapping.enabled:
        print("edge: [uplink.netsuite.catalogue] enabled is false", file=sys.stderr)
        return EXIT_USAGE
    catalogue = CatalogueStore(settings.catalogue_path)
    await catalogue.open()
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            disable=args.json,
            transient=False,
        ) as progress:
            task = progress.add_task("reading items from NetSuite", total=None)

            def on_page(mode: str, items: int) -> None:
                progress.update(task, description=f"{mode}: {items:,} items read")

            source = NetSuiteCatalogueSource(connector, mapping, on_page=on_page)
            service = CatalogueService(
                catalogue,
                source,
                None,
                topics=Topics(settings.store_id),
                metrics=Metrics(),
                spool_dir=settings.state_dir / "spool",
            )
            result = await service.sync_once()
        stats = await catalogue.stats()
    finally:
        await catalogue.close()
    read = source.last
    report = {
        "ok": result.ok,
        "mode": read.mode,
        "items_read": read.items,
        "pages": read.pages,
        "changes": result.changes,
        "version": result.version,
        "items_in_store": stats.items,
        "skipped": read.skipped[:100],
        "error": result.error,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    elif result.ok:
        print(
            f"{read.mode} sync: {read.items:,} items read in {read.pages} page(s), "
            f"{result.changes:,} changes; catalogue version {result.version}, "
            f"{stats.items:,} items" + (f"; {len(read.skipped)} skipped" if read.skipped else "")
        )
    else:
        print(f"edge: catalogue sync failed ({result.failure}): {result.error}", file=sys.stderr)
    if result.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if result.failure == "unavailable" else EXIT_PROBLEM
