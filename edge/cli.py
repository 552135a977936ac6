"""The ``edge`` command: what a technician types on the box.

Exit codes (the same for every command, documented in docs/operations.md):

- 0  success / ready
- 1  the check ran and found a problem (hub not ready)
- 2  bad usage or bad configuration
- 3  the hub could not be reached
- 4  the hub failed at run time (e.g. its broker could not start)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from edge.broker import BrokerError
from edge.logs import setup_logging
from edge.settings import Settings, SettingsError, load_settings, redacted

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_FAILED = 0, 1, 2, 3, 4


ITEM_REF_HELP = "the transaction id, or the seq number `edge outbox list` shows"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="store-edge hub")
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $EDGE_CONFIG, /etc/edge/edge.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the hub (what the systemd unit starts)")
    demo = sub.add_parser(
        "demo",
        help="a whole store on this machine (hub, broker, cloud, lanes) riding out a WAN outage",
    )
    demo.add_argument("--state-dir", default=".edge-state/demo", help="where the demo keeps state")
    demo.add_argument("--lanes", type=_positive_int, default=8, help="simulated registers")
    demo.add_argument("--outage-at", type=float, default=60.0, metavar="S", help="WAN cut at S s")
    demo.add_argument("--outage-for", type=float, default=60.0, metavar="S", help="for S s")
    demo.add_argument(
        "--sale-every", type=float, default=4.0, metavar="S", help="mean seconds between sales"
    )
    demo.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop by itself after S s"
    )
    demo.add_argument("--report-every", type=float, default=5.0, metavar="S")
    demo.add_argument(
        "--cloud",
        choices=("netsuite", "hq"),
        default="netsuite",
        help="the simulated cloud: a NetSuite account (default) or the generic HQ API",
    )
    demo.add_argument(
        "--catalogue-size",
        type=_positive_int,
        default=500,
        metavar="N",
        help="items in the simulated NetSuite account",
    )

    status = sub.add_parser("status", help="is the hub ready? (reads /readyz)")
    status.add_argument("--url", help="hub HTTP address (default: from the config)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--timeout", type=float, default=3.0)

    outbox = sub.add_parser("outbox", help="the durable outbox to the cloud")
    outbox.add_argument("--url", help="hub HTTP address (default: from the config)")
    outbox.add_argument("--timeout", type=float, default=5.0)
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    ob_status = outbox_sub.add_parser("status", help="depth, oldest age, rates, breaker, parked")
    ob_status.add_argument("--json", action="store_true")
    ob_list = outbox_sub.add_parser("list", help="list items (pending by default)")
    which = ob_list.add_mutually_exclusive_group()
    which.add_argument("--parked", action="store_true", help="items the cloud refused")
    which.add_argument("--delivered", action="store_true")
    ob_list.add_argument("--limit", type=int, default=50)
    ob_list.add_argument("--after", type=int, default=0, metavar="SEQ", help="the next page")
    ob_list.add_argument("--json", action="store_true")
    ob_show = outbox_sub.add_parser(
        "show", help="one item: its state, the cloud's whole error, who changed it and why"
    )
    ob_show.add_argument("key", help=ITEM_REF_HELP)
    ob_show.add_argument("--json", action="store_true")
    ob_retry = outbox_sub.add_parser(
        "retry",
        help="re-queue a parked item after fixing it, or post a delivered one again (its "
        "record was deleted in the cloud)",
    )
    target = ob_retry.add_mutually_exclusive_group(required=True)
    target.add_argument("key", nargs="?", help=ITEM_REF_HELP)
    target.add_argument("--all-parked", action="store_true")
    ob_retry.add_argument("--reason", default="retried by technician")
    ob_retry.add_argument("--actor", default=None, help="who (default: your login)")
    ob_retry.add_argument("--json", action="store_true")
    ob_drain = outbox_sub.add_parser(
        "drain", help="watch the backlog go to the cloud (progress bar) until nothing is pending"
    )
    ob_drain.add_argument("--wait", type=float, default=3600.0, help="give up after S seconds")
    ob_drain.add_argument("--every", type=float, default=0.5, help="refresh every S seconds")
    ob_drain.add_argument("--json", action="store_true")
    ob_park = outbox_sub.add_parser("park", help="hold a pending item out of delivery")
    ob_park.add_argument("key", help=ITEM_REF_HELP)
    ob_park.add_argument("--reason", required=True)
    ob_park.add_argument("--actor", default=None, help="who (default: your login)")
    ob_park.add_argument("--json", action="store_true")
    ob_backup = outbox_sub.add_parser(
        "backup", help="a consistent copy of the outbox file (the hub running or not)"
    )
    ob_backup.add_argument("dest", help="the copy's file name (must not exist)")
    ob_backup.add_argument("--json", action="store_true")
    ob_import = outbox_sub.add_parser(
        "import", help="the undelivered sales of another hub's outbox file (a replaced hub)"
    )
    ob_import.add_argument("file", help="that hub's outbox file, or its `edge outbox backup`")
    ob_import.add_argument("--json", action="store_true")

    from edge.lanes_cli import add_parser as add_lanes_parser

    add_lanes_parser(sub)

    from edge.catalogue_cli import add_parser as add_catalogue_parser

    add_catalogue_parser(sub)

    from edge.console_cli import add_parser as add_console_parser

    add_console_parser(sub)

    from edge.device_cli import add_parsers as add_device_parsers

    add_device_parsers(sub)

    from edge.secrets_cli import add_parser as add_secret_parser

    add_secret_parser(sub)

    from edge.hq_cli import add_parser as add_hq_parser

    add_hq_parser(sub)

    netsuite = sub.add_parser("netsuite", help="NetSuite tools")
    ns_sub = netsuite.add_subparsers(dest="netsuite_command", required=True)
    sign = ns_sub.add_parser(
        "sign-request",
        help="print the TBA Authorization header for given inputs (compare with NetSuite's "
        "login audit trail)",
    )
    sign.add_argument("--method", required=True)
    sign.add_argument("--url", required=True)
    sign.add_argument("--account", required=True, help="account id, e.g. 1234567 or 1234567_SB1")
    sign.add_argument("--consumer-key", required=True)
    sign.add_argument("--consumer-secret", required=True)
    sign.add_argument("--token", required=True)
    sign.add_argument("--token-secret", required=True)
    sign.add_argument("--nonce", required=True)
    sign.add_argument("--timestamp", required=True, type=int, help="seconds since the epoch")

    from edge.netsuite_cli import add_parsers as add_netsuite_parsers

    add_netsuite_parsers(sub, ns_sub)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file without starting")
    check.add_argument("path")
    config_sub.add_parser("show", help="print the effective configuration (file + environment)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "netsuite" and args.netsuite_command == "sign-request":
        return _netsuite(args)
    try:
        if args.command == "config" and args.config_command == "check":
            settings = load_settings(args.path)
            print(f"{args.path}: OK (store {settings.store_id}, broker {settings.broker.mode})")
            return EXIT_OK
        if args.command == "demo":
            return _demo(args)
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"edge: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "config":
        print(json.dumps(redacted(settings), indent=2))
        return EXIT_OK
    if args.command == "status":
        return _status(settings, args)
    if args.command == "outbox":
        from edge.outbox_cli import run_outbox_command, run_outbox_file_command

        if args.outbox_command in ("backup", "import"):
            return run_outbox_file_command(settings.outbox_path, args)
        return run_outbox_command(_hub_url(settings, args.url), args)
    if args.command == "lanes":
        from edge.lanes_cli import run_lanes_command

        return run_lanes_command(_hub_url(settings, args.url), args)
    if args.command == "console":
        from edge.console_cli import run_console_command

        return run_console_command(settings, args)
    if args.command == "hq":
        from edge.hq_cli import run_hq_command

        return run_hq_command(_hub_url(settings, args.url), args)
    if args.command == "secret":
        from edge.secrets_cli import run_secret_command

        return run_secret_command(settings, args)
    if args.command in ("run", "reconcile", "netsuite"):
        # The credentials these use may be sealed ("secret:NAME", edge.secrets): resolved here,
        # for running only, so that `config show` and the other commands never hold a value.
        from edge.secrets import SecretsError, open_store, resolve_secrets

        try:
            settings = resolve_secrets(settings, open_store(settings.state_dir))
        except SecretsError as exc:
            print(f"edge: configuration error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "init":
        from edge.device_cli import run_init

        return run_init(settings, args)
    if args.command == "device":
        from edge.device_cli import run_device_command, run_profiles

        if args.device_command == "profiles":
            return run_profiles(settings, args)
        sec = settings.security
        https = f"https://{sec.https_host or settings.broker.lan_bind}:{sec.https_port}"
        return run_device_command(_hub_url(settings, args.url), https, args)
    if args.command == "catalogue":
        from edge.catalogue_cli import run_catalogue_command

        return run_catalogue_command(_hub_url(settings, args.url), args)
    if args.command in ("reconcile", "netsuite"):
        from edge.netsuite_cli import run_netsuite_command, run_reconcile

        if args.command == "reconcile":
            return run_reconcile(settings, args)
        return run_netsuite_command(settings, args)
    return _run(settings)


def _run(settings: Settings, *, on_ready: str | None = None) -> int:
    from edge.app import Hub
    from edge.outbox.store import StoreDamaged

    setup_logging(settings.log.level, settings.log.format)

    async def go() -> None:
        hub = Hub(settings)
        if on_ready is None:
            await hub.run()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run(), name="hub")
            await hub.ready.wait()
            print(on_ready.format(http=hub.http.url), flush=True)

    failed: list[str] = []
    try:
        asyncio.run(go())
    except* BrokerError as group:
        failed.extend(f"broker: {exc}" for exc in group.exceptions)
    except* StoreDamaged as group:
        failed.extend(
            f"outbox: {exc}; stopping: the next start salvages it" for exc in group.exceptions
        )
    for message in failed:
        print(f"edge: {message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.demo import DemoOptions, run_demo

    # Validate the configuration before anything starts (a bad file is exit 2, not a trace).
    settings = load_settings(args.config, env={**os.environ, "EDGE__STATE_DIR": args.state_dir})
    setup_logging(os.environ.get("EDGE__LOG__LEVEL", "WARNING"), settings.log.format)
    options = DemoOptions(
        lanes=args.lanes,
        outage_at_s=args.outage_at,
        outage_for_s=args.outage_for,
        sale_every_s=args.sale_every,
        duration_s=args.duration,
        report_every_s=args.report_every,
        cloud=args.cloud,
        catalogue_size=args.catalogue_size,
    )
    failed: list[BaseException] = []
    kept = False
    try:
        kept = asyncio.run(
            run_demo(options, config=args.config, state_dir=Path(args.state_dir), out=sys.stdout)
        )
    except* BrokerError as group:
        failed.extend(group.exceptions)
    for exc in failed:
        print(f"edge: broker: {exc}", file=sys.stderr)
    if failed:
        return EXIT_FAILED
    return EXIT_OK if kept else EXIT_PROBLEM


def _netsuite(args: argparse.Namespace) -> int:
    from edge.uplink.netsuite import NetSuiteError
    from edge.uplink.netsuite.auth import format_authorization_line, tba_authorization_header

    try:
        header = tba_authorization_header(
            args.method.upper(),
            args.url,
            account_id=args.account,
            consumer_key=args.consumer_key,
            consumer_secret=args.consumer_secret,
            token=args.token,
            token_secret=args.token_secret,
            nonce=args.nonce,
            timestamp=args.timestamp,
        )
        print(format_authorization_line(header))
    except NetSuiteError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _hub_url(settings: Settings, explicit: str | None) -> str:
    return (explicit or f"http://{settings.http.host}:{settings.http.port}").rstrip("/")


def _status(settings: Settings, args: argparse.Namespace) -> int:
    url = _hub_url(settings, args.url)
    try:
        body, code = _get_json(f"{url}/readyz", args.timeout)
    except (OSError, ValueError) as exc:
        if args.json:
            print(json.dumps({"reachable": False, "url": url, "error": str(exc)}))
        else:
            print(f"hub at {url}: UNREACHABLE ({exc})")
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps({"reachable": True, "url": url, **body}))
    else:
        state = "READY" if body.get("ready") else "NOT READY"
        print(
            f"hub {body.get('hub_id')} of store {body.get('store_id')} at {url}: {state}"
            f" (version {body.get('version')}, up {body.get('uptime_s')}s)"
        )
        for name, check in body.get("checks", {}).items():
            mark = "ok  " if check.get("ok") else "FAIL"
            print(f"  {mark} {name:<10} {check.get('detail', '')}")
    return EXIT_OK if code == 200 and body.get("ready") else EXIT_PROBLEM


def _get_json(url: str, timeout: float) -> tuple[dict[str, Any], int]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read()), response.status
    except urllib.error.HTTPError as exc:  # 503 from /readyz still carries the checks
        return json.loads(exc.read()), exc.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
