"""The simulated record service's state: records, external ids, validation and transforms.

Theory of operation
-------------------
:class:`RecordStore` holds every record written through the REST record service (ref §1), keyed
by type and internal id, with an index of external ids. It does no I/O and reads no clock; each
write takes ``now``. The operations mirror the HTTP ones one for one:

- :meth:`~RecordStore.create` (``POST /record/v1/<type>``): a new record; an ``externalId`` that
  the type already holds is refused (400 ``USER_ERROR`` "This record already exists": the real
  code for a duplicate external id on POST is UNCERTAIN, ref §1.5);
- :meth:`~RecordStore.upsert` (``PUT /record/v1/<type>/eid:<ext>``): creates the record if the
  external id is new, else updates it; never a second record (ref §1.5);
- :meth:`~RecordStore.update` (``PATCH``), :meth:`~RecordStore.delete`, :meth:`~RecordStore.get`;
- :meth:`~RecordStore.transform` (``POST /<type>/<id>/!transform/<target>``): a new record of the
  target type pre-filled from the source (customer, lines, ``createdFrom``), then overlaid with
  the request body (ref §1.7).

External ids (ref §1.5): only ``[A-Za-z0-9_-]``; unique per record type; compared without case,
as NetSuite does ("the external ID attribute is case insensitive"). The spelling first written is
the one kept. Updates replace the top-level fields they name; a sublist named in an update
replaces the whole sublist (NetSuite's ``?replace=`` behaviour, the simplest safe model).

Validation refuses, before anything is stored, what NetSuite refuses (ref §1.6, §1.7, §3):

- a reference to an item that does not exist or is inactive, or to a customer that does not
  exist: 400 ``INVALID_CONTENT`` "You have entered an Invalid Field Value <v> for the following
  field: <f>" with ``o:errorPath`` (``item.items[2].item``, ``entity``);
- a missing mandatory field or sublist: 400 ``USER_ERROR`` "Please enter value(s) for: <label>";
- a journal entry whose debits and credits differ: 400 ``USER_ERROR``, path ``line``;
- a value of the wrong JSON type, an external id with other characters, a bad ``tranDate``:
  400 ``INVALID_CONTENT``;
- an external id on the simulator's rejection list: the rejection chosen for it;
- when the store was given the account's ``locations`` or ``payment_methods`` (internal ids;
  None, the default, accepts any), a transaction whose ``location`` or ``paymentMethod`` /
  ``paymentOption`` names another id: 400 ``INVALID_CONTENT`` Invalid Field Value.

Mandatory fields per type (a simplified but strict reading of the record pages):

===========================================  =================================================
 cashSale, cashRefund, creditMemo, invoice,  ``entity`` (a customer) and ``item.items`` (>= 1
 returnAuthorization, salesOrder             line, each with ``item``; ``quantity``, ``rate``,
                                             ``amount`` numbers when present)
 customerPayment                             ``customer``, ``payment`` > 0; ``apply.items[].doc``
                                             must be an existing transaction
 journalEntry                                ``line.items`` (>= 2 lines, each ``account`` and one
                                             of ``debit``/``credit``); debits == credits
 inventoryAdjustment                         ``account``, ``inventory.items`` (>= 1 line, each
                                             ``item`` and ``adjustQtyBy``)
 customer                                    ``companyName``, or ``firstName`` and ``lastName``
                                             when ``isPerson`` is true
===========================================  =================================================
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from edge.sim.netsuite.catalogue import Catalogue
from edge.sim.netsuite.errors import (
    NsError,
    invalid_content,
    invalid_field_value,
    missing_value,
    user_error,
)

__all__ = [
    "EXTERNAL_ID",
    "RECORD_TYPES",
    "TRANSACTION_TYPES",
    "TRANSFORMS",
    "TYPE_CODES",
    "RecordStore",
    "Rejection",
    "StoredRecord",
    "canonical_type",
    "iso_utc",
    "parse_ref",
]

RECORD_TYPES: Final = (
    "cashSale",
    "cashRefund",
    "creditMemo",
    "customer",
    "customerPayment",
    "invoice",
    "journalEntry",
    "returnAuthorization",
    "inventoryAdjustment",
    "salesOrder",
)
_CANONICAL: Final = {name.lower(): name for name in RECORD_TYPES}
TRANSACTION_TYPES: Final = frozenset(RECORD_TYPES) - {"customer"}
# SuiteQL transaction.type codes (ref §4.3).
TYPE_CODES: Final[Mapping[str, str]] = {
    "cashSale": "CashSale",
    "cashRefund": "CashRfnd",
    "creditMemo": "CustCred",
    "customerPayment": "CustPymt",
    "invoice": "CustInvc",
    "journalEntry": "Journal",
    "returnAuthorization": "RtnAuth",
    "inventoryAdjustment": "InvAdjst",
    "salesOrder": "SalesOrd",
}
TYPE_NAMES: Final[Mapping[str, str]] = {
    "CashSale": "Cash Sale",
    "CashRfnd": "Cash Refund",
    "CustCred": "Credit Memo",
    "CustPymt": "Payment",
    "CustInvc": "Invoice",
    "Journal": "Journal",
    "RtnAuth": "Return Authorization",
    "InvAdjst": "Inventory Adjustment",
    "SalesOrd": "Sales Order",
}
_TRAN_PREFIX: Final[Mapping[str, str]] = {
    "cashSale": "CS",
    "cashRefund": "CR",
    "creditMemo": "CM",
    "customerPayment": "PYMT",
    "invoice": "INV",
    "journalEntry": "JE",
    "returnAuthorization": "RMA",
    "inventoryAdjustment": "ADJ",
    "salesOrder": "SO",
}
# Source -> targets (ref §1.2, §1.7).
TRANSFORMS: Final[Mapping[str, frozenset[str]]] = {
    "cashSale": frozenset({"cashRefund", "returnAuthorization"}),
    "returnAuthorization": frozenset({"cashRefund", "creditMemo"}),
    "invoice": frozenset({"creditMemo", "customerPayment", "returnAuthorization"}),
    "salesOrder": frozenset({"invoice", "cashSale"}),
}
_ITEM_LINE_TYPES: Final = frozenset(
    {"cashSale", "cashRefund", "creditMemo", "invoice", "returnAuthorization", "salesOrder"}
)
EXTERNAL_ID: Final = re.compile(r"[A-Za-z0-9_-]+")
_INTERNAL_ID: Final = re.compile(r"[1-9][0-9]{0,17}")
_DATE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_READ_ONLY: Final = frozenset({"id", "links", "refName"})
_LINE_FIELDS: Final = ("item", "quantity", "rate", "amount", "description", "price", "units")
_COPIED_HEADER_FIELDS: Final = ("subsidiary", "location", "department", "class", "currency")


def canonical_type(name: str) -> str | None:
    """The camelCase record type for a path segment in any case (ref §1.1), or None."""
    return _CANONICAL.get(name.lower())


def iso_utc(epoch: float) -> str:
    """``2020-12-09T12:04:40Z`` (ref §1.8)."""
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def not_found(detail: str = "") -> NsError:
    return NsError(
        404,
        "NONEXISTENT_ID",
        detail or "The record instance does not exist. Provide a valid record instance ID.",
    )


def parse_ref(segment: str) -> tuple[str, int | str]:
    """A record path segment: ``("id", 647)`` or ``("eid", "CID002")`` (ref §1.5).

    An ``eid:`` with characters outside ``[A-Za-z0-9_-]`` is a 400 ``INVALID_PARAMETER``; an id
    that is not a positive integer is a 404, as no record can have it.
    """
    if segment[:4].lower() == "eid:":
        external = segment[4:]
        if not EXTERNAL_ID.fullmatch(external):
            raise NsError(
                400,
                "INVALID_PARAMETER",
                f"Invalid external ID {external!r}: an external ID may contain only letters, "
                "numbers, underscore (_) and hyphen (-).",
            )
        return "eid", external
    if not _INTERNAL_ID.fullmatch(segment):
        raise not_found()
    return "id", int(segment)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A business rule that refuses one external id (set by tests; status 4xx)."""

    status: int = 400
    code: str = "USER_ERROR"
    detail: str = "The record was refused by a business rule (simulated)."

    def error(self, external_id: str) -> NsError:
        return NsError(self.status, self.code, self.detail.replace("{externalId}", external_id))


