"""From a store transaction to the NetSuite records that post it: pure, no I/O.

Theory of operation
-------------------
:func:`plan_postings` turns one accepted transaction and the account's :class:`Mapping` into a
:class:`Plan`: the records to upsert, in order, each as ``PUT record/v1/<type>/eid:<external
id>`` (ref §1.5: creates or updates, never a second record, so replaying a whole plan after a
crash or a lost answer is safe). Or it raises :class:`Preflight` naming exactly what is not
mapped, before anything is sent (the item is parked with that reason rather than collecting a
400 from NetSuite).

Defaults follow how Oracle's own POS products post (ref §8):

==================  ========================================================================
transaction         records
==================  ========================================================================
sale, one tender    ``cashSale`` (payment method of the tender)
sale, split tender  ``invoice`` + one ``customerPayment`` per tender, applied to the invoice
                    (``split_tender = "cash_sale"`` posts one cashSale with the first
                    tender's method instead)
return              ``cashRefund`` (or ``creditMemo``: ``return_record``), ``createdFrom``
                    the original sale when NetSuite holds it (resolved by the shell).
                    ``return_authorization``: first a ``returnAuthorization`` (a Customer
                    Return, eid ``<id>-ra``, as SuiteCommerce InStore records returns) that
                    carries the link to the original sale, the refund record created from it
exchange            a refund record for the returned lines (eid ``<id>-r``) and a cashSale
                    for the sold lines (eid ``<id>-s``)
void                ``void_action``: "park" (REST has no void; a technician voids it in
                    NetSuite) or "skip"
no_sale, drawer,    not ERP records: delivered as "not-posted" (cash management stays in the
paid in/out, till   hub's own reports)
close
==================  ========================================================================

With ``posting = "daily_journal"`` no transaction is posted on its own (each is delivered as
"not posted"): the day is summarised in one journal entry instead
(:mod:`edge.uplink.netsuite.reconcile`, ``edge netsuite journal``), and, with
``inventory_adjustments``, the day's stock movement in one ``inventoryAdjustment`` (a journal
moves money, not stock; ref §8).

A customer named on the transaction becomes ``entity``: the shell resolves it (by email first,
then by external id ``cust-<id>``, creating it once if new); an anonymous sale uses
``walk_in_customer_id``.

Lines: ``item`` = the mapped internal id (an unmapped SKU parks the transaction, unless
``unknown_item_id`` is set: then it posts against that catch-all item with the SKU in the line
description, since the sale happened); ``quantity`` (or the weight), ``rate`` = unit price,
``amount``; each discount becomes a following line on ``discount_item_id`` with a negative
amount. Tax codes are sent only when ``send_tax_codes`` is set (REST supports tax only with
SuiteTax, ref §0.7). Money goes out as JSON numbers built from the exact decimal strings.

Every record carries ``externalId``, ``subsidiary``, ``location`` (per store, else the default),
``tranDate`` (the register's date), ``currency`` when mapped, and a ``memo`` naming store, lane
and receipt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec

from edge.outbox.transactions import (
    BasketTransaction,
    DrawerEvent,
    Exchange,
    Line,
    NoSale,
    PaidIn,
    PaidOut,
    Return,
    Sale,
    Tender,
    TillClose,
    Transaction,
    Void,
)
from edge.uplink.netsuite.auth import sanitize_external_id

RecordType = Literal[
    "cashSale", "invoice", "customerPayment", "cashRefund", "creditMemo", "returnAuthorization"
]


class CatalogueMapping(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[uplink.netsuite.catalogue]``: how NetSuite's items become the store's catalogue."""

    enabled: bool = False
    page_size: int = 1000
    """Rows per SuiteQL page (NetSuite allows up to 1000)."""
    locale: str = "en"
    """The locale of NetSuite's display names (BCP 47, e.g. en, fr-CA)."""
    full_every_h: float = 24.0
    """A full download this often (catches deletions and price-only changes)."""
    overlap_s: float = 3600.0
    """Incremental reads re-read this much before the last sync (time zone UNCERTAIN)."""
    item_types: list[str] = msgspec.field(
        default_factory=lambda: [
            "InvtPart",
            "NonInvtPart",
            "Service",
            "Kit",
            "Assembly",
            "GiftCert",
        ]
    )
    """NetSuite item types the store sells (others, e.g. Discount, are left out)."""
    alt_barcodes_field: str = "custitem_alt_barcodes"
    department_field: str = "custitem_pos_department"
    age_restricted_field: str = "custitem_pos_age_restricted"
    age_restriction: int = 18
    tax_group_field: str = "custitem_pos_tax_group"
    tax_groups: dict[str, str] = {}
    """NetSuite tax group value -> the store's tax code (else ``default_tax_code``)."""
    default_tax_code: str = "STD"
    tax_codes: dict[str, str] = msgspec.field(default_factory=lambda: {"STD": "0"})
    """The store's tax codes and rates (NetSuite's tax tables are UNCERTAIN in SuiteQL)."""
    price_levels: dict[str, str] = msgspec.field(default_factory=lambda: {"1": "base"})
    """NetSuite price level id -> the store's level (``base`` is the shelf price)."""
    price_quantity: int = 1
    """The ``pricing.quantity`` of a unit price row (0 or 1 in the wild: UNCERTAIN)."""
    custom_fields: list[str] = []
    """Item columns carried to the registers as custom fields."""


