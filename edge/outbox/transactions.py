"""The register-facing transaction model (protocol version 1).

Theory of operation
-------------------
A register hands the hub one JSON object per transaction. Its ``kind`` selects one of nine
shapes (a tagged union): ``sale``, ``return``, ``exchange``, ``void``, ``no_sale``,
``drawer_event``, ``paid_in``, ``paid_out`` and ``till_close``. Every kind starts with the same
header (``txn_id``, ``store_id``, ``lane_id``, ``operator_id``, ``register_time``, ``currency``,
optional ``receipt_no``). Unknown fields are refused everywhere: a typo must not silently drop a
figure on its way to the ERP.

The types here only describe shapes; :mod:`edge.outbox.validate` adds what a type cannot say
(totals to the cent, no card numbers, signs, currency precision) and is the only way a
transaction from the wire should be turned into one of these objects.

Conventions (docs/protocol.md repeats them for register integrators):

* **Decimals are JSON strings** (``"12.34"``, ``"0.455"``), never JSON numbers: a float cannot
  hold 0.1 exactly, and an amount must reach the ERP exactly as the register printed it. They
  are :class:`decimal.Decimal` in Python and keep their scale (``"2.50"`` stays ``"2.50"``).
  Plain notation only: optional ``-`` where a figure may be negative, digits, optional ``.`` and
  fraction; no exponent, no ``+``, no leading zeros, no spaces.
* **Money** (amounts, totals, tenders) has at most the currency's minor-unit digits (ISO 4217:
  2 for EUR/USD, 0 for JPY, 3 for KWD). **Prices** (``unit_price``), **quantities/weights** and
  tax **rates** may have up to 6 decimal places (fuel at 1.459/l, 0.455 kg).
* **Direction comes from the kind, never from a sign.** A return carries positive quantities
  and positive amounts; its tenders are the money going back to the customer. Only the
  exchange's net totals and a till count's variance may be negative.
* **Line amount** = extended price before discounts = quantity (or weight) × unit_price,
  rounded half-up to the currency's minor unit. Discounts are listed on the line (a basket
  discount is prorated to lines by the register: the ERP needs them per line).
* **Tax** is per line. By default prices exclude tax and
  ``total = subtotal - discount_total + tax_total``; with ``tax_included: true`` (VAT-style
  shelf prices) the tax is already inside the amounts and ``total = subtotal - discount_total``.
  The hub does not recompute tax from the rate: rounding conventions differ by jurisdiction
  and the ERP is the authority; the rate is carried for reporting.
* **Times** are RFC 3339 with an offset (``2026-05-01T10:15:00+02:00``); the register's clock
  is informational, the hub stamps its own acceptance time.
* **txn_id** is created by the register and is the idempotency key end to end (it becomes the
  ERP external id): 1-64 characters of ``[A-Za-z0-9._:-]``, not starting with ``customer:``
  (that prefix names customer records in the outbox, see :func:`depends_on`). Keep ids free of
  runs of 13 or more digits: such a run can look like a card number and be refused.
* **Card data**: a tender carries only a PSP ``token``, ``card_brand``, ``last4`` and the
  ``auth_code``; a full card number anywhere else is refused.

Kind-specific decisions:

* ``return`` names its ``original`` sale when there is a receipt (``null`` for a no-receipt
  return) and depends on it in the outbox; lines and amounts are positive.
* ``exchange`` has ``returned_lines`` and ``sold_lines``; its totals are *net* (sold minus
  returned) and may be negative. A positive total is paid by the customer through the tenders,
  a negative one is refunded through them; a zero total needs no tender.
* ``void`` either names the posted transaction it cancels (``voided``, a post-void; the register
  enforces "same business day", the outbox posts it after the original) or, with ``voided``
  null, records a basket abandoned before payment: its ``lines`` are kept for loss-prevention
  reporting and no money moves. A post-void carries no lines (the original has them).
* ``no_sale`` and ``drawer_event`` move no money; ``paid_in``/``paid_out`` move cash in or out
  of the drawer for a reason (float top-up, window cleaner); ``till_close`` reports counted and
  expected amounts per tender type with ``variance = counted - expected``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeAlias

import msgspec
import msgspec.inspect as mi

__all__ = [
    "CUSTOMER_KEY_PREFIX",
    "DECIMAL_FIELDS",
    "EVENT_TYPE_PREFIX",
    "KINDS",
    "BasketTransaction",
    "Customer",
    "DecimalRule",
    "Discount",
    "DrawerEvent",
    "Exchange",
    "Filed",
    "Filing",
    "Line",
    "LineTax",
    "NoSale",
    "PaidIn",
    "PaidOut",
    "Return",
    "Sale",
    "Tender",
    "TenderType",
    "TillClose",
    "TillCount",
    "Totals",
    "Transaction",
    "TxnRef",
    "Void",
    "Weight",
    "customer_key",
    "decode_transaction",
    "depends_on",
    "encode_transaction",
    "event_type",
    "filed",
    "keys_from_json",
    "keys_json",
    "minor_unit_digits",
    "read_filing",
    "transaction_json_schema",
]

# --------------------------------------------------------------------------------------------
# Scalar types. The JSON Schema fragments are what docs/protocol.md shows to integrators.

_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"

Id = Annotated[
    str,
    msgspec.Meta(
        pattern=_ID_PATTERN,
        description="1-64 characters of A-Z a-z 0-9 . _ : -",
        examples=["store-042"],
    ),
]
TxnId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?!customer:)[A-Za-z0-9._:-]{1,64}$",
        description=(
            "Created by the register; the idempotency key end to end and the ERP external id. "
            "1-64 characters of A-Z a-z 0-9 . _ : -, not starting with 'customer:'."
        ),
        examples=["S042-R02-20260501-000123"],
    ),
]
Sku = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^\s]{1,64}$",
        description="The catalogue item key: 1-64 characters, no whitespace.",
        examples=["4006381333931"],
    ),
]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CurrencyCode = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 alphabetic code.", examples=["EUR"]),
]
Timestamp = Annotated[
    dt.datetime,
    msgspec.Meta(
        tz=True, description="RFC 3339 with an offset.", examples=["2026-05-01T10:15:00+02:00"]
    ),
]
TenderType = Literal["cash", "card", "gift_card", "voucher", "store_credit", "other"]


class DecimalRule(NamedTuple):
    """How a decimal field is written on the wire; checked by :mod:`edge.outbox.validate`."""

    category: str
    signed: bool
    """A leading ``-`` is allowed (else a negative figure is refused as NEGATIVE_AMOUNT)."""
    positive: bool
    """Zero is refused too (quantities and weights)."""
    max_integer_digits: int
    max_places: int | None
    """Decimal places allowed; None: the currency's minor unit (money)."""

    @property
    def pattern(self) -> str:
        """The JSON Schema pattern (the currency-specific limit is stated in prose)."""
        sign = "-?" if self.signed else ""
        places = 4 if self.max_places is None else self.max_places  # 4: CLF, the widest
        return rf"^{sign}(0|[1-9][0-9]{{0,{self.max_integer_digits - 1}}})(\.[0-9]{{1,{places}}})?$"


