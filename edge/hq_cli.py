"""`edge hq status`: is the store connected to HQ, which config is in force, what did HQ send
lately and how did the hub answer. Human (rich) and --json; exit codes as in edge.cli."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.api_client import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE, Unreachable, call


def add_parser(sub: Any) -> None:
    hq = sub.add_parser("hq", help="the link to HQ: config in force, pushes and their acks")
    hq.add_argument("--url", default=None, help="hub API (default: from the settings)")
    hq_sub = hq.add_subparsers(dest="hq_command", required=True)
    status = hq_sub.add_parser("status", help="connection, config version, recent documents")
    status.add_argument("--json", action="store_true")


def run_hq_command(base_url: str, args: argparse.Namespace) -> int:
    try:
        code, body = call(f"{base_url}/api/v1/hq", 10)
    except Unreachable as exc:
        print(f"edge: hub not reachable at {base_url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if code == 404:
        print("edge: the HQ link is off ([hq] enabled = false)", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps(body))
        return EXIT_OK if body["connected"] else EXIT_PROBLEM
    state = "connected" if body["connected"] else "NOT CONNECTED"
    print(f"HQ {body['broker']}: {state}; config version {body['applied_version']} in force")
    table = Table("received", "document", "outcome", "code", "stages")
    for doc in body["documents"]:
        name = f"{doc['kind'] or '?'} v{doc['version']}" if doc["version"] else "(unreadable)"
        stages = " > ".join(s["stage"] for s in doc["stages"])
        table.add_row(doc["received_at"], name, doc["outcome"], doc["code"] or "", stages)
    Console().print(table)
    return EXIT_OK if body["connected"] else EXIT_PROBLEM
