"""Validation of a register's transaction: bytes in, an accepted transaction or one refusal out.

Theory of operation
-------------------
:func:`validate` is pure (no I/O, no clock). It either returns :class:`Accepted` (the typed
transaction plus review flags) or raises exactly one :class:`TransactionRejected` whose ``code``
is stable (:data:`VALIDATION_ERROR_CODES`); ``path`` is the JSON path of the offending value in
msgspec's notation (``$.lines[2].amount``). The steps run in this order and the first failure
wins:

1. Size: more than ``max_bytes`` -> ``TOO_LARGE``, before any parsing.
2. Parse: strict UTF-8 JSON into plain Python values, every number kept as an exact
   :class:`~decimal.Decimal`. Invalid UTF-8, bad syntax, ``NaN``/``Infinity`` or absurd nesting
   -> ``MALFORMED_JSON``.
3. Card scan over every key, string and number, shadowed duplicates included (see below) ->
   ``CARD_NUMBER_REFUSED``. It runs before anything that could quote a value back in an error
   message, and its own message gives the path only, never the digits.
4. Repeated object keys -> ``SCHEMA_INVALID``: RFC 8259 §4 leaves their meaning open, so two
   readers (the hub, the ERP connector, a technician's jq) could see two different sales.
5. ``kind`` not one of :data:`~edge.outbox.transactions.KINDS` -> ``UNSUPPORTED_KIND``.
6. Shape (msgspec, unknown fields refused) -> ``SCHEMA_INVALID`` with msgspec's reason.
7. Decimal strings (msgspec alone would also take JSON numbers, ``"1e3"`` or ``"1_000"``):
   plain notation, size, places (money: the currency's minor unit) -> ``SCHEMA_INVALID``; a
   ``-`` where the figure may not be negative, or zero for a quantity -> ``NEGATIVE_AMOUNT``.
8. Structure rules a type cannot say (one of quantity/weight, unique line numbers, change only
   on cash, ...) -> ``SCHEMA_INVALID``.
9. Currency: a tender in another currency, or a transaction in another currency than the
   store's (when ``currency`` is given) -> ``CURRENCY_MISMATCH``.
10. Nothing to post (a sale or return without lines, ...) -> ``EMPTY_TRANSACTION``.
11. Figures that must be positive (tenders, paid in/out; all totals except an exchange's) ->
    ``NEGATIVE_AMOUNT``.
12. Totals, to the minor unit -> ``TOTALS_MISMATCH``, naming the figure and both values.
13. Derived figures: a line discounted below zero -> ``NEGATIVE_AMOUNT``.
14. Review flags, which never refuse (the sale happened): ``UNKNOWN_SKU`` when ``unknown_skus``
    says so, ``NO_RECEIPT_RETURN`` for a return or exchange without an original.

The card rule (PCI DSS keeps full card numbers out of systems that have no need for them): a
*candidate* is a maximal run of 13-19 digits, or 13-19 digits written in groups separated by
1-3 spaces or dashes where every group but the last has 4-6 digits (``4111 1111 1111 1111``,
``3782-822463-10005``); a candidate that passes the Luhn check is refused. Digits adjacent to
more digits belong to a longer number and are not a candidate. Exempt: the tender ``token``
(the PSP's, the one place where a long digit string belongs) and, inside a ``sku``, a 13- or
14-digit run with a valid GS1 check digit: an EAN-13/GTIN-14 barcode passes Luhn one time in
ten and the sale must not be refused for the product it sold.

Errors::

    TransactionRejected(code, message, path)   the register must change the transaction;
                                              never retryable as sent
"""

from __future__ import annotations

import decimal
import functools
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeAlias

import msgspec

from edge.outbox.transactions import (
    DECIMAL_FIELDS,
    KINDS,
    DecimalRule,
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
    Totals,
    Transaction,
    Void,
    depends_on,
    event_type,
    minor_unit_digits,
    transaction_json_schema,
)

__all__ = [
    "FLAG_CODES",
    "VALIDATION_ERROR_CODES",
    "Accepted",
    "Flag",
    "FlagCode",
    "TransactionRejected",
    "ValidationCode",
    "contains_card_number",
    "depends_on",
    "event_type",
    "line_amount",
    "luhn_valid",
    "transaction_json_schema",
    "validate",
]