def _meta(rule: DecimalRule, description: str, example: str) -> msgspec.Meta:
    # ``extra`` carries the rule so that DECIMAL_FIELDS below is derived from the types
    # themselves rather than kept in step by hand.
    return msgspec.Meta(
        description=description,
        examples=[example],
        extra_json_schema={"type": "string", "pattern": rule.pattern},
        extra={"decimal": rule},
    )


_MONEY: Final = DecimalRule(
    "money", signed=False, positive=False, max_integer_digits=12, max_places=None
)
_SIGNED_MONEY: Final = DecimalRule(
    "signed money", signed=True, positive=False, max_integer_digits=12, max_places=None
)
_PRICE: Final = DecimalRule(
    "price", signed=False, positive=False, max_integer_digits=12, max_places=6
)
_QUANTITY: Final = DecimalRule(
    "quantity", signed=False, positive=True, max_integer_digits=9, max_places=6
)
_RATE: Final = DecimalRule("rate", signed=False, positive=False, max_integer_digits=3, max_places=6)

Money = Annotated[
    Decimal,
    _meta(_MONEY, "Decimal string, >= 0, at most the currency's minor-unit places.", "12.34"),
]
SignedMoney = Annotated[
    Decimal,
    _meta(
        _SIGNED_MONEY, "Decimal string, may be negative, at most the currency's places.", "-3.50"
    ),
]
Price = Annotated[Decimal, _meta(_PRICE, "Decimal string, >= 0, up to 6 places.", "1.459")]
Quantity = Annotated[Decimal, _meta(_QUANTITY, "Decimal string, > 0, up to 6 places.", "0.455")]
Rate = Annotated[
    Decimal, _meta(_RATE, "Tax rate as a fraction (0.2 = 20 %), >= 0, up to 6 places.", "0.0825")
]