@dataclass(slots=True)
class StoredRecord:
    """One record as the simulated NetSuite holds it."""

    record_type: str
    id: int
    external_id: str | None
    fields: dict[str, Any]
    created_at: float
    modified_at: float
    tran_id: str | None
    revision: int = 1
    created_from: tuple[str, int] | None = None
    entity_id: int | None = None
    """The customer the transaction is for (``entity``, or ``customer`` on a payment)."""

    @property
    def is_transaction(self) -> bool:
        return self.record_type in TRANSACTION_TYPES

    @property
    def total(self) -> Decimal:
        """The record's total, computed as NetSuite would show it (lines, payment or debits)."""
        if self.record_type == "customerPayment":
            return _decimal(self.fields.get("payment"))
        if self.record_type == "journalEntry":
            return sum(
                (_decimal(line.get("debit")) for line in _lines(self.fields, "line")), Decimal(0)
            )
        if self.record_type == "inventoryAdjustment":
            return Decimal(0)
        total = Decimal(0)
        for line in _lines(self.fields, "item"):
            if line.get("amount") is not None:
                total += _decimal(line["amount"])
            elif line.get("rate") is not None:
                total += _decimal(line["rate"]) * _decimal(line.get("quantity", 1))
        return total

    @property
    def tran_date(self) -> int:
        """``tranDate`` as epoch seconds of that UTC midnight (default: the creation day)."""
        raw = self.fields.get("tranDate")
        if isinstance(raw, str) and (match := _DATE.fullmatch(raw)):
            day = dt.date(int(match[1]), int(match[2]), int(match[3]))
        else:
            day = dt.datetime.fromtimestamp(int(self.created_at), tz=dt.UTC).date()
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())

    @property
    def name(self) -> str:
        """A customer's display name (company, else first and last name)."""
        company = self.fields.get("companyName")
        if isinstance(company, str) and company:
            return company
        return " ".join(str(self.fields.get(k, "")) for k in ("firstName", "lastName")).strip()


