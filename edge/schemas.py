"""JSON Schemas of the register-facing protocol, generated from the code's own types.

``python -m edge.schemas [DIR]`` writes them to docs/schemas/ (``make schemas``); a test fails
when the files there differ from what the code accepts, so the documentation cannot drift.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from edge.bus.envelope import HubStatus, JournalResend, LaneStatus, Reply, Request
from edge.bus.errors import ERROR_CODES
from edge.catalogue.pricing import PricedBasket
from edge.catalogue.service import (
    CATALOGUE_ERROR_CODES,
    LookupRequest,
    LookupResult,
    PriceRequest,
    VersionAnnouncement,
)
from edge.outbox.intake import INTAKE_ERROR_CODES
from edge.outbox.transactions import transaction_json_schema
from edge.outbox.validate import VALIDATION_ERROR_CODES
from edge.relay.core import DEVICE_ERROR_CODES
from edge.relay.displays import ShowRequest
from edge.relay.printers import DrawerRequest, PrintRequest
from edge.relay.scales import WeighRequest
from edge.relay.status import DeviceStatus
from edge.security.api import EnrollRequest, EnrollResponse

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def _schema(typ: Any, title: str, description: str) -> dict[str, Any]:
    schema = msgspec.json.schema(typ)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        **schema,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every message a register sends or receives."""
    return {
        "request.json": _schema(
            Request, "Request envelope", "Every request a register publishes on an rpc topic."
        ),
        "reply.json": _schema(
            Reply, "Reply envelope", "Every reply the hub publishes to a response topic."
        ),
        "lane-status.json": _schema(
            LaneStatus, "Lane presence", "Retained on store/{store}/lane/{lane}/status."
        ),
        "journal-resend.json": _schema(
            JournalResend,
            "Journal re-send request",
            "Retained on store/{store}/hub/journal/resend after the hub lost items.",
        ),
        "hub-status.json": _schema(
            HubStatus, "Hub presence", "Retained on store/{store}/hub/status."
        ),
        "transaction.json": transaction_json_schema(),
        "enroll-request.json": _schema(
            EnrollRequest,
            "Enrollment request",
            "POST /api/v1/enroll over TLS: the technician's code and the device's CSR.",
        ),
        "enroll-response.json": _schema(
            EnrollResponse,
            "Enrollment answer",
            "The device's certificate, the hub CA and the broker's mutual-TLS port "
            "(also the answer of POST /api/v1/enroll/renew).",
        ),
        "device-status.json": _schema(
            DeviceStatus,
            "Device status",
            "Retained on store/{store}/device/{name}/status: a shared printer's, display's "
            "or scale's state.",
        ),
        "device-print.json": _schema(
            PrintRequest, "device.print data", "A receipt for a shared printer, once per id."
        ),
        "device-drawer.json": _schema(
            DrawerRequest, "device.drawer data", "Open the cash drawer wired to a printer."
        ),
        "display-show.json": _schema(
            ShowRequest, "display.show data", "Text for a customer display, once per id."
        ),
        "scale-request.json": _schema(
            WeighRequest, "scale.* data", "scale.weigh, scale.zero, scale.tare, scale.release."
        ),
        "catalogue-version.json": _schema(
            VersionAnnouncement,
            "Catalogue version",
            "Retained on store/{store}/catalogue/version: the catalogue the hub serves now.",
        ),
        "catalogue-lookup.json": _schema(
            LookupRequest, "catalogue.lookup data", "Look an item up by barcode or SKU."
        ),
        "catalogue-lookup-result.json": _schema(
            LookupResult,
            "catalogue.lookup reply data",
            "The item, its price in force and its active promotions, from one version.",
        ),
        "catalogue-price.json": _schema(
            PriceRequest, "catalogue.price data", "A basket to price on the hub."
        ),
        "catalogue-price-result.json": _schema(
            PricedBasket,
            "catalogue.price reply data",
            "The basket priced against one catalogue version, every promotion explained.",
        ),
    }


def all_error_codes() -> dict[str, tuple[bool, str]]:
    """Every stable error code a register can receive: code -> (retryable, meaning).

    The bus's own codes come first; a method's codes with the same name keep the bus meaning.
    """
    codes = dict(ERROR_CODES)
    for extra in (
        VALIDATION_ERROR_CODES,
        INTAKE_ERROR_CODES,
        CATALOGUE_ERROR_CODES,
        DEVICE_ERROR_CODES,
    ):
        for code, value in extra.items():
            codes.setdefault(code, value)
    return codes


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(
    directory: Path = DEFAULT_DIR, schemas: Mapping[str, dict[str, Any]] | None = None
) -> list[Path]:
    """Write ``schemas`` (default: the register protocol's) as files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in (all_schemas() if schemas is None else schemas).items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR):
        print(path)