ZERO: Final = Decimal("0")

# ISO 4217 currencies whose minor unit is not 2 digits (ISO 4217 list one, "Minor unit"). Codes
# not listed (and unknown codes) use 2.
_MINOR_UNITS: Final[dict[str, int]] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def minor_unit_digits(currency: str) -> int:
    """Decimal places of the currency's minor unit (ISO 4217): 2 unless listed otherwise."""
    return _MINOR_UNITS.get(currency, 2)


# --------------------------------------------------------------------------------------------
# Parts.


class _Part(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, omit_defaults=True
):
    pass


class TxnRef(_Part, frozen=True):
    """Another transaction: the sale a return refers to, the transaction a void cancels."""

    txn_id: TxnId
    store_id: Id
    lane_id: Id


class Customer(_Part, frozen=True):
    """A known customer; anonymous sales carry ``customer: null`` (or omit it)."""

    customer_id: Id
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None


class Weight(_Part, frozen=True):
    value: Quantity
    unit: Literal["kg", "lb"]


class Discount(_Part, frozen=True):
    description: Text
    amount: Money
    """Positive: how much the line's amount is reduced."""
    promotion_id: Id | None = None


class LineTax(_Part, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    amount: Money
    rate: Rate | None = None


class Line(_Part, frozen=True):
    """One item line. Exactly one of ``quantity`` and ``weight``."""

    line_no: Annotated[int, msgspec.Meta(ge=1, le=9999)]
    sku: Sku
    unit_price: Price
    """Per unit, or per kg/lb for a weighed line."""
    amount: Money
    """quantity (or weight) × unit_price, rounded half-up to the currency's minor unit; before
    discounts."""
    quantity: Quantity | None = None
    weight: Weight | None = None
    description: Text | None = None
    discounts: Annotated[list[Discount], msgspec.Meta(max_length=50)] = []
    tax: LineTax | None = None
    """None: no tax on this line."""

    @property
    def measure(self) -> Decimal:
        """The quantity, or the weight's value (validation guarantees exactly one is set)."""
        if self.quantity is not None:
            return self.quantity
        if self.weight is not None:
            return self.weight.value
        raise ValueError(f"line {self.line_no} has neither quantity nor weight")


class Tender(_Part, frozen=True):
    """One payment (or, on a return or a refunding exchange, one refund)."""

    type: TenderType
    amount: Money
    change: Money = ZERO
    """Cash only: change handed back out of this tender."""
    currency: CurrencyCode | None = None
    """Absent: the transaction's currency. Foreign-currency tenders are not supported in v1."""
    auth_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None
    """The PSP's token for the card: the only field where a long digit string may appear."""
    card_brand: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    last4: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}$")] | None = None