def _lines(fields: Mapping[str, Any], sublist: str) -> list[dict[str, Any]]:
    value = fields.get(sublist)
    if isinstance(value, dict) and isinstance(value.get("items"), list):
        return [line for line in value["items"] if isinstance(line, dict)]
    return []


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        return Decimal(0)
    if isinstance(value, int | float):
        return Decimal(str(value))
    return Decimal(0)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(slots=True)
class _Counters:
    tran_ids: Counter[str] = field(default_factory=Counter)


class RecordStore:
    """Records, the external-id index and the exactly-once counters. No I/O and no clock."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        seed_customers: Iterable[str] = ("Walk-in Customer",),
        accounts: Iterable[int] | None = None,
        locations: Iterable[int] | None = None,
        payment_methods: Iterable[int] | None = None,
        now: float = 0.0,
    ) -> None:
        self.catalogue = catalogue
        self.accounts: frozenset[int] | None = None if accounts is None else frozenset(accounts)
        self.locations: set[int] | None = None if locations is None else set(locations)
        """Internal ids a transaction's ``location`` may name (None: any)."""
        self.payment_methods: set[int] | None = (
            None if payment_methods is None else set(payment_methods)
        )
        """Internal ids ``paymentMethod`` / ``paymentOption`` may name (None: any)."""
        self.rejections: dict[str, Rejection] = {}
        """Lower-cased external id -> the rejection every write of it gets."""
        self.create_counts: Counter[tuple[str, str]] = Counter()
        """(type, lower-cased external id) -> records created: the exactly-once check."""
        self.update_counts: Counter[tuple[str, str]] = Counter()
        self._records: dict[str, dict[int, StoredRecord]] = {t: {} for t in RECORD_TYPES}
        self._by_external: dict[tuple[str, str], int] = {}
        self._next_id = 1
        self._tran_numbers: Counter[str] = Counter()
        for name in seed_customers:
            self.create("customer", {"companyName": name}, now)

    # -- reading -------------------------------------------------------------------------------

    def records(self, record_type: str) -> list[StoredRecord]:
        """Every record of ``record_type`` (any case), oldest first."""
        return list(self._records[self._type(record_type)].values())

    def all_records(self) -> Iterator[StoredRecord]:
        for by_id in self._records.values():
            yield from by_id.values()

    def find(
        self,
        record_type: str,
        *,
        internal_id: int | None = None,
        external_id: str | None = None,
    ) -> StoredRecord | None:
        rtype = self._type(record_type)
        if external_id is not None:
            found = self._by_external.get((rtype, external_id.lower()))
            if found is None:
                return None
            internal_id = found
        if internal_id is None:
            return None
        return self._records[rtype].get(internal_id)

    def get(self, record_type: str, ref: str) -> StoredRecord:
        """The record a path segment (``647`` or ``eid:X``) names, else 404 NONEXISTENT_ID."""
        rtype = self._type(record_type)
        kind, value = parse_ref(ref)
        record = (
            self.find(rtype, external_id=str(value))
            if kind == "eid"
            else self.find(rtype, internal_id=int(value))
        )
        if record is None:
            raise not_found()
        return record

    def create_count(self, external_id: str, record_type: str | None = None) -> int:
        """Records ever created with ``external_id`` (any case), of one type or of all types."""
        key = external_id.lower()
        if record_type is not None:
            return self.create_counts[(self._type(record_type), key)]
        return sum(n for (_, ext), n in self.create_counts.items() if ext == key)

    @staticmethod
    def _type(record_type: str) -> str:
        rtype = canonical_type(record_type)
        if rtype is None:
            raise KeyError(f"unknown record type {record_type!r}")
        return rtype

    # -- writing -------------------------------------------------------------------------------

    def create(self, record_type: str, body: Mapping[str, Any], now: float) -> StoredRecord:
        """POST: a new record. Refuses an external id the type already holds."""
        rtype = self._type(record_type)
        fields = _writable(body)
        external = _body_external_id(fields)
        if external is not None:
            self._check_rejection(external)
            if (rtype, external.lower()) in self._by_external:
                raise user_error(
                    f"This record already exists: a {rtype} with external ID {external} exists.",
                    "externalId",
                )
        entity = self._validate(rtype, fields)
        return self._insert(rtype, fields, external, entity, now)

    def upsert(
        self, record_type: str, external_id: str, body: Mapping[str, Any], now: float
    ) -> tuple[StoredRecord, bool]:
        """PUT eid: create the record if the external id is new, else update it.

        Returns the record and whether it was created. ``externalId`` in the body, if any, must
        name the same external id (ignoring case).
        """
        rtype = self._type(record_type)
        parse_ref(f"eid:{external_id}")  # the 400 for characters outside [A-Za-z0-9_-]
        fields = _writable(body)
        in_body = _body_external_id(fields)
        if in_body is not None and in_body.lower() != external_id.lower():
            raise invalid_content(
                f"The externalId {in_body} in the body differs from the {external_id} in the URL.",
                "externalId",
            )
        self._check_rejection(external_id)
        existing = self.find(rtype, external_id=external_id)
        if existing is None:
            fields["externalId"] = external_id
            entity = self._validate(rtype, fields)
            return self._insert(rtype, fields, external_id, entity, now), True
        fields.pop("externalId", None)
        self._apply_update(existing, fields, now)
        return existing, False

    def update(
        self, record_type: str, ref: str, body: Mapping[str, Any], now: float
    ) -> StoredRecord:
        """PATCH: change the named fields of an existing record (404 if there is none)."""
        record = self.get(record_type, ref)
        fields = _writable(body)
        in_body = _body_external_id(fields)
        if (
            in_body is not None
            and (record.external_id is None or in_body.lower() != record.external_id.lower())
            and (record.record_type, in_body.lower()) in self._by_external
        ):
            raise user_error(
                f"This record already exists: external ID {in_body} is taken.", "externalId"
            )
        self._apply_update(record, fields, now)
        return record

    def delete(self, record_type: str, ref: str) -> StoredRecord:
        record = self.get(record_type, ref)
        del self._records[record.record_type][record.id]
        if record.external_id is not None:
            self._by_external.pop((record.record_type, record.external_id.lower()), None)
        return record

    def transform(
        self,
        source_type: str,
        ref: str,
        target_type: str,
        body: Mapping[str, Any],
        now: float,
    ) -> StoredRecord:
        """POST !transform: a new ``target_type`` record made from the source (ref §1.7)."""
        stype = self._type(source_type)
        ttype = self._type(target_type)
        if ttype not in TRANSFORMS.get(stype, frozenset()):
            raise NsError(
                400,
                "INVALID_PARAMETER",
                f"The transformation of {stype} into {ttype} is not supported.",
            )
        source = self.get(stype, ref)
        fields = self._transformed(source, ttype)
        fields.update(_writable(body))
        external = _body_external_id(fields)
        if external is not None:
            self._check_rejection(external)
            if (ttype, external.lower()) in self._by_external:
                raise user_error(
                    f"This record already exists: a {ttype} with external ID {external} exists.",
                    "externalId",
                )
        entity = self._validate(ttype, fields)
        record = self._insert(ttype, fields, external, entity, now)
        record.created_from = (stype, source.id)
        return record

    def _transformed(self, source: StoredRecord, target: str) -> dict[str, Any]:
        fields: dict[str, Any] = {"createdFrom": {"id": str(source.id)}}
        customer = {"id": str(source.entity_id)} if source.entity_id is not None else None
        if target == "customerPayment":
            fields["customer"] = customer
            fields["payment"] = float(source.total)
            fields["apply"] = {
                "items": [
                    {"doc": {"id": str(source.id)}, "apply": True, "amount": float(source.total)}
                ]
            }
            return fields
        fields["entity"] = customer
        for name in _COPIED_HEADER_FIELDS:
            if name in source.fields:
                fields[name] = copy.deepcopy(source.fields[name])
        fields["item"] = {
            "items": [
                {k: copy.deepcopy(line[k]) for k in _LINE_FIELDS if k in line}
                for line in _lines(source.fields, "item")
            ]
        }
        return fields

    def _check_rejection(self, external_id: str) -> None:
        rejection = self.rejections.get(external_id.lower())
        if rejection is not None:
            raise rejection.error(external_id)

    def _apply_update(self, record: StoredRecord, fields: dict[str, Any], now: float) -> None:
        merged = {**record.fields, **fields}
        entity = self._validate(record.record_type, merged)
        new_external = _body_external_id(fields)
        if new_external is not None and record.external_id is None:
            record.external_id = new_external
            self._by_external[(record.record_type, new_external.lower())] = record.id
        record.fields = merged
        record.entity_id = entity
        record.modified_at = now
        record.revision += 1
        if record.external_id is not None:
            self.update_counts[(record.record_type, record.external_id.lower())] += 1

    def _insert(
        self,
        rtype: str,
        fields: dict[str, Any],
        external: str | None,
        entity: int | None,
        now: float,
    ) -> StoredRecord:
        record_id = self._next_id
        self._next_id += 1
        tran_id: str | None = None
        if rtype in TRANSACTION_TYPES:
            given = fields.get("tranId")
            if isinstance(given, str) and given:
                tran_id = given
            else:
                self._tran_numbers[rtype] += 1
                tran_id = f"{_TRAN_PREFIX[rtype]}{self._tran_numbers[rtype]:06d}"
        record = StoredRecord(
            rtype, record_id, external, fields, now, now, tran_id, entity_id=entity
        )
        self._records[rtype][record_id] = record
        if external is not None:
            self._by_external[(rtype, external.lower())] = record_id
            self.create_counts[(rtype, external.lower())] += 1
        return record

    # -- validation ------------------------------------------------------------------------------

    def _validate(self, rtype: str, fields: Mapping[str, Any]) -> int | None:
        """Refuse what NetSuite refuses; return the id of the customer the record is for."""
        external = fields.get("externalId")
        if external is not None and (
            not isinstance(external, str) or not EXTERNAL_ID.fullmatch(external)
        ):
            raise invalid_content(
                f"Invalid external ID {external!r}: an external ID may contain only letters, "
                "numbers, underscore (_) and hyphen (-).",
                "externalId",
            )
        tran_date = fields.get("tranDate")
        if tran_date is not None:
            _check_date(tran_date, "tranDate")
        memo = fields.get("memo")
        if memo is not None and not isinstance(memo, str):
            raise invalid_content("memo must be a string.", "memo")
        if rtype in TRANSACTION_TYPES:
            self._listed_ref(fields, "location", self.locations)
            self._listed_ref(fields, "paymentMethod", self.payment_methods)
            self._listed_ref(fields, "paymentOption", self.payment_methods)
        if rtype == "customer":
            self._validate_customer(fields)
        elif rtype in _ITEM_LINE_TYPES:
            entity = self._resolve_customer(fields, "entity", "Customer")
            self._validate_item_lines(fields)
            return entity
        elif rtype == "customerPayment":
            return self._validate_payment(fields)
        elif rtype == "journalEntry":
            self._validate_journal(fields)
        elif rtype == "inventoryAdjustment":
            self._validate_adjustment(fields)
        return None

    @staticmethod
    def _listed_ref(fields: Mapping[str, Any], name: str, allowed: set[int] | None) -> None:
        ref = fields.get(name)
        if ref is None or allowed is None:
            return
        raw = ref.get("id") if isinstance(ref, dict) else ref
        text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if not _INTERNAL_ID.fullmatch(text) or int(text) not in allowed:
            raise invalid_field_value(raw, name, name)

    def _validate_customer(self, fields: Mapping[str, Any]) -> None:
        def text(name: str) -> bool:
            value = fields.get(name)
            if value is not None and not isinstance(value, str):
                raise invalid_content(f"{name} must be a string.", name)
            return isinstance(value, str) and bool(value.strip())

        if fields.get("isPerson") is True:
            if not text("firstName"):
                raise missing_value("First Name", "firstName")
            if not text("lastName"):
                raise missing_value("Last Name", "lastName")
        elif not text("companyName"):
            raise missing_value("Company Name", "companyName")

    def _customer_of(self, ref: Mapping[str, Any]) -> StoredRecord | None:
        if "id" in ref:
            raw = ref["id"]
            text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
            return (
                self._records["customer"].get(int(text)) if _INTERNAL_ID.fullmatch(text) else None
            )
        raw = ref.get("externalId")
        return self.find("customer", external_id=raw) if isinstance(raw, str) else None

    def _resolve_customer(self, fields: Mapping[str, Any], name: str, label: str) -> int:
        ref = fields.get(name)
        if ref is None:
            raise missing_value(label, name)
        if not isinstance(ref, dict):
            raise invalid_content(f'{name} must be a reference object like {{"id": "1"}}.', name)
        if "id" not in ref and "externalId" not in ref:
            raise missing_value(label, name)
        customer = self._customer_of(ref)
        if customer is None:
            raise invalid_field_value(ref.get("id", ref.get("externalId")), name, name)
        return customer.id

    def _item_ref(self, line: Mapping[str, Any], path: str, *, allow_inactive: bool) -> None:
        ref = line.get("item")
        if ref is None:
            raise missing_value("Item", path)
        if not isinstance(ref, dict) or "id" not in ref:
            raise invalid_content('item must be a reference object like {"id": "42"}.', path)
        raw = ref["id"]
        text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if not _INTERNAL_ID.fullmatch(text):
            raise invalid_field_value(raw, "item", path)
        item_id = int(text)
        usable = (
            self.catalogue.exists(item_id) if allow_inactive else self.catalogue.is_active(item_id)
        )
        if not usable:
            raise invalid_field_value(raw, "item", path)

    def _sublist(self, fields: Mapping[str, Any], name: str, label: str) -> list[Any]:
        value = fields.get(name)
        if value is None:
            raise missing_value(label, name)
        if not isinstance(value, dict) or not isinstance(value.get("items"), list):
            raise invalid_content(f'{name} must be a sublist object {{"items": [...]}}.', name)
        items: list[Any] = value["items"]
        if not items:
            raise missing_value(label, f"{name}.items")
        for index, line in enumerate(items):
            if not isinstance(line, dict):
                raise invalid_content("a sublist line must be an object.", f"{name}.items[{index}]")
        return items

    @staticmethod
    def _numbers(line: Mapping[str, Any], path: str, names: Iterable[str]) -> None:
        for name in names:
            value = line.get(name)
            if value is not None and not _is_number(value):
                raise invalid_content(f"{name} must be a number.", f"{path}.{name}")

    def _validate_item_lines(self, fields: Mapping[str, Any]) -> None:
        for index, line in enumerate(self._sublist(fields, "item", "Items")):
            path = f"item.items[{index}]"
            self._item_ref(line, f"{path}.item", allow_inactive=False)
            self._numbers(line, path, ("quantity", "rate", "amount"))

    def _validate_payment(self, fields: Mapping[str, Any]) -> int:
        customer = self._resolve_customer(fields, "customer", "Customer")
        payment = fields.get("payment")
        if payment is None:
            raise missing_value("Payment Amount", "payment")
        if not _is_number(payment) or payment <= 0:
            raise invalid_content("payment must be a positive number.", "payment")
        apply = fields.get("apply")
        if apply is None:
            return customer
        if not isinstance(apply, dict) or not isinstance(apply.get("items"), list):
            raise invalid_content('apply must be a sublist object {"items": [...]}.', "apply")
        for index, line in enumerate(apply["items"]):
            path = f"apply.items[{index}]"
            if not isinstance(line, dict):
                raise invalid_content("a sublist line must be an object.", path)
            doc = line.get("doc")
            raw = doc.get("id") if isinstance(doc, dict) else doc
            text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
            found = _INTERNAL_ID.fullmatch(text) and any(
                int(text) in self._records[t] for t in TRANSACTION_TYPES
            )
            if not found:
                raise invalid_field_value(raw, "doc", f"{path}.doc")
            self._numbers(line, path, ("amount",))
        return customer

    def _account(self, line: Mapping[str, Any], path: str) -> None:
        ref = line.get("account")
        if ref is None:
            raise missing_value("Account", path)
        raw = ref.get("id") if isinstance(ref, dict) else None
        text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if not _INTERNAL_ID.fullmatch(text) or (
            self.accounts is not None and int(text) not in self.accounts
        ):
            raise invalid_field_value(raw, "account", path)

    def _validate_journal(self, fields: Mapping[str, Any]) -> None:
        lines = self._sublist(fields, "line", "Lines")
        debits = credits = Decimal(0)
        for index, line in enumerate(lines):
            path = f"line.items[{index}]"
            self._account(line, f"{path}.account")
            self._numbers(line, path, ("debit", "credit"))
            debit, credit = line.get("debit"), line.get("credit")
            if (debit is None) == (credit is None):
                raise invalid_content("a journal line has either a debit or a credit.", path)
            if (debit is not None and debit < 0) or (credit is not None and credit < 0):
                raise invalid_content("debit and credit amounts are not negative.", path)
            debits += _decimal(debit)
            credits += _decimal(credit)
        if len(lines) < 2:
            raise missing_value("at least two Lines", "line.items")
        cent = Decimal("0.01")
        if debits.quantize(cent) != credits.quantize(cent):
            raise user_error(
                f"The journal entry is out of balance: debits {debits.quantize(cent)} and "
                f"credits {credits.quantize(cent)} must be equal.",
                "line",
            )

    def _validate_adjustment(self, fields: Mapping[str, Any]) -> None:
        self._account(fields, "account")
        for index, line in enumerate(self._sublist(fields, "inventory", "Adjustments")):
            path = f"inventory.items[{index}]"
            self._item_ref(line, f"{path}.item", allow_inactive=True)
            if line.get("adjustQtyBy") is None:
                raise missing_value("Adjust Qty. By", f"{path}.adjustQtyBy")
            self._numbers(line, path, ("adjustQtyBy",))

    # -- rendering -------------------------------------------------------------------------------

    def render(self, record: StoredRecord, base_url: str, *, expand: bool) -> dict[str, Any]:
        """The GET answer of ``record`` (ref §10.3: ``id``, ``links``, ``refName``s).

        Sublists are links only unless ``expand`` (``?expandSubResources=true``).
        """
        href = f"{base_url}/record/v1/{record.record_type}/{record.id}"
        out: dict[str, Any] = {"links": [{"rel": "self", "href": href}], "id": str(record.id)}
        for key, value in record.fields.items():
            out[key] = self._render_field(key, value, href, expand)
        if record.external_id is not None:
            out["externalId"] = record.external_id
        out["createdDate"] = iso_utc(record.created_at)
        out["lastModifiedDate"] = iso_utc(record.modified_at)
        if record.is_transaction:
            out["tranId"] = record.tran_id
            out["tranDate"] = (
                dt.datetime.fromtimestamp(record.tran_date, tz=dt.UTC).date().isoformat()
            )
            out["total"] = float(record.total)
        else:
            out["entityId"] = out.get("entityId", f"CUST{record.id}")
            out["refName"] = record.name
        return out

    def _render_field(self, key: str, value: Any, href: str, expand: bool) -> Any:
        if isinstance(value, dict) and isinstance(value.get("items"), list):
            links = [{"rel": "self", "href": f"{href}/{key}"}]
            if not expand:
                return {"links": links}
            lines = [
                {"links": [], **{k: self._render_ref(k, v) for k, v in line.items()}}
                for line in value["items"]
                if isinstance(line, dict)
            ]
            return {
                "links": links,
                "count": len(lines),
                "hasMore": False,
                "items": lines,
                "offset": 0,
                "totalResults": len(lines),
            }
        return self._render_ref(key, value)

    def _render_ref(self, key: str, value: Any) -> Any:
        if not isinstance(value, dict) or ("id" not in value and "externalId" not in value):
            return copy.deepcopy(value)
        out = copy.deepcopy(value)
        if key in ("entity", "customer"):
            customer = self._customer_of(value)
            if customer is not None:
                out["id"] = str(customer.id)
                out["refName"] = customer.name
        elif key == "item" and "id" in value:
            text = str(value["id"])
            row = self.catalogue.item(int(text)) if _INTERNAL_ID.fullmatch(text) else None
            if row is not None:
                out["refName"] = row["itemid"]
        out.setdefault("links", [])
        return out


def _writable(body: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise invalid_content("The request body must be a JSON object.")
    return {k: copy.deepcopy(v) for k, v in body.items() if k not in _READ_ONLY}


def _body_external_id(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("externalId")
    if value is None:
        return None
    if not isinstance(value, str) or not EXTERNAL_ID.fullmatch(value):
        raise invalid_content(
            f"Invalid external ID {value!r}: an external ID may contain only letters, numbers, "
            "underscore (_) and hyphen (-).",
            "externalId",
        )
    return value


def _check_date(value: Any, path: str) -> None:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    try:
        if match is None:
            raise ValueError
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise invalid_content(
            f"{path} must be a date in RFC 3339 full-date form (YYYY-MM-DD).", path
        ) from None
