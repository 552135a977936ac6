"""`make bench`: run every benchmark, print each figure, write bench/REPORT.md."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bench import (
    bench_catalogue,
    bench_devices,
    bench_feed,
    bench_netsuite,
    bench_outbox,
    bench_rpc,
)
from bench.common import Report


async def main() -> Report:
    report = Report()
    await bench_rpc.run(report)
    await bench_outbox.run(report)
    await bench_netsuite.run(report)
    await bench_catalogue.run(report)
    await bench_feed.run(report)
    await bench_devices.run(report)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(main())
    out = Path(__file__).resolve().parent / "REPORT.md"
    out.write_text(report.markdown())
    print(f"wrote {out}")