class Totals(_Part, frozen=True):
    """The figures printed on the receipt. For an exchange the first four are net (sold minus
    returned) and may be negative; for every other kind they are >= 0."""

    subtotal: SignedMoney
    """Σ line amounts."""
    discount_total: SignedMoney
    """Σ line discounts."""
    tax_total: SignedMoney
    """Σ line taxes."""
    total: SignedMoney
    """subtotal - discount_total + tax_total (without + tax_total when tax_included)."""
    tendered: Money
    """Σ tender amounts."""
    change: Money
    """Σ tender change."""


class TillCount(_Part, frozen=True):
    tender_type: TenderType
    counted: Money
    expected: Money
    variance: SignedMoney
    """counted - expected."""


# --------------------------------------------------------------------------------------------
# The transactions.

_Lines = Annotated[list[Line], msgspec.Meta(max_length=1000)]
_Tenders = Annotated[list[Tender], msgspec.Meta(max_length=50)]


class _Txn(
    msgspec.Struct,
    tag_field="kind",
    forbid_unknown_fields=True,
    kw_only=True,
    frozen=True,
    omit_defaults=True,
):
    """The common header."""

    txn_id: TxnId
    store_id: Id
    lane_id: Id
    operator_id: Id
    register_time: Timestamp
    currency: CurrencyCode
    receipt_no: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None

    @property
    def kind(self) -> str:
        """The ``kind`` tag (``"sale"``, ``"return"``, ...)."""
        return str(type(self).__struct_config__.tag)


class Sale(_Txn, tag="sale", kw_only=True, frozen=True):
    """Goods sold and paid for."""

    lines: _Lines
    tenders: _Tenders
    totals: Totals
    customer: Customer | None = None
    tax_included: bool = False


class Return(_Txn, tag="return", kw_only=True, frozen=True):
    """Goods brought back and refunded."""

    reason: Text
    lines: _Lines
    """Positive quantities and amounts: the kind says the goods come back."""
    tenders: _Tenders
    """The refunds: money going back to the customer."""
    totals: Totals
    original: TxnRef | None = None
    """The sale being returned; null for a no-receipt return."""
    customer: Customer | None = None
    tax_included: bool = False


class Exchange(_Txn, tag="exchange", kw_only=True, frozen=True):
    """Goods brought back and others taken in the same transaction; the net is settled."""

    reason: Text
    returned_lines: _Lines
    sold_lines: _Lines
    tenders: _Tenders
    """Money in when totals.total > 0, refunds when it is < 0, none when it is 0."""
    totals: Totals
    """Net figures: sold minus returned."""
    original: TxnRef | None = None
    customer: Customer | None = None
    tax_included: bool = False


class Void(_Txn, tag="void", kw_only=True, frozen=True):
    """A cancelled transaction: a posted one (post-void) or a basket abandoned before payment."""

    reason: Text
    voided: TxnRef | None = None
    """The posted transaction cancelled (post-void); null for a basket abandoned before
    payment."""
    lines: _Lines = []
    """Only when ``voided`` is null: what was rung up before the basket was abandoned."""


class NoSale(_Txn, tag="no_sale", kw_only=True, frozen=True):
    """The drawer was opened without a sale."""

    reason: Text | None = None


class DrawerEvent(_Txn, tag="drawer_event", kw_only=True, frozen=True):
    """The cash drawer was opened or closed."""

    action: Literal["opened", "closed"]
    reason: Text | None = None
    drawer_id: Id | None = None


class PaidIn(_Txn, tag="paid_in", kw_only=True, frozen=True):
    """Cash put into the drawer outside a sale (float top-up)."""

    amount: Money
    reason: Text
    tender_type: Literal["cash"] = "cash"


class PaidOut(_Txn, tag="paid_out", kw_only=True, frozen=True):
    """Cash taken out of the drawer outside a sale (a small expense)."""

    amount: Money
    reason: Text
    tender_type: Literal["cash"] = "cash"


class TillClose(_Txn, tag="till_close", kw_only=True, frozen=True):
    """End-of-shift count of the drawer, per tender type."""

    counts: Annotated[list[TillCount], msgspec.Meta(max_length=20)]
    drawer_id: Id | None = None