class ValidationCode:
    """Stable codes of :class:`TransactionRejected` (docs/protocol.md)."""

    TOO_LARGE: Final = "TOO_LARGE"
    MALFORMED_JSON: Final = "MALFORMED_JSON"
    CARD_NUMBER_REFUSED: Final = "CARD_NUMBER_REFUSED"
    SCHEMA_INVALID: Final = "SCHEMA_INVALID"
    UNSUPPORTED_KIND: Final = "UNSUPPORTED_KIND"
    CURRENCY_MISMATCH: Final = "CURRENCY_MISMATCH"
    EMPTY_TRANSACTION: Final = "EMPTY_TRANSACTION"
    NEGATIVE_AMOUNT: Final = "NEGATIVE_AMOUNT"
    TOTALS_MISMATCH: Final = "TOTALS_MISMATCH"


#: code -> (retryable, meaning), in the shape of ``edge.bus.ERROR_CODES``. None is retryable:
#: the same bytes will be refused again. TOO_LARGE, MALFORMED_JSON and SCHEMA_INVALID mean the
#: same as the bus codes of the same name.
VALIDATION_ERROR_CODES: Final[dict[str, tuple[bool, str]]] = {
    ValidationCode.TOO_LARGE: (False, "The transaction is larger than the hub accepts."),
    ValidationCode.MALFORMED_JSON: (False, "The transaction is not UTF-8 JSON."),
    ValidationCode.CARD_NUMBER_REFUSED: (
        False,
        "A card number appears outside the tender token; send only token, brand and last4.",
    ),
    ValidationCode.SCHEMA_INVALID: (
        False,
        "The transaction does not match the schema (field, type, format or structure).",
    ),
    ValidationCode.UNSUPPORTED_KIND: (False, "The transaction kind is not one the hub knows."),
    ValidationCode.CURRENCY_MISMATCH: (
        False,
        "A currency differs from the transaction's, or the transaction's from the store's.",
    ),
    ValidationCode.EMPTY_TRANSACTION: (
        False,
        "Nothing to post: a sale or return without lines, an exchange missing a side, a till "
        "close without counts.",
    ),
    ValidationCode.NEGATIVE_AMOUNT: (
        False,
        "A figure is negative (or a quantity zero) where the kind, not the sign, gives the "
        "direction.",
    ),
    ValidationCode.TOTALS_MISMATCH: (
        False,
        "Line amounts, totals and tenders do not reconcile to the currency's minor unit.",
    ),
}


class FlagCode:
    """Codes of review flags: reported with an accepted transaction, never a refusal."""

    UNKNOWN_SKU: Final = "UNKNOWN_SKU"
    NO_RECEIPT_RETURN: Final = "NO_RECEIPT_RETURN"


#: flag code -> meaning (docs/protocol.md).
FLAG_CODES: Final[dict[str, str]] = {
    FlagCode.UNKNOWN_SKU: "A line's SKU is not in the hub's catalogue; accepted, to be reviewed.",
    FlagCode.NO_RECEIPT_RETURN: "Goods came back without naming the original sale.",
}


class TransactionRejected(Exception):
    """The transaction cannot be accepted as sent. ``code`` is stable, ``message`` is for
    humans, ``path`` is the JSON path of the offending value (``$`` for the whole document)."""

    retryable: Final = False

    def __init__(self, code: str, message: str, path: str = "$") -> None:
        super().__init__(f"{code} at {path}: {message}")
        self.code = code
        self.message = message
        self.path = path


