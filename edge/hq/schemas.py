"""JSON Schemas of the HQ link's messages, generated from the code's own types, like
:mod:`edge.schemas` for the register protocol.

``python -m edge.hq.schemas [DIR]`` writes them to docs/schemas/; a test fails when the files
there differ from what the code sends and accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edge.hq.apply import LaneConfigMessage
from edge.hq.config import Ack, Command, Envelope, HqConfig
from edge.hq.link import LinkStatus
from edge.hq.telemetry import Telemetry
from edge.schemas import DEFAULT_DIR, _schema
from edge.schemas import write as write_schemas


def hq_schemas() -> dict[str, dict[str, Any]]:
    return {
        "hq-envelope.json": _schema(
            Envelope,
            "HQ envelope",
            "What HQ publishes on {prefix}/.../config and .../command: a signed document.",
        ),
        "hq-config.json": _schema(
            HqConfig,
            "HQ config payload",
            "The payload of a config document: HQ's whole overlay of the live-changeable keys.",
        ),
        "hq-command.json": _schema(
            Command, "HQ command payload", "The payload of a command document."
        ),
        "hq-ack.json": _schema(
            Ack, "HQ acknowledgement", "One stage of one document, on {prefix}/store/{store}/ack."
        ),
        "hq-telemetry.json": _schema(
            Telemetry, "HQ telemetry", "The hub's health, on {prefix}/store/{store}/telemetry."
        ),
        "hq-status.json": _schema(
            LinkStatus,
            "HQ link presence",
            "Retained on {prefix}/store/{store}/status; the last will says offline.",
        ),
        "lane-config.json": _schema(
            LaneConfigMessage,
            "Lane config",
            "Retained on store/{store}/lane/{lane}/config: the lane's settings from HQ.",
        ),
    }


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    return write_schemas(directory, hq_schemas())


if __name__ == "__main__":  # pragma: no cover
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR):
        print(path)