Transaction: TypeAlias = (
    Sale | Return | Exchange | Void | NoSale | DrawerEvent | PaidIn | PaidOut | TillClose
)
"""Any transaction; discriminated by ``kind``."""

BasketTransaction: TypeAlias = Sale | Return | Exchange
"""The kinds with lines, tenders and totals."""

_KIND_CLASSES: Final = (
    Sale,
    Return,
    Exchange,
    Void,
    NoSale,
    DrawerEvent,
    PaidIn,
    PaidOut,
    TillClose,
)
KINDS: Final[tuple[str, ...]] = tuple(str(cls.__struct_config__.tag) for cls in _KIND_CLASSES)
"""Every supported ``kind``, in documentation order."""

# --------------------------------------------------------------------------------------------
# Decimal fields by JSON name, derived from the types above (validate checks the wire strings
# by name, because msgspec itself also accepts JSON numbers, exponents and "1_000" for a
# Decimal). A name must mean the same kind of figure wherever it appears.


def _walk_types(info: mi.Type, seen: set[type]) -> Iterator[tuple[str, mi.Type]]:
    if isinstance(info, mi.Metadata):
        yield from _walk_types(info.type, seen)
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            yield from _walk_types(member, seen)
    elif isinstance(info, mi.ListType):
        yield from _walk_types(info.item_type, seen)
    elif isinstance(info, mi.StructType) and info.cls not in seen:
        seen.add(info.cls)
        for field in info.fields:
            yield field.encode_name, field.type
            yield from _walk_types(field.type, seen)


def _decimal_fields() -> dict[str, DecimalRule]:
    found: dict[str, DecimalRule] = {}
    seen: set[type] = set()
    for info in mi.multi_type_info(_KIND_CLASSES):
        for name, field_type in _walk_types(info, seen):
            rule = _decimal_rule(field_type)
            if rule is None:
                continue
            if found.setdefault(name, rule) != rule:  # pragma: no cover - a modelling error
                raise TypeError(f"decimal field {name!r} has two meanings: {found[name]}, {rule}")
    return found


def _decimal_rule(info: mi.Type) -> DecimalRule | None:
    if isinstance(info, mi.UnionType):
        rules = [r for r in map(_decimal_rule, info.types) if r is not None]
        return rules[0] if rules else None
    if isinstance(info, mi.Metadata) and isinstance(info.type, mi.DecimalType):
        rule = (info.extra or {}).get("decimal")
        return rule if isinstance(rule, DecimalRule) else None
    return None


DECIMAL_FIELDS: Final[dict[str, DecimalRule]] = _decimal_fields()
"""JSON field name -> how its decimal string is written."""

# --------------------------------------------------------------------------------------------
# Outbox helpers.

CUSTOMER_KEY_PREFIX: Final = "customer:"
EVENT_TYPE_PREFIX: Final = "com.storeedge."


def customer_key(customer_id: str) -> str:
    """The outbox key of a customer record: ``customer:<id>`` (txn ids cannot start so)."""
    return CUSTOMER_KEY_PREFIX + customer_id


def depends_on(txn: Transaction | Filing) -> tuple[str, ...]:
    """Outbox keys that must be delivered before ``txn``, in the order they are named.

    * a return or exchange with an ``original`` waits for that transaction's id;
    * a post-void waits for the transaction it voids;
    * a sale, return or exchange naming a customer waits for ``customer:<customer_id>``, so
      that a customer created at the till reaches the ERP before the sale that names it.

    Read by field, not by class: only a return or an exchange has an ``original``, only a void
    ``voided``, only a sale, return or exchange a ``customer``, so a :class:`Filing` of a
    stored transaction gives what the transaction gives.

    A key that is not pending in this hub's outbox (a sale made at another store, a customer
    that already exists in the ERP) is to be treated as satisfied by the delivery policy.
    """
    keys = [ref.txn_id for ref in (getattr(txn, "original", None), getattr(txn, "voided", None))
            if ref is not None]  # fmt: skip
    customer = getattr(txn, "customer", None)
    if customer is not None:
        keys.append(customer_key(customer.customer_id))
    return tuple(dict.fromkeys(keys))


