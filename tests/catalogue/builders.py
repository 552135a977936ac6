"""Record builders shared by the catalogue tests (plain constructors, no I/O)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from edge.catalogue.model import (
    CustomField,
    CustomValue,
    Deletions,
    Delta,
    Item,
    Price,
    TaxCode,
    encode,
)

T0 = 1_800_000_000.0
"""Wall-clock epoch seconds passed as ``now`` to the store."""
DAY = 86_400.0
AT = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
"""A pricing time."""

STD = TaxCode(code="STD", rate=Decimal("0.2"), included=True)
RED = TaxCode(code="RED", rate=Decimal("0.055"), included=True)


def item(
    sku: str,
    *,
    name: str | None = None,
    barcodes: list[str] | None = None,
    tax_code: str = "STD",
    custom: dict[str, CustomValue] | None = None,
    weighed: bool = False,
) -> Item:
    return Item(
        sku=sku,
        names={"en": name or f"Item {sku}"},
        tax_code=tax_code,
        barcodes=barcodes or [],
        custom=custom or {},
        weighed=weighed,
        unit="kg" if weighed else "each",
    )


def price(sku: str, amount: str, **kw: Any) -> Price:
    return Price(sku=sku, amount=Decimal(amount), **kw)


def field(name: str, label: str | None = None) -> CustomField:
    return CustomField(name=name, label=label or name.title())


def delta(delta_id: str, *, deleted: Deletions | None = None, **kw: Any) -> Delta:
    return Delta(delta_id=delta_id, deleted=deleted or Deletions(), **kw)


def wire(d: Delta) -> bytes:
    """A delta as the cloud sends it."""
    return encode(d)
