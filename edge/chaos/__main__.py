"""`python -m edge.chaos`: one randomized chaos run (see edge.chaos); exit 0 only if clean."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rich.console import Console

from edge.chaos.harness import ChaosOptions, ChaosRun
from edge.chaos.report import print_summary, write_json
from edge.chaos.schedule import parse_kinds


def parse_args(argv: list[str]) -> tuple[ChaosOptions, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m edge.chaos",
        description="A store under randomized faults (hub SIGKILLs, broker restarts, WAN flaps, "
        "cloud faults, a full disk, lanes switched off, a damaged outbox file), then the "
        "promise checked.",
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=1, help="the schedule's seed")
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument(
        "--faults",
        default="all",
        help="comma-separated kinds: hub_kill, broker_restart, wan_flap, cloud_fault, "
        "disk_full, lane_flap, rejection, disk_damage (default: all)",
    )
    parser.add_argument("--rate", type=float, default=12.0, help="faults per minute, all kinds")
    parser.add_argument("--sale-every", type=float, default=0.5, help="mean s between sales")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--catalogue-size", type=int, default=300)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        kinds = parse_kinds(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.duration <= 0 or args.lanes < 1 or args.rate <= 0 or args.sale_every <= 0:
        parser.error("--duration, --lanes, --rate and --sale-every must be positive")
    options = ChaosOptions(
        duration_s=args.duration,
        seed=args.seed,
        lanes=args.lanes,
        kinds=kinds,
        rate_per_min=args.rate,
        sale_every_s=args.sale_every,
        drain_timeout_s=args.drain_timeout,
        catalogue_size=args.catalogue_size,
        workdir=args.workdir,
        keep=args.keep,
    )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return options, args.json


def main(argv: list[str] | None = None) -> int:
    options, json_path = parse_args(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(ChaosRun(options, sys.stdout).run())
    summary = result.as_json()
    print_summary(summary, Console())
    if json_path is not None:
        write_json(summary, json_path)
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