class _FiledRef(msgspec.Struct):
    txn_id: str


class _FiledCustomer(msgspec.Struct):
    customer_id: str


class Filing(msgspec.Struct, frozen=True):
    """What a stored transaction is filed by (:func:`filed`), read without the rest of it: a
    tenth of a whole decode's cost, and the sender checks every payload it posts against its
    row. For canonical JSON of a validated transaction only (:func:`read_filing`)."""

    txn_id: str
    kind: str
    lane_id: str
    original: _FiledRef | None = None
    voided: _FiledRef | None = None
    customer: _FiledCustomer | None = None


_filing: Final = msgspec.json.Decoder(Filing)


def read_filing(payload: bytes) -> Filing:
    """The :class:`Filing` of a stored transaction's payload. Raises
    :class:`msgspec.DecodeError` / :class:`msgspec.ValidationError`."""
    return _filing.decode(payload)


def event_type(txn: Transaction | Filing) -> str:
    """The CloudEvents ``type`` of the transaction, e.g. ``com.storeedge.sale.v1``."""
    return f"{EVENT_TYPE_PREFIX}{txn.kind}.v1"


class Filed(NamedTuple):
    """The outbox columns a transaction is filed under, each read from the transaction itself
    (:func:`filed`): a row whose columns no longer read so was damaged on disk
    (:func:`edge.outbox.salvage.refiled`)."""

    key: str
    kind: str
    event_type: str
    lane: str
    depends_on: tuple[str, ...]

    def columns(self) -> tuple[str, str, str, str, str]:
        """As the row stores them: its dependencies as a JSON array (:func:`keys_json`)."""
        return (self.key, self.kind, self.event_type, self.lane, keys_json(self.depends_on))


def filed(txn: Transaction | Filing) -> Filed:
    """What the intake files ``txn`` under: its id as the key, its kind and event type, its
    lane and the keys it waits for."""
    return Filed(txn.txn_id, txn.kind, event_type(txn), txn.lane_id, depends_on(txn))


def keys_json(keys: tuple[str, ...]) -> str:
    """Keys (dependencies, flags) as an outbox row stores them: a JSON array."""
    return json.dumps(list(keys)) if keys else "[]"


def keys_from_json(text: str | None) -> tuple[str, ...]:
    """The keys of :func:`keys_json`'s text. A text that no longer parses (a bit flipped on
    disk) reads as none, not as a failed read: dependencies are restored from the payload
    before an item is sent (edge.outbox.salvage.refiled), and flags only ask for a review."""
    if not text or text == "[]":  # most items: skip the JSON parser
        return ()
    try:
        return tuple(json.loads(text))
    except ValueError:
        return ()


_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[Transaction]] = msgspec.json.Decoder(Transaction)


def encode_transaction(txn: Transaction) -> bytes:
    """Canonical JSON: every figure as the register wrote it, defaults omitted. This (not the
    raw request) is what the outbox stores and sends."""
    return _encoder.encode(txn)


def decode_transaction(data: bytes) -> Transaction:
    """Read back a transaction that was accepted before (from the outbox). Checks the shape
    only: wire input goes through :func:`edge.outbox.validate.validate`. Raises
    :class:`msgspec.DecodeError` / :class:`msgspec.ValidationError`."""
    return _decoder.decode(data)


def transaction_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a transaction, for docs/protocol.md and docs/schemas/.

    It states shapes and decimal formats; the rules it cannot express (totals, card numbers,
    the currency's decimal places, one of quantity/weight) are :mod:`edge.outbox.validate`'s.
    """
    (schema,), components = msgspec.json.schema_components(
        (Transaction,), ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Transaction",
        "description": (
            "One register transaction (store-edge protocol v1), published on "
            "store/{store}/lane/{lane}/rpc/txn.submit. Decimals are strings; the kind gives the "
            "direction of money, never the sign."
        ),
        **schema,
        "$defs": components,
    }