class Flag(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Something for a person to review about an accepted transaction."""

    code: str
    path: str
    message: str
    sku: str | None = None


@dataclass(frozen=True)
class Accepted:
    txn: Transaction
    exceptions: list[Flag] = field(default_factory=list)
    """Review flags (retail "exceptions"), in document order."""

    @property
    def flags(self) -> list[Flag]:
        """The same list as :attr:`exceptions`."""
        return self.exceptions


# --------------------------------------------------------------------------------------------
# Arithmetic. An explicit context: the result must not depend on whatever the process-wide
# decimal context happens to be. 60 digits hold the widest product (15-digit quantity ×
# 18-digit price) and any sum of them exactly.

_CONTEXT: Final = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_UP,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_ZERO: Final = Decimal(0)


def line_amount(measure: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    """quantity (or weight) × unit_price, rounded half-up to the currency's minor unit: the
    value a line's ``amount`` must have."""
    product = _CONTEXT.multiply(measure, unit_price)
    return product.quantize(Decimal(1).scaleb(-minor_unit_digits(currency)), context=_CONTEXT)


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for value in values:
        total = _CONTEXT.add(total, value)
    return total


# --------------------------------------------------------------------------------------------
# Card numbers.

_DIGIT_RUN: Final = re.compile(r"\d+")
_GROUP_SEPARATOR: Final = re.compile(r"[ -]{1,3}")


# Luhn's doubled digit, digit by digit ("5" -> 10 -> 1).
_LUHN_DOUBLE: Final = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812-1 over a string of decimal digits."""
    if not digits.isascii():  # other Unicode decimal digits (full-width, Arabic-Indic, ...)
        digits = "".join(str(int(char)) for char in digits)
    kept, doubled = digits[::-1][0::2], digits[::-1][1::2].translate(_LUHN_DOUBLE)
    return (sum(map(int, kept)) + sum(map(int, doubled))) % 10 == 0


def _gs1_valid(digits: str) -> bool:
    """GS1 check digit (weights 3,1,3,... from the right, check digit excluded)."""
    body = digits[:-1]
    weighted = sum(int(char) * (3 if i % 2 == 0 else 1) for i, char in enumerate(reversed(body)))
    return (10 - weighted % 10) % 10 == int(digits[-1])


def _card_candidates(text: str) -> Iterator[tuple[str, bool]]:
    """(digits, contiguous) for every candidate in ``text`` that passes Luhn."""
    runs = list(_DIGIT_RUN.finditer(text))
    for i, run in enumerate(runs):
        digits = run.group()
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield digits, True
        # Grouped forms starting at this run; at most 19 digits, so a handful of steps.
        if not 4 <= len(digits) <= 6:
            continue
        joined, previous = digits, run
        for j in range(i + 1, len(runs)):
            following = runs[j]
            if not _GROUP_SEPARATOR.fullmatch(text, previous.end(), following.start()):
                break
            group = following.group()
            joined += group
            if len(joined) > 19:
                break
            if len(joined) >= 13 and luhn_valid(joined):
                yield joined, False
            if not 4 <= len(group) <= 6:
                break  # it could only have been the last group
            previous = following


def contains_card_number(text: str, *, barcode_field: bool = False) -> bool:
    """True when ``text`` holds something refused as a card number (see the module docstring).
    ``barcode_field``: the text is a SKU, where valid GTIN-13/14 runs are allowed."""
    if len(text) < 13:  # the common case: too short to hold 13 digits
        return False
    for digits, contiguous in _card_candidates(text):
        if barcode_field and contiguous and len(digits) in (13, 14) and _gs1_valid(digits):
            continue
        return True
    return False


# --------------------------------------------------------------------------------------------
# Parsing into a plain tree, with paths.

# A path is a linked list (parent, segment) so that deep documents cost O(1) per node.
_Path: TypeAlias = "tuple[_Path, str | int] | None"


def _format_path(path: _Path) -> str:
    segments: list[str | int] = []
    while path is not None:
        path, segment = path
        segments.append(segment)
    out = ["$"]
    for segment in reversed(segments):
        if isinstance(segment, int):
            out.append(f"[{segment}]")
        else:
            out.append("." + (segment if len(segment) <= 64 else segment[:61] + "..."))
    return "".join(out)


class _DuplicateKeys:
    """Stands in for an object whose keys repeat: keeps every pair so that the card scan sees
    the shadowed values too. Never leaves this module (step 4 refuses it)."""

    def __init__(self, pairs: list[tuple[str, Any]], duplicate: str) -> None:
        self.pairs = pairs
        self.duplicate = duplicate


def _repeated(pairs: list[tuple[str, Any]]) -> _DuplicateKeys:
    """An object's pairs, where some key repeats."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _DuplicateKeys(pairs, key)
        seen.add(key)
    raise AssertionError("unreachable: no key repeats")  # pragma: no cover


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(slots=True)
class _Parsed:
    tree: Any
    repeated_keys: bool = False
    """Some object repeats a key (it comes out as :class:`_DuplicateKeys`)."""
    exponent_numbers: bool = False
    """Some number the card scan reads in exponent form: ``4.1E+15`` as written, or
    ``0.0000001``, which Decimal writes ``1E-7``."""


def _parse(text: str) -> _Parsed:
    """``text`` (the request decoded) as a plain tree, and what the parser saw on the way (so
    that nothing walks the tree again to find it)."""
    parsed = _Parsed(None)

    def obj(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _DuplicateKeys:
        result = dict(pairs)
        if len(result) == len(pairs):
            return result
        parsed.repeated_keys = True
        return _repeated(pairs)

    def number(written: str) -> Decimal:
        # Integers never print in exponent form; a fraction or exponent token may.
        if "e" in written or "E" in written or "0.000000" in written:
            parsed.exponent_numbers = True
        return Decimal(written)

    try:
        parsed.tree = json.loads(
            text,
            object_pairs_hook=obj,
            parse_float=number,
            parse_int=Decimal,  # exact, and free of int()'s 4300-digit limit
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise TransactionRejected(
            ValidationCode.MALFORMED_JSON, "the JSON is nested too deeply"
        ) from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise TransactionRejected(
            ValidationCode.MALFORMED_JSON, f"not JSON: {str(exc)[:120]}"
        ) from None
    return parsed


def _is_token(path: _Path) -> bool:
    """``$.tenders[i].token``: the only place a PSP token lives."""
    if path is None or path[1] != "token":
        return False
    tender = path[0]
    if tender is None or not isinstance(tender[1], int):
        return False
    tenders = tender[0]
    return tenders is not None and tenders[1] == "tenders" and tenders[0] is None


def _number_is_card(number: Decimal) -> bool:
    text = str(number)
    if contains_card_number(text):
        return True
    if "E" not in text:
        return False
    # 4.111111111111111E+15 is the same number as 4111111111111111.
    exponent = number.as_tuple().exponent  # an int for every number JSON can write
    return (
        isinstance(exponent, int)
        and exponent > 0
        and number.adjusted() < 20
        and contains_card_number(format(number, "f"))
    )


def _scan(tree: Any) -> str | None:
    """Step 3 (raises) and the path of the first repeated key for step 4 (returned)."""
    duplicate_at: str | None = None
    stack: list[tuple[Any, _Path]] = [(tree, None)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if (
                len(value) >= 13
                and not _is_token(path)
                and contains_card_number(value, barcode_field=path is not None and path[1] == "sku")
            ):
                raise TransactionRejected(
                    ValidationCode.CARD_NUMBER_REFUSED,
                    "this value contains a card number; card numbers are not accepted (send "
                    "the PSP token, card_brand and last4)",
                    _format_path(path),
                )
        elif isinstance(value, Decimal):
            if _number_is_card(value) and not _is_token(path):
                raise TransactionRejected(
                    ValidationCode.CARD_NUMBER_REFUSED,
                    "this number looks like a card number; card numbers are not accepted",
                    _format_path(path),
                )
        elif isinstance(value, list):
            stack.extend((child, (path, i)) for i, child in reversed(list(enumerate(value))))
        elif isinstance(value, dict | _DuplicateKeys):
            pairs = value.pairs if isinstance(value, _DuplicateKeys) else list(value.items())
            for key, _ in pairs:
                if contains_card_number(key):
                    # The key would be the last path segment: name the object holding it.
                    raise TransactionRejected(
                        ValidationCode.CARD_NUMBER_REFUSED,
                        "an object key here looks like a card number; card numbers are not "
                        "accepted (send the PSP token, card_brand and last4)",
                        _format_path(path),
                    )
            if isinstance(value, _DuplicateKeys) and duplicate_at is None:
                duplicate_at = _format_path((path, value.duplicate))
            stack.extend((child, (path, key)) for key, child in reversed(pairs))
    return duplicate_at


# --------------------------------------------------------------------------------------------
# Decimal strings (step 7).

_PLAIN_DECIMAL: Final = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")


# A stretch of digits, spaces and dashes long enough to hold 13 digits: every card candidate
# (module docstring) lies inside one, with all its digits. The same in ASCII, for an ASCII
# text (most are), where it is twice as fast.
_DIGIT_STRETCH: Final = re.compile(r"\d[\d -]{11,}\d")
_ASCII_DIGIT_STRETCH: Final = re.compile(r"[0-9][0-9 -]{11,}[0-9]")


def _may_hold_card_number(text: str) -> bool:
    """False when the raw JSON ``text`` cannot hold a card candidate in a key, a string or a
    number as written, so the per-value scan (step 3) has nothing to find. A cheap superset
    test: True only means the scan must look. It looks when the text has an escape
    (``\\u0034`` is a digit the raw text does not show) or a stretch of digits, spaces and
    dashes holding 13 digits, unless that stretch is one plain run failing Luhn (the usual
    EAN-13 SKU), which no candidate can come from. Numbers the scan reads in exponent form
    (``4.1E+15``) are the parser's to report (:attr:`_Parsed.exponent_numbers`)."""
    if "\\" in text:
        return True
    stretches = _ASCII_DIGIT_STRETCH if text.isascii() else _DIGIT_STRETCH
    for stretch in stretches.finditer(text):
        digits = stretch.group()
        if digits.isdigit():
            if len(digits) <= 19 and luhn_valid(digits):
                return True
        elif sum(char.isdigit() for char in digits) >= 13:
            return True
    return False


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _check_decimals(tree: Any, currency: str) -> None:
    places_of_money = minor_unit_digits(currency)
    if _decimals_fine(tree, _fine_decimals(places_of_money)):
        return
    _name_decimal_problem(tree, places_of_money, currency)


def _fine_pattern(rule: DecimalRule, places: int) -> re.Pattern[str]:
    """Every string :func:`_decimal_problem` finds no problem with, as one pattern."""
    nonzero = r"(?!-?0(?:\.0+)?\Z)" if rule.positive else ""
    sign = "-?" if rule.signed else ""
    integer = f"(?:0|[1-9][0-9]{{0,{rule.max_integer_digits - 1}}})"
    fraction = f"(?:\\.[0-9]{{1,{places}}})?" if places else ""
    return re.compile(nonzero + sign + integer + fraction)


@functools.cache
def _fine_decimals(places_of_money: int) -> dict[str, re.Pattern[str]]:
    """Field name -> :func:`_fine_pattern`, for a currency with this many minor digits."""
    return {
        key: _fine_pattern(rule, places_of_money if rule.max_places is None else rule.max_places)
        for key, rule in DECIMAL_FIELDS.items()
    }


def _decimals_fine(tree: Any, fine: dict[str, re.Pattern[str]]) -> bool:
    """Step 7 without the paths or the reasons (the common case: every figure is fine): one
    pattern per decimal field."""
    stack: list[Any] = [tree]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            for key, child in value.items():
                pattern = fine.get(key)
                if pattern is None or child is None:
                    if isinstance(child, dict | list):
                        stack.append(child)
                    continue
                if not isinstance(child, str) or pattern.fullmatch(child) is None:
                    return False
    return True


def _name_decimal_problem(tree: Any, places_of_money: int, currency: str) -> None:
    """Step 7 again, in document order with paths, to raise the first problem."""
    stack: list[tuple[Any, _Path]] = [(tree, None)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((child, (path, i)) for i, child in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key, child in reversed(list(value.items())):
                rule = DECIMAL_FIELDS.get(key)
                if rule is None or child is None:
                    stack.append((child, (path, key)))
                    continue
                places = places_of_money if rule.max_places is None else rule.max_places
                problem = _decimal_problem(key, child, rule, places, currency)
                if problem is not None:
                    code, message = problem
                    raise TransactionRejected(code, message, _format_path((path, key)))


def _decimal_problem(
    key: str, written: Any, rule: DecimalRule, places: int, currency: str
) -> tuple[str, str] | None:
    """(code, message) when ``written`` is not a valid decimal string for ``rule``."""
    if not isinstance(written, str):
        return (
            ValidationCode.SCHEMA_INVALID,
            f'{key} must be a decimal string such as "12.34", not a JSON number',
        )
    match = _PLAIN_DECIMAL.fullmatch(written)
    if match is None:
        return (
            ValidationCode.SCHEMA_INVALID,
            f"{key} must be a plain decimal string (digits, optional '.' and fraction; no "
            f"exponent, '+', spaces or leading zeros), got {_quote(written)}",
        )
    sign, integer, fraction = match.group(1), match.group(2), match.group(3) or ""
    if sign and not rule.signed:
        return (
            ValidationCode.NEGATIVE_AMOUNT,
            f"{key} is {written}: it may not be negative (the kind gives the direction)",
        )
    if len(integer) > rule.max_integer_digits:
        return (
            ValidationCode.SCHEMA_INVALID,
            f"{key} has more than {rule.max_integer_digits} integer digits",
        )
    if len(fraction) > places:
        unit = f"{currency} allows" if rule.max_places is None else "the limit is"
        return (
            ValidationCode.SCHEMA_INVALID,
            f"{key} is {written}: {len(fraction)} decimal places, {unit} {places}",
        )
    if rule.positive and not Decimal(written):
        return ValidationCode.NEGATIVE_AMOUNT, f"{key} must be greater than zero"
    return None


# --------------------------------------------------------------------------------------------
# The entry point.

_decoder: Final[msgspec.json.Decoder[Transaction]] = msgspec.json.Decoder(Transaction)


def validate(
    raw: bytes | bytearray | memoryview | Mapping[str, Any],
    *,
    max_bytes: int,
    unknown_skus: Callable[[Collection[str]], Collection[str]] | None = None,
    currency: str | None = None,
) -> Accepted:
    """Validate one transaction as a register sent it.

    ``raw``: the request's ``data`` bytes, or the same already decoded into a dict (it is
    encoded again, so both take the same path and the same size limit). ``unknown_skus``: the
    catalogue lookup, called once with every line's SKU, answering those it does not hold;
    None skips the check. ``currency``: the store's
    currency, when the hub knows it. Raises :class:`TransactionRejected` and nothing else for
    any input (exceptions raised by ``unknown_skus`` propagate).
    """
    # 1. Size.
    data = _as_bytes(raw)
    if len(data) > max_bytes:
        raise TransactionRejected(
            ValidationCode.TOO_LARGE,
            f"the transaction is {len(data)} bytes; the hub accepts at most {max_bytes}",
        )
    # 2-4. Parse, card scan, repeated keys.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TransactionRejected(
            ValidationCode.MALFORMED_JSON, "the transaction is not valid UTF-8"
        ) from None
    parsed = _parse(text)
    tree = parsed.tree
    must_scan = parsed.exponent_numbers or parsed.repeated_keys or _may_hold_card_number(text)
    duplicate_at = _scan(tree) if must_scan else None
    if duplicate_at is not None:
        raise TransactionRejected(
            ValidationCode.SCHEMA_INVALID, "this key appears more than once", duplicate_at
        )
    # 5. Kind.
    if isinstance(tree, dict):
        kind = tree.get("kind")
        if isinstance(kind, str) and kind not in KINDS:
            raise TransactionRejected(
                ValidationCode.UNSUPPORTED_KIND,
                f"kind {_quote(kind)} is not supported; the hub knows {', '.join(KINDS)}",
                "$.kind",
            )
    # 6. Shape.
    try:
        txn = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `")
        if len(reason) > 300:  # msgspec quotes unknown keys, which can be long
            reason = reason[:297] + "..."
        raise TransactionRejected(
            ValidationCode.SCHEMA_INVALID, reason, where.rstrip("`") or "$"
        ) from None
    except msgspec.DecodeError as exc:  # e.g. a lone UTF-16 surrogate that json let through
        raise TransactionRejected(ValidationCode.MALFORMED_JSON, str(exc)) from None
    # 7. Decimal strings.
    _check_decimals(tree, txn.currency)
    # 8-13. Business rules.
    _RULES[type(txn)](txn, currency)
    # 14. Review flags.
    return Accepted(txn, _flags(txn, unknown_skus))


def _as_bytes(raw: bytes | bytearray | memoryview | Mapping[str, Any]) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    try:
        return msgspec.json.encode(raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TransactionRejected(
            ValidationCode.SCHEMA_INVALID, f"the transaction cannot be encoded as JSON: {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# Business rules (steps 8-13), one function per kind.


def _reject(code: str, message: str, path: str) -> TransactionRejected:
    return TransactionRejected(code, message, path)


def _line_lists(txn: Transaction) -> list[tuple[str, list[Line]]]:
    if isinstance(txn, Exchange):
        return [("returned_lines", txn.returned_lines), ("sold_lines", txn.sold_lines)]
    if isinstance(txn, Sale | Return | Void):
        return [("lines", txn.lines)]
    return []


def _check_line_structure(txn: Transaction) -> None:
    seen: set[int] = set()
    for name, lines in _line_lists(txn):
        for i, line in enumerate(lines):
            where = f"$.{name}[{i}]"
            if (line.quantity is None) == (line.weight is None):
                raise _reject(
                    ValidationCode.SCHEMA_INVALID,
                    "a line has exactly one of quantity and weight",
                    where,
                )
            if line.line_no in seen:
                raise _reject(
                    ValidationCode.SCHEMA_INVALID,
                    f"line_no {line.line_no} is used twice in this transaction",
                    where + ".line_no",
                )
            seen.add(line.line_no)


def _check_tender_structure(tenders: list[Tender]) -> None:
    for i, tender in enumerate(tenders):
        if tender.type != "cash" and tender.change:
            raise _reject(
                ValidationCode.SCHEMA_INVALID,
                f"change is given in cash only; this tender is {tender.type}",
                f"$.tenders[{i}].change",
            )


def _check_currency(txn: Transaction, store_currency: str | None) -> None:
    if store_currency is not None and txn.currency != store_currency:
        raise _reject(
            ValidationCode.CURRENCY_MISMATCH,
            f"the transaction is in {txn.currency}; this store trades in {store_currency}",
            "$.currency",
        )
    if isinstance(txn, Sale | Return | Exchange):
        for i, tender in enumerate(txn.tenders):
            if tender.currency is not None and tender.currency != txn.currency:
                raise _reject(
                    ValidationCode.CURRENCY_MISMATCH,
                    f"the tender is in {tender.currency}, the transaction in {txn.currency}; "
                    "foreign-currency tenders are not supported",
                    f"$.tenders[{i}].currency",
                )


def _check_tender_amounts(tenders: list[Tender]) -> None:
    for i, tender in enumerate(tenders):
        if not tender.amount:
            raise _reject(
                ValidationCode.NEGATIVE_AMOUNT,
                "a tender amount must be greater than zero",
                f"$.tenders[{i}].amount",
            )


def _check_line_amounts(txn: Transaction) -> None:
    for name, lines in _line_lists(txn):
        for i, line in enumerate(lines):
            expected = line_amount(line.measure, line.unit_price, txn.currency)
            if line.amount != expected:
                measure = "quantity" if line.quantity is not None else "weight"
                raise _reject(
                    ValidationCode.TOTALS_MISMATCH,
                    f"amount is {line.amount} but {measure} {line.measure} × unit_price "
                    f"{line.unit_price} is {expected} (rounded half-up to "
                    f"{minor_unit_digits(txn.currency)} places)",
                    f"$.{name}[{i}].amount",
                )


def _check_line_nets(txn: Transaction) -> None:
    for name, lines in _line_lists(txn):
        for i, line in enumerate(lines):
            discounts = _sum(d.amount for d in line.discounts)
            if discounts > line.amount:
                raise _reject(
                    ValidationCode.NEGATIVE_AMOUNT,
                    f"discounts of {discounts} exceed the line amount {line.amount}",
                    f"$.{name}[{i}].discounts",
                )


class _Figures:
    """Σ of a list of lines."""

    def __init__(self, lines: list[Line]) -> None:
        self.subtotal = _sum(line.amount for line in lines)
        self.discounts = _sum(d.amount for line in lines for d in line.discounts)
        self.tax = _sum(line.tax.amount for line in lines if line.tax is not None)


def _mismatch(figure: str, declared: Decimal, explanation: str, computed: Decimal) -> None:
    if declared != computed:
        raise _reject(
            ValidationCode.TOTALS_MISMATCH,
            f"{figure} is {declared} but {explanation} is {computed}",
            f"$.totals.{figure}",
        )


def _check_totals(
    totals: Totals,
    tenders: list[Tender],
    *,
    subtotal: Decimal,
    discounts: Decimal,
    tax: Decimal,
    tax_included: bool,
    what: str,
) -> None:
    """``what`` names the lines in messages ("the line amounts", "sold minus returned ...")."""
    _mismatch("subtotal", totals.subtotal, f"{what} amounts", subtotal)
    _mismatch("discount_total", totals.discount_total, f"{what} discounts", discounts)
    _mismatch("tax_total", totals.tax_total, f"{what} taxes", tax)
    if tax_included:
        total = _CONTEXT.subtract(totals.subtotal, totals.discount_total)
        _mismatch("total", totals.total, "subtotal - discount_total (tax included)", total)
    else:
        total = _CONTEXT.add(
            _CONTEXT.subtract(totals.subtotal, totals.discount_total), totals.tax_total
        )
        _mismatch("total", totals.total, "subtotal - discount_total + tax_total", total)
    for i, tender in enumerate(tenders):
        if tender.change > tender.amount:
            raise _reject(
                ValidationCode.TOTALS_MISMATCH,
                f"change {tender.change} is more than the {tender.amount} tendered",
                f"$.tenders[{i}].change",
            )
    _mismatch(
        "tendered", totals.tendered, "the sum of tender amounts", _sum(t.amount for t in tenders)
    )
    _mismatch("change", totals.change, "the sum of tender change", _sum(t.change for t in tenders))
    settled = _CONTEXT.subtract(totals.tendered, totals.change)
    if settled != abs(totals.total):
        direction = " (a refund)" if totals.total < 0 else ""
        raise _reject(
            ValidationCode.TOTALS_MISMATCH,
            f"total is {totals.total}{direction} but tendered - change is {settled}",
            "$.totals",
        )


def _check_non_negative_totals(totals: Totals) -> None:
    for figure in ("subtotal", "discount_total", "tax_total", "total"):
        value: Decimal = getattr(totals, figure)
        if value < 0:
            raise _reject(
                ValidationCode.NEGATIVE_AMOUNT,
                f"{figure} is {value}: it may not be negative (the kind gives the direction)",
                f"$.totals.{figure}",
            )


def _basket(txn: Sale | Return, store_currency: str | None) -> None:
    _check_line_structure(txn)
    _check_tender_structure(txn.tenders)
    _check_currency(txn, store_currency)
    if not txn.lines:
        raise _reject(
            ValidationCode.EMPTY_TRANSACTION, f"a {txn.kind} has at least one line", "$.lines"
        )
    _check_tender_amounts(txn.tenders)
    _check_non_negative_totals(txn.totals)
    _check_line_amounts(txn)
    figures = _Figures(txn.lines)
    _check_totals(
        txn.totals,
        txn.tenders,
        subtotal=figures.subtotal,
        discounts=figures.discounts,
        tax=figures.tax,
        tax_included=txn.tax_included,
        what="the line",
    )
    _check_line_nets(txn)


def _exchange(txn: Exchange, store_currency: str | None) -> None:
    _check_line_structure(txn)
    _check_tender_structure(txn.tenders)
    _check_currency(txn, store_currency)
    for name, lines in _line_lists(txn):
        if not lines:
            raise _reject(
                ValidationCode.EMPTY_TRANSACTION,
                "an exchange has both returned and sold lines (otherwise post a sale or a return)",
                f"$.{name}",
            )
    _check_tender_amounts(txn.tenders)
    _check_line_amounts(txn)
    sold, returned = _Figures(txn.sold_lines), _Figures(txn.returned_lines)
    _check_totals(
        txn.totals,
        txn.tenders,
        subtotal=_CONTEXT.subtract(sold.subtotal, returned.subtotal),
        discounts=_CONTEXT.subtract(sold.discounts, returned.discounts),
        tax=_CONTEXT.subtract(sold.tax, returned.tax),
        tax_included=txn.tax_included,
        what="sold minus returned line",
    )
    _check_line_nets(txn)


def _void(txn: Void, store_currency: str | None) -> None:
    _check_line_structure(txn)
    if txn.voided is not None and txn.lines:
        raise _reject(
            ValidationCode.SCHEMA_INVALID,
            "a void naming a posted transaction carries no lines (the original has them)",
            "$.lines",
        )
    _check_currency(txn, store_currency)
    _check_line_amounts(txn)
    _check_line_nets(txn)


def _no_money(txn: NoSale | DrawerEvent, store_currency: str | None) -> None:
    _check_currency(txn, store_currency)


def _cash_movement(txn: PaidIn | PaidOut, store_currency: str | None) -> None:
    _check_currency(txn, store_currency)
    if not txn.amount:
        raise _reject(
            ValidationCode.NEGATIVE_AMOUNT,
            f"a {txn.kind} amount must be greater than zero",
            "$.amount",
        )


def _till_close(txn: TillClose, store_currency: str | None) -> None:
    seen: set[str] = set()
    for i, count in enumerate(txn.counts):
        if count.tender_type in seen:
            raise _reject(
                ValidationCode.SCHEMA_INVALID,
                f"tender type {count.tender_type} is counted twice",
                f"$.counts[{i}].tender_type",
            )
        seen.add(count.tender_type)
    _check_currency(txn, store_currency)
    if not txn.counts:
        raise _reject(
            ValidationCode.EMPTY_TRANSACTION, "a till close has at least one count", "$.counts"
        )
    for i, count in enumerate(txn.counts):
        variance = _CONTEXT.subtract(count.counted, count.expected)
        if count.variance != variance:
            raise _reject(
                ValidationCode.TOTALS_MISMATCH,
                f"variance is {count.variance} but counted - expected is {variance}",
                f"$.counts[{i}].variance",
            )


_RULES: Final[dict[type, Callable[[Any, str | None], None]]] = {
    Sale: _basket,
    Return: _basket,
    Exchange: _exchange,
    Void: _void,
    NoSale: _no_money,
    DrawerEvent: _no_money,
    PaidIn: _cash_movement,
    PaidOut: _cash_movement,
    TillClose: _till_close,
}


def _flags(
    txn: Transaction, unknown_skus: Callable[[Collection[str]], Collection[str]] | None
) -> list[Flag]:
    flags: list[Flag] = []
    if isinstance(txn, Return | Exchange) and txn.original is None:
        flags.append(
            Flag(
                code=FlagCode.NO_RECEIPT_RETURN,
                path="$.original",
                message=f"a {txn.kind} without the original sale",
            )
        )
    if unknown_skus is not None:
        named = _line_lists(txn)
        unknown = unknown_skus({line.sku for _, lines in named for line in lines})
        if unknown:
            for name, lines in named:
                for i, line in enumerate(lines):
                    if line.sku in unknown:
                        flags.append(
                            Flag(
                                code=FlagCode.UNKNOWN_SKU,
                                path=f"$.{name}[{i}].sku",
                                message=f"SKU {line.sku!r} is not in the catalogue",
                                sku=line.sku,
                            )
                        )
    return flags