class JournalAccounts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """GL accounts of the daily summary journal (internal ids of NetSuite accounts)."""

    revenue: str = ""
    """Sales, net of tax and before discounts (credited)."""
    tax: str = ""
    """Sales tax payable (credited)."""
    discounts: str = ""
    """Discounts given (debited)."""
    tenders: dict[str, str] = {}
    """tender type -> the account its takings go to (debited), e.g. undeposited funds."""


class Mapping(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How this account wants the store's business posted (``[uplink.netsuite.mapping]``)."""

    posting: Literal["transactions", "daily_journal"] = "transactions"
    """"transactions": a record per transaction (the table above); "daily_journal": one
    balanced journalEntry per store and day instead (``edge netsuite journal``)."""
    journal_accounts: JournalAccounts = msgspec.field(default_factory=JournalAccounts)
    netsuite_total_includes_tax: bool = True
    """Whether NetSuite's total of a posted sale includes tax (it computes tax itself; UNCERTAIN
    per account, ref §0.7): what ``edge reconcile`` compares the store's amounts with."""

    subsidiary_id: str = ""
    default_location_id: str = ""
    locations: dict[str, str] = {}
    """store id -> location internal id (else ``default_location_id``)."""
    walk_in_customer_id: str = ""
    """The customer anonymous sales are posted to."""
    items: dict[str, str] = {}
    """SKU -> item internal id."""
    unknown_item_id: str = ""
    """Catch-all item for SKUs not in ``items`` (empty: such a transaction is parked)."""
    discount_item_id: str = ""
    payment_methods: dict[str, str] = {}
    """tender type (cash, card, gift_card, ...) -> payment method internal id."""
    payment_account_id: str = ""
    """Account for customer payments (e.g. undeposited funds); empty: NetSuite's default."""
    payment_method_field: str = "paymentMethod"
    """The body field that takes the payment method (UNCERTAIN on customerPayment, ref §1.7)."""
    currencies: dict[str, str] = {}
    """ISO currency -> currency internal id (empty: the subsidiary's currency)."""
    tax_codes: dict[str, str] = {}
    send_tax_codes: bool = False
    split_tender: Literal["invoice_payment", "cash_sale"] = "invoice_payment"
    return_record: Literal["cashRefund", "creditMemo"] = "cashRefund"
    return_authorization: bool = False
    """Record each return as a returnAuthorization (Customer Return) too, the refund record
    created from it (SuiteCommerce InStore's pattern, ref §8)."""
    void_action: Literal["park", "skip"] = "park"
    inventory_adjustments: bool = False
    """With ``posting = "daily_journal"``: also post the day's stock movement as one
    inventoryAdjustment per store and day (``edge netsuite journal``)."""
    inventory_account_id: str = ""
    """The adjustment account of those inventory adjustments."""


class Preflight(Exception):
    """The transaction cannot be posted with this mapping; nothing was sent."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail or {}


@dataclass(frozen=True, slots=True)
class Posting:
    record_type: RecordType
    external_id: str
    body: dict[str, Any]
    apply_to: int | None = None
    """Index of an earlier posting of the plan (an invoice) this payment is applied to; the
    shell adds ``apply`` with that record's internal id and ``amount_applied``."""
    amount_applied: Decimal = Decimal(0)
    created_from: str | None = None
    """Transaction id of the original sale to link (``createdFrom``), if NetSuite holds it."""
    from_posting: int | None = None
    """Index of an earlier posting of the plan this record is created from (``createdFrom``:
    a refund from its return authorization)."""


@dataclass(frozen=True, slots=True)
class CustomerRef:
    customer_id: str
    email: str | None
    external_id: str


@dataclass(slots=True)
class Plan:
    postings: list[Posting] = field(default_factory=list)
    customer: CustomerRef | None = None
    """Resolve (or create) this customer first and use it as every posting's ``entity``."""
    not_posted: str | None = None
    """Set when the kind is deliberately not an ERP record (the reason)."""
    primary: int = 0
    """Index of the posting whose internal id is the outbox's record id."""


def json_number(value: Decimal) -> Any:
    """A JSON number with exactly the decimal's digits (no float rounding on the way)."""
    return msgspec.Raw(format(value, "f").encode())


def decimal_of(value: Any) -> Decimal:
    """The exact decimal of an amount in a record body (see :func:`json_number`)."""
    if isinstance(value, msgspec.Raw):
        return Decimal(bytes(value).decode())
    return Decimal(str(value))


def _ref(internal_id: str) -> dict[str, str]:
    return {"id": internal_id}


def external_id(txn_id: str, suffix: str = "") -> str:
    """The external id of a record posting ``txn_id`` (frozen: see sanitize_external_id)."""
    return sanitize_external_id(f"{txn_id}{suffix}")


def customer_external_id(customer_id: str) -> str:
    return sanitize_external_id(f"cust-{customer_id}")


def plan_postings(txn: Transaction, m: Mapping) -> Plan:
    """The records that post ``txn`` (see the module docstring). Raises :class:`Preflight`."""
    if isinstance(txn, NoSale | DrawerEvent | PaidIn | PaidOut | TillClose):
        return Plan(not_posted=f"{txn.kind} is not posted to NetSuite")
    if isinstance(txn, Void):
        if m.void_action == "skip":
            return Plan(not_posted="void not posted (void_action = skip)")
        voided = txn.voided.txn_id if txn.voided else "(no reference)"
        raise Preflight(
            "NS_VOID_MANUAL",
            f"post-void of {voided}: NetSuite REST has no void; void it in NetSuite, then park "
            "or skip this item",
            {"voided": voided},
        )
    if m.posting == "daily_journal":
        return Plan(not_posted=f"{txn.kind} is summarised in the store's daily journal")
    _check_common(txn, m)
    plan = Plan(customer=_customer(txn))
    if isinstance(txn, Sale):
        _plan_sale(plan, txn, txn.lines, txn.tenders, m, suffix="")
    elif isinstance(txn, Return):
        original = txn.original.txn_id if txn.original else None
        _plan_refund(plan, txn, txn.lines, txn.tenders, m, "", original)
    else:
        assert isinstance(txn, Exchange)
        original = txn.original.txn_id if txn.original else None
        _plan_refund(plan, txn, txn.returned_lines, txn.tenders, m, "-r", original)
        plan.primary = len(plan.postings)
        _plan_sale(plan, txn, txn.sold_lines, txn.tenders, m, suffix="-s")
    return plan


def _check_common(txn: BasketTransaction, m: Mapping) -> None:
    problems: dict[str, Any] = {}
    if not m.subsidiary_id:
        problems["subsidiary"] = "mapping.subsidiary_id is not set"
    if not (m.locations.get(txn.store_id) or m.default_location_id):
        problems["location"] = f"no location mapped for store {txn.store_id}"
    if txn.customer is None and not m.walk_in_customer_id:
        problems["customer"] = "anonymous sale and mapping.walk_in_customer_id is not set"
    lines = txn.returned_lines + txn.sold_lines if isinstance(txn, Exchange) else txn.lines
    unmapped = sorted({ln.sku for ln in lines if ln.sku not in m.items})
    if unmapped and not m.unknown_item_id:
        problems["items"] = f"SKUs not mapped to NetSuite items: {', '.join(unmapped)}"
    if any(ln.discounts for ln in lines) and not m.discount_item_id:
        problems["discounts"] = "discounted lines and mapping.discount_item_id is not set"
    tender_types = sorted({t.type for t in txn.tenders if t.type not in m.payment_methods})
    if tender_types:
        problems["tenders"] = f"tender types not mapped to payment methods: {tender_types}"
    if m.send_tax_codes:
        codes = sorted({ln.tax.code for ln in lines if ln.tax and ln.tax.code not in m.tax_codes})
        if codes:
            problems["tax"] = f"tax codes not mapped: {codes}"
    if m.currencies and txn.currency not in m.currencies:
        problems["currency"] = f"currency {txn.currency} not mapped"
    _check_totals(txn, lines, problems)
    if problems:
        first = next(iter(problems))
        raise Preflight(f"NS_UNMAPPED_{first.upper()}", "; ".join(problems.values()), problems)


def _check_totals(txn: BasketTransaction, lines: list[Line], problems: dict[str, Any]) -> None:
    """Intake checked the totals; a record posted from different figures must not exist."""
    if isinstance(txn, Exchange):
        return  # two records, each balanced by construction from its own lines
    net = sum((_line_net(ln) for ln in lines), Decimal(0))
    tax = sum((ln.tax.amount for ln in lines if ln.tax), Decimal(0))
    expected = net + (Decimal(0) if txn.tax_included else tax)
    if expected != txn.totals.total:
        problems["totals"] = f"lines add up to {expected}, total says {txn.totals.total}"


def _line_net(line: Line) -> Decimal:
    return line.amount - sum((d.amount for d in line.discounts), Decimal(0))


def _customer(txn: BasketTransaction) -> CustomerRef | None:
    if txn.customer is None:
        return None
    cid = txn.customer.customer_id
    return CustomerRef(cid, txn.customer.email, customer_external_id(cid))


def _header(txn: BasketTransaction, m: Mapping, suffix: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalId": external_id(txn.txn_id, suffix),
        "subsidiary": _ref(m.subsidiary_id),
        "location": _ref(m.locations.get(txn.store_id) or m.default_location_id),
        "tranDate": txn.register_time.date().isoformat(),
        "memo": f"Store {txn.store_id} / {txn.lane_id} / receipt {txn.receipt_no or txn.txn_id}",
    }
    if txn.customer is None:
        body["entity"] = _ref(m.walk_in_customer_id)
    if txn.currency in m.currencies:
        body["currency"] = _ref(m.currencies[txn.currency])
    return body


def _item_lines(lines: list[Line], m: Mapping) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for ln in lines:
        mapped = m.items.get(ln.sku)
        entry: dict[str, Any] = {
            "item": _ref(mapped or m.unknown_item_id),
            "quantity": json_number(line_quantity(ln)),
            "rate": json_number(ln.unit_price),
            "amount": json_number(ln.amount),
        }
        description = ln.description or ""
        if mapped is None:
            description = f"{ln.sku} (not in the NetSuite item map) {description}".strip()
        if description:
            entry["description"] = description
        if m.send_tax_codes and ln.tax is not None:
            entry["taxCode"] = _ref(m.tax_codes[ln.tax.code])
        items.append(entry)
        for d in ln.discounts:
            discount: dict[str, Any] = {
                "item": _ref(m.discount_item_id),
                "amount": json_number(-d.amount),
                "description": d.description
                + (f" (promotion {d.promotion_id})" if d.promotion_id else ""),
            }
            items.append(discount)
    return {"items": items}


def line_quantity(line: Line) -> Decimal:
    """Units sold or returned on a line: its quantity, else its weight (weighed items)."""
    if line.quantity is not None:
        return Decimal(line.quantity)
    return Decimal(line.weight.value) if line.weight else Decimal(1)


def _tender_amount(t: Tender) -> Decimal:
    return t.amount - t.change


def _plan_sale(
    plan: Plan,
    txn: BasketTransaction,
    lines: list[Line],
    tenders: list[Tender],
    m: Mapping,
    suffix: str,
) -> None:
    body = _header(txn, m, suffix)
    body["item"] = _item_lines(lines, m)
    paying = [t for t in tenders if _tender_amount(t) > 0]
    if len(paying) <= 1 or m.split_tender == "cash_sale":
        tender = paying[0] if paying else tenders[0]
        body[m.payment_method_field] = _ref(m.payment_methods[tender.type])
        plan.postings.append(Posting("cashSale", body["externalId"], body))
        return
    invoice_at = len(plan.postings)
    plan.postings.append(Posting("invoice", body["externalId"], body))
    for n, tender in enumerate(paying, start=1):
        payment: dict[str, Any] = {
            "externalId": external_id(txn.txn_id, f"{suffix}-p{n}"),
            "subsidiary": body["subsidiary"],
            "location": body["location"],
            "tranDate": body["tranDate"],
            "memo": f"{body['memo']} / {tender.type}",
            "payment": json_number(_tender_amount(tender)),
            m.payment_method_field: _ref(m.payment_methods[tender.type]),
        }
        if "entity" in body:
            payment["customer"] = body["entity"]
        if "currency" in body:
            payment["currency"] = body["currency"]
        if m.payment_account_id:
            payment["account"] = _ref(m.payment_account_id)
        plan.postings.append(
            Posting(
                "customerPayment",
                payment["externalId"],
                payment,
                apply_to=invoice_at,
                amount_applied=_tender_amount(tender),
            )
        )


def _plan_refund(
    plan: Plan,
    txn: BasketTransaction,
    lines: list[Line],
    tenders: list[Tender],
    m: Mapping,
    suffix: str,
    original: str | None,
) -> None:
    """The refund record (the plan's primary), after its return authorization if mapped."""
    body = _header(txn, m, suffix)
    body["item"] = _item_lines(lines, m)
    authorization: int | None = None
    if m.return_authorization:
        rma = body | {"externalId": external_id(txn.txn_id, f"{suffix}-ra")}
        authorization = len(plan.postings)
        plan.postings.append(
            Posting("returnAuthorization", rma["externalId"], rma, created_from=original)
        )
        original = None  # the link to the sale is on the return authorization
    if m.return_record == "cashRefund":
        body[m.payment_method_field] = _ref(m.payment_methods[tenders[0].type])
    plan.primary = len(plan.postings)
    plan.postings.append(
        Posting(
            m.return_record,
            body["externalId"],
            body,
            created_from=original,
            from_posting=authorization,
        )
    )
