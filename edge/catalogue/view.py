"""What pricing reads from a catalogue: a small protocol, and an in-memory implementation.

Theory of operation
-------------------
:func:`edge.catalogue.pricing.price_basket` is pure and synchronous, so it cannot await the
store. The store instead loads everything one basket can touch (its items, their prices, the
promotions naming them, the tax codes) in ONE read transaction into a :class:`MemoryCatalogue`
(:meth:`edge.catalogue.store.CatalogueStore.pricing_view`); pricing then runs on that
consistent, point-in-time copy. Tests build a :class:`MemoryCatalogue` by hand. The time rules
(which price is in force, which promotion is active) live in :mod:`edge.catalogue.model` and are
the same here, in the store and on every lane.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from edge.catalogue.model import Item, Price, Promotion, TaxCode, active_at, select_price

__all__ = ["CatalogueView", "MemoryCatalogue"]


class CatalogueView(Protocol):
    """Read access to one consistent version of the catalogue."""

    @property
    def version(self) -> int:
        """The change sequence this view reflects (0: unknown or empty)."""
        ...

    def item(self, sku: str) -> Item | None: ...

    def price(self, sku: str, level: str, at: dt.datetime) -> Price | None:
        """The price of ``sku`` at ``level`` in force at ``at`` (:func:`select_price`)."""
        ...

    def promotions(self, skus: Collection[str], at: dt.datetime) -> Sequence[Promotion]:
        """Promotions active at ``at`` naming at least one of ``skus``, in any order."""
        ...

    def tax_code(self, code: str) -> TaxCode | None: ...


class MemoryCatalogue:
    """A :class:`CatalogueView` over records held in memory."""

    def __init__(
        self,
        *,
        items: Iterable[Item] = (),
        prices: Iterable[Price] = (),
        promotions: Iterable[Promotion] = (),
        tax_codes: Iterable[TaxCode] = (),
        version: int = 0,
    ) -> None:
        self._version = version
        self._items = {item.sku: item for item in items}
        self._prices: dict[str, list[Price]] = defaultdict(list)
        for price in prices:
            self._prices[price.sku].append(price)
        self._promotions = {p.promotion_id: p for p in promotions}
        self._by_sku: dict[str, list[Promotion]] = defaultdict(list)
        for promotion in self._promotions.values():
            for sku in promotion.skus:
                self._by_sku[sku].append(promotion)
        self._tax_codes = {tax.code: tax for tax in tax_codes}

    @property
    def version(self) -> int:
        return self._version

    def item(self, sku: str) -> Item | None:
        return self._items.get(sku)

    def price(self, sku: str, level: str, at: dt.datetime) -> Price | None:
        return select_price(self._prices.get(sku, ()), level, at)

    def promotions(self, skus: Collection[str], at: dt.datetime) -> Sequence[Promotion]:
        found: dict[str, Promotion] = {}
        for sku in skus:
            for promotion in self._by_sku.get(sku, ()):
                if active_at(promotion.valid_from, promotion.valid_to, at):
                    found[promotion.promotion_id] = promotion
        return list(found.values())

    def tax_code(self, code: str) -> TaxCode | None:
        return self._tax_codes.get(code)
