"""The catalogue's error tree (pure: shared by the model, the feed, pricing and the store).

Every error says whether trying again can help (``retryable``)::

    CatalogueError                 base
    ├── InvalidDelta               a delta from the cloud breaks the model (a bad type, a price
    │   │                          for an unknown item, a promotion naming a missing SKU, …);
    │   │                          not retryable: the same bytes fail the same way
    │   └── DeltaQuarantined       … and the store kept it in its quarantine table, with the
    │                              reason; the previous catalogue is still in service
    ├── InvalidCursor              a register's cursor token cannot be read; not retryable
    ├── PricingError               a basket cannot be priced; not retryable
    │   ├── UnknownSku             a line names a SKU the catalogue does not hold
    │   ├── NoPrice                the item has no price at that level and time
    │   └── InvalidBasket          a bad quantity, a naive time, an unknown tax code, …
    ├── StorageFull                the catalogue's disk is full; retryable
    └── StoreClosed                the store is closing or closed; retryable (after restart)
"""

from __future__ import annotations

__all__ = [
    "CatalogueError",
    "DeltaQuarantined",
    "InvalidBasket",
    "InvalidCursor",
    "InvalidDelta",
    "NoPrice",
    "PricingError",
    "StorageFull",
    "StoreClosed",
    "UnknownSku",
]


class CatalogueError(Exception):
    retryable = False


class InvalidDelta(CatalogueError):
    """``reason`` is written for a technician: it names the record and what is wrong with it."""

    def __init__(self, reason: str, *, delta_id: str | None = None) -> None:
        super().__init__(reason if delta_id is None else f"delta {delta_id!r}: {reason}")
        self.reason = reason
        self.delta_id = delta_id


class DeltaQuarantined(InvalidDelta):
    def __init__(self, reason: str, *, delta_id: str | None, quarantine_id: int) -> None:
        super().__init__(reason, delta_id=delta_id)
        self.quarantine_id = quarantine_id


class InvalidCursor(CatalogueError):
    pass


class PricingError(CatalogueError):
    pass


class UnknownSku(PricingError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"SKU {sku!r} is not in the catalogue")
        self.sku = sku


class NoPrice(PricingError):
    def __init__(self, sku: str, level: str, at: str) -> None:
        super().__init__(f"SKU {sku!r} has no price at level {level!r} at {at}")
        self.sku = sku
        self.level = level


class InvalidBasket(PricingError):
    pass


class StorageFull(CatalogueError):
    retryable = True


class StoreClosed(CatalogueError):
    retryable = True
