"""The CLI's side of the hub's HTTP API: one JSON call, and the formatting the tables share.

Exit codes as in edge.cli: 0 ok, 1 problem (unknown item, wrong state), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


PIPED_WIDTH = 200
"""Columns of human output written to a pipe or a file: whole rows in a ticket or a grep."""


def output_console() -> Console:
    """Where a command prints for a human: the terminal at its width, or 200 columns when the
    output is piped or captured (rich would otherwise assume 80 and cut the ids). No markup:
    the text shown comes from registers and the cloud, and ``[...]`` in it is literal."""
    console = Console(highlight=False, markup=False, soft_wrap=True)
    if console.is_terminal:
        return console
    return Console(highlight=False, markup=False, soft_wrap=True, width=PIPED_WIDTH)


def print_table(console: Console, table: Table) -> None:
    """``table`` when its unbroken columns fit the console; in a narrower terminal, one block
    per row instead ("column: value" lines): an id the technician copies into a command is
    never cut to fit (rich would end it with an ellipsis)."""
    needed = Measurement.get(console, console.options.update_width(10_000), table).minimum
    if needed <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(table.title)
    headers = [str(column.header) for column in table.columns]
    rows = zip(*(list(column.cells) for column in table.columns), strict=True)
    for row in rows:
        console.print()
        for header, cell in zip(headers, row, strict=True):
            console.print(f"{header}: {cell}")


class Unreachable(Exception):
    """The hub's HTTP API could not be reached (exit 3)."""


def call(url: str, timeout: float, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": {"code": f"HTTP_{exc.code}", "message": exc.reason}}
    except (OSError, ValueError) as exc:
        raise Unreachable(str(exc)) from exc


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")
