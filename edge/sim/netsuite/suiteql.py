"""A tiny SuiteQL engine: exactly the query shapes the store-edge connector sends, parsed properly.

Theory of operation
-------------------
``POST /services/rest/query/v1/suiteql`` (ref §4) carries one SELECT in ``{"q": ...}``. This
module turns it into rows in four steps, all pure:

1. :func:`tokenize`: numbers, ``'strings'`` (``''`` escapes a quote), identifiers, comparison
   operators and ``( ) , . * -``; anything else (a bind variable ``:last``, a double quote, a
   semicolon) is refused.
2. :func:`parse_query`: recursive descent over this grammar (keywords in any case)::

       query     := SELECT [TOP n] item {, item} FROM table [alias]
                    [WHERE cond {AND cond}] [ORDER BY key [ASC|DESC] {, key [ASC|DESC]}]
       item      := column | TO_CHAR(column, 'mask') | BUILTIN.DF(column) | COUNT(*)
                    followed by an optional [AS] alias
       column    := [qualifier.]name
       cond      := column op literal | column [NOT] LIKE 'pattern'
                  | column [NOT] IN (literal {, literal}) | column IS [NOT] NULL
                  | column [NOT] BETWEEN literal AND literal | ( cond {AND cond} )
       literal   := [-]number | 'string' | TO_DATE('text', 'mask') | TO_TIMESTAMP('text', 'mask')
       op        := = | != | <> | < | <= | > | >=

   ``OR``, joins, ``GROUP BY``, sub-queries and ``SELECT *`` are outside the subset and are
   refused like a query NetSuite cannot run.
3. :func:`bind`: the table and every column must exist; literals are converted to the column's
   type (dates from ``TO_DATE`` or from ``'YYYY-MM-DD'``, ``'YYYY-MM-DD HH24:MI:SS'`` or
   ``'M/D/YYYY'`` strings; booleans from ``'T'``/``'F'``). ``ORDER BY`` may name a column or the
   alias of a selected column.
4. :func:`execute`: the table returns a :class:`Selection` (it may answer from an index, see
   ``tables.py``); the page ``[offset, offset + limit)`` is rendered.

Every refusal is ``400 INVALID_PARAMETER`` with NetSuite's wording "Invalid search query. Detailed
unprocessed description follows. Search error occurred: ..." (the prefix is what NetSuite prints
for an unrunnable query; the reason after it is the simulator's own).

The queries the connector sends (tables and columns in ``tables.py``)
--------------------------------------------------------------------
Catalogue, full download by keyset (the only way past the 100,000-row cap, ref §4.2)::

    SELECT id, itemid, displayname, upccode, custitem_alt_barcodes, itemtype, isinactive,
           custitem_pos_department, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified
    FROM item WHERE id > 41000 ORDER BY id                        -- ?limit=1000&offset=0

Catalogue, incremental (dedupe on ``id``; re-query an overlap window, ref §4.3)::

    SELECT id, ... FROM item i
    WHERE i.lastmodifieddate >= TO_DATE('2024-05-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS')
    ORDER BY i.lastmodifieddate, i.id

Prices of one page of items (ref §4.3)::

    SELECT item, pricelevel, BUILTIN.DF(pricelevel) AS pricelevelname, unitprice, currency, quantity
    FROM pricing WHERE item IN (1, 2, 3) ORDER BY item, pricelevel
    -- or WHERE item > 41000 AND item <= 42000

Reconciliation of one store's business day (``externalid`` compares ignore case, as NetSuite's
external ids do)::

    SELECT id, tranid, externalid, type, TO_CHAR(trandate, 'YYYY-MM-DD') AS trandate
    FROM transaction
    WHERE externalid LIKE 'pos-s001-%' AND trandate = TO_DATE('2024-05-01', 'YYYY-MM-DD')
    ORDER BY id
    SELECT COUNT(*) AS n FROM transaction WHERE externalid IN ('pos-s001-a', 'pos-s001-b')

Answer rows follow ref §4.2: keys are lower case (aliases too), every row carries ``"links": []``,
every value is a string (``"T"``/``"F"`` for booleans), and null columns are left out of the row.
A date or datetime column selected without ``TO_CHAR`` renders as ``M/D/YYYY`` (the default user
date format; time zone UTC), so the connector must use ``TO_CHAR`` for precision. (Strings for
numbers and the omission of nulls are how community clients describe SuiteQL answers; UNCERTAIN.)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Protocol, cast

from edge.sim.netsuite.errors import NsError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_PAGES",
    "MAX_RESULTS",
    "Condition",
    "ListSelection",
    "Query",
    "Result",
    "Selection",
    "SortKey",
    "Table",
    "bind",
    "check_paging",
    "execute",
    "invalid_query",
    "parse_query",
    "render",
    "scan_select",
    "tokenize",
]

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 1000  # ref §4.2
MAX_PAGES: Final = 1000  # "a maximum of 1000 pages" (ref §4.2)
MAX_RESULTS: Final = 100_000  # without SuiteAnalytics Connect (ref §4.1)
MAX_QUERY_CHARS: Final = 100_000

ColumnType = Literal["int", "number", "text", "bool", "date", "datetime"]

_INVALID_QUERY: Final = (
    "Invalid search query. Detailed unprocessed description follows. Search error occurred: "
)


def invalid_query(reason: str) -> NsError:
    """The 400 answer of a query the engine cannot run."""
    return NsError(400, "INVALID_PARAMETER", _INVALID_QUERY + reason)


# -- 1. tokens ---------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)
      | (?P<str>'(?:[^']|'')*')
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|=|<|>)
      | (?P<punct>[(),.*-])
    )""",
    re.VERBOSE,
)


TokenKind = Literal["num", "str", "ident", "op", "punct", "end"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    position: int

    @property
    def word(self) -> str:
        """The identifier in lower case ("" for other tokens), for keyword matching."""
        return self.text.lower() if self.kind == "ident" else ""


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token; refuses anything else."""
    if len(text) > MAX_QUERY_CHARS:
        raise invalid_query(f"the query is longer than {MAX_QUERY_CHARS} characters")
    tokens: list[Token] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            tokens.append(Token("end", "", position))
            return tokens
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise invalid_query(f"unexpected character {text[position]!r} at {position}")
        kind = match.lastgroup
        assert kind in ("num", "str", "ident", "op", "punct")
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        tokens.append(Token(cast(TokenKind, kind), value, match.start(kind)))
        position = match.end()


# -- 2. syntax ---------------------------------------------------------------------------------

_KEYWORDS: Final = frozenset(
    {
        "select", "top", "from", "where", "and", "or", "not", "order", "by", "asc", "desc", "as",
        "like", "in", "is", "null", "between", "group", "having", "join", "left", "right",
        "inner", "outer", "full", "cross", "on", "union", "distinct", "case", "when", "then",
        "else", "end", "exists", "fetch", "offset", "limit",
    }
)  # fmt: skip
_UNSUPPORTED: Final = {
    "or": "OR is not supported by the simulator",
    "join": "joins are not supported by the simulator",
    "left": "joins are not supported by the simulator",
    "right": "joins are not supported by the simulator",
    "inner": "joins are not supported by the simulator",
    "full": "joins are not supported by the simulator",
    "cross": "joins are not supported by the simulator",
    "group": "GROUP BY is not supported by the simulator",
    "having": "HAVING is not supported by the simulator",
    "union": "UNION is not supported by the simulator",
    "distinct": "DISTINCT is not supported by the simulator",
}


@dataclass(frozen=True, slots=True)
class ColumnRef:
    qualifier: str | None
    name: str


@dataclass(frozen=True, slots=True)
class SelectItem:
    kind: Literal["column", "to_char", "df", "count"]
    column: ColumnRef | None
    mask: str | None
    alias: str | None


@dataclass(frozen=True, slots=True)
class DateLiteral:
    """``TO_DATE('text', 'mask')`` / ``TO_TIMESTAMP``: epoch seconds, UTC."""

    epoch: int


LiteralValue = int | Decimal | str | DateLiteral


@dataclass(frozen=True, slots=True)
class RawCondition:
    column: ColumnRef
    op: str  # = != < <= > >= like in null between
    values: tuple[LiteralValue, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class OrderItem:
    column: ColumnRef
    descending: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query, not yet checked against a table."""

    items: tuple[SelectItem, ...]
    table: str
    alias: str | None
    where: tuple[RawCondition, ...]
    order: tuple[OrderItem, ...]
    top: int | None


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def fail(self, expected: str) -> NsError:
        token = self.token
        if token.word in _UNSUPPORTED:
            return invalid_query(_UNSUPPORTED[token.word])
        found = "the end of the query" if token.kind == "end" else repr(token.text)
        return invalid_query(f"expected {expected} at {token.position}, found {found}")

    def keyword(self, word: str) -> bool:
        if self.token.word == word:
            self.index += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise self.fail(word.upper())

    def punct(self, char: str) -> bool:
        if self.token.kind == "punct" and self.token.text == char:
            self.index += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        if not self.punct(char):
            raise self.fail(repr(char))

    def name(self, what: str) -> str:
        token = self.token
        if token.kind != "ident" or token.word in _KEYWORDS:
            raise self.fail(what)
        self.index += 1
        return token.text

    def string(self, what: str) -> str:
        if self.token.kind != "str":
            raise self.fail(what)
        return self.advance().text

    # -- grammar ---------------------------------------------------------------------------

    def query(self) -> Query:
        self.expect_keyword("select")
        top: int | None = None
        if self.keyword("top"):
            if self.token.kind != "num" or not self.token.text.isdigit():
                raise self.fail("a row count after TOP")
            top = int(self.advance().text)
        items = [self.select_item()]
        while self.punct(","):
            items.append(self.select_item())
        self.expect_keyword("from")
        table = self.name("a table name")
        alias: str | None = None
        if self.token.kind == "ident" and self.token.word not in _KEYWORDS:
            alias = self.advance().text
        where: list[RawCondition] = []
        if self.keyword("where"):
            self.conjunction(where)
        order: list[OrderItem] = []
        if self.keyword("order"):
            self.expect_keyword("by")
            order.append(self.order_item())
            while self.punct(","):
                order.append(self.order_item())
        if self.token.kind != "end":
            raise self.fail("the end of the query")
        return Query(tuple(items), table, alias, tuple(where), tuple(order), top)

    def select_item(self) -> SelectItem:
        if self.token.kind == "punct" and self.token.text == "*":
            raise invalid_query("SELECT * is not supported by the simulator; name the columns")
        word = self.token.word
        nxt = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        item: SelectItem
        if word == "count" and nxt is not None and nxt.text == "(":
            self.index += 2
            self.expect_punct("*")
            self.expect_punct(")")
            item = SelectItem("count", None, None, None)
        elif word == "to_char" and nxt is not None and nxt.text == "(":
            self.index += 2
            column = self.column()
            self.expect_punct(",")
            mask = self.string("a format mask")
            self.expect_punct(")")
            item = SelectItem("to_char", column, mask, None)
        elif word == "builtin" and nxt is not None and nxt.text == ".":
            self.index += 2
            if self.token.word != "df":
                raise self.fail("DF after BUILTIN.")
            self.index += 1
            self.expect_punct("(")
            column = self.column()
            self.expect_punct(")")
            item = SelectItem("df", column, None, None)
        else:
            item = SelectItem("column", self.column(), None, None)
        alias: str | None = None
        if self.keyword("as"):
            alias = self.name("an alias")
        elif self.token.kind == "ident" and self.token.word not in _KEYWORDS:
            alias = self.advance().text
        return SelectItem(item.kind, item.column, item.mask, alias)

    def column(self) -> ColumnRef:
        first = self.name("a column name")
        if self.punct("."):
            return ColumnRef(first, self.name("a column name after '.'"))
        return ColumnRef(None, first)

    def conjunction(self, into: list[RawCondition]) -> None:
        self.condition(into)
        while self.keyword("and"):
            self.condition(into)

    def condition(self, into: list[RawCondition]) -> None:
        if self.punct("("):
            self.conjunction(into)
            self.expect_punct(")")
            return
        column = self.column()
        negated = self.keyword("not")
        token = self.token
        if token.kind == "op" and not negated:
            self.advance()
            op = "!=" if token.text == "<>" else token.text
            into.append(RawCondition(column, op, (self.literal(),), False))
        elif self.keyword("like"):
            into.append(RawCondition(column, "like", (self.string("a LIKE pattern"),), negated))
        elif self.keyword("in"):
            self.expect_punct("(")
            values = [self.literal()]
            while self.punct(","):
                values.append(self.literal())
            self.expect_punct(")")
            into.append(RawCondition(column, "in", tuple(values), negated))
        elif self.keyword("between"):
            low = self.literal()
            self.expect_keyword("and")
            into.append(RawCondition(column, "between", (low, self.literal()), negated))
        elif not negated and self.keyword("is"):
            is_not = self.keyword("not")
            self.expect_keyword("null")
            into.append(RawCondition(column, "null", (), is_not))
        else:
            raise self.fail("a comparison")

    def literal(self) -> LiteralValue:
        token = self.token
        if token.kind == "punct" and token.text == "-":
            self.advance()
            if self.token.kind != "num":
                raise self.fail("a number after '-'")
            number = self.number(self.advance().text)
            return -number
        if token.kind == "num":
            return self.number(self.advance().text)
        if token.kind == "str":
            return self.advance().text
        if token.word in ("to_date", "to_timestamp"):
            self.advance()
            self.expect_punct("(")
            text = self.string("a date string")
            self.expect_punct(",")
            mask = self.string("a format mask")
            self.expect_punct(")")
            return DateLiteral(parse_with_mask(text, mask))
        raise self.fail("a literal")

    @staticmethod
    def number(text: str) -> int | Decimal:
        return Decimal(text) if "." in text else int(text)

    def order_item(self) -> OrderItem:
        column = self.column()
        descending = False
        if self.keyword("desc"):
            descending = True
        else:
            self.keyword("asc")
        return OrderItem(column, descending)


def parse_query(text: str) -> Query:
    """Parse one SuiteQL SELECT of the supported subset, or raise the 400 :class:`NsError`."""
    if not isinstance(text, str) or not text.strip():
        raise invalid_query("the query is empty")
    return _Parser(tokenize(text)).query()


# -- dates -------------------------------------------------------------------------------------

# Oracle datetime format elements the connector uses; anything else in a mask is refused.
_MASK_ELEMENTS: Final = (("YYYY", r"(\d{4})", "%Y"), ("HH24", r"(\d{1,2})", "%H"),
                         ("MI", r"(\d{1,2})", "%M"), ("MM", r"(\d{1,2})", "%m"),
                         ("DD", r"(\d{1,2})", "%d"), ("SS", r"(\d{1,2})", "%S"))  # fmt: skip


def _mask_parts(mask: str) -> list[tuple[str, str]]:
    """``mask`` as (element, "") and ("", literal text) parts."""
    parts: list[tuple[str, str]] = []
    index = 0
    upper = mask.upper()
    while index < len(mask):
        if mask[index] == '"':
            end = mask.find('"', index + 1)
            if end < 0:
                raise invalid_query(f"unterminated quoted text in format mask {mask!r}")
            parts.append(("", mask[index + 1 : end]))
            index = end + 1
            continue
        for element, _, _ in _MASK_ELEMENTS:
            if upper.startswith(element, index):
                parts.append((element, ""))
                index += len(element)
                break
        else:
            if mask[index].isalnum():
                raise invalid_query(f"format mask {mask!r}: unsupported element at {index}")
            parts.append(("", mask[index]))
            index += 1
    return parts


def parse_with_mask(text: str, mask: str) -> int:
    """``TO_DATE(text, mask)`` as epoch seconds (UTC)."""
    pattern = ""
    order: list[str] = []
    for element, literal in _mask_parts(mask):
        if element:
            pattern += next(rx for name, rx, _ in _MASK_ELEMENTS if name == element)
            order.append(element)
        else:
            pattern += re.escape(literal)
    match = re.fullmatch(pattern, text.strip())
    if match is None:
        raise invalid_query(f"{text!r} does not match the format mask {mask!r}")
    values = dict(zip(order, (int(g) for g in match.groups()), strict=True))
    try:
        moment = dt.datetime(
            values.get("YYYY", 1970),
            values.get("MM", 1),
            values.get("DD", 1),
            values.get("HH24", 0),
            values.get("MI", 0),
            values.get("SS", 0),
            tzinfo=dt.UTC,
        )
    except ValueError as exc:
        raise invalid_query(f"{text!r} is not a valid date: {exc}") from None
    return int(moment.timestamp())


def format_with_mask(epoch: int, mask: str) -> str:
    """``TO_CHAR(datetime, mask)``."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    out = []
    for element, literal in _mask_parts(mask):
        if element:
            out.append(moment.strftime(next(f for name, _, f in _MASK_ELEMENTS if name == element)))
        else:
            out.append(literal)
    return "".join(out)


_DATE_STRING_MASKS: Final = ("YYYY-MM-DD", "YYYY-MM-DD HH24:MI:SS", "MM/DD/YYYY")


def _date_from_string(text: str) -> int:
    for mask in _DATE_STRING_MASKS:
        try:
            return parse_with_mask(text, mask)
        except NsError:
            continue
    raise invalid_query(f"{text!r} is not a date (use TO_DATE or 'YYYY-MM-DD')")


def user_date(epoch: int) -> str:
    """A date as NetSuite renders it without TO_CHAR: ``M/D/YYYY`` (default preference)."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return f"{moment.month}/{moment.day}/{moment.year}"


# -- 3. binding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A WHERE condition bound to a column, with values of the column's type."""

    column: str
    op: str
    values: tuple[Any, ...]
    negated: bool
    case_insensitive: bool = False
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _members: frozenset[Any] = field(default=frozenset(), repr=False, compare=False)

    def matches(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.column)
        if self.op == "null":
            return (value is None) != self.negated
        if value is None:
            return False  # SQL: a comparison with NULL is never true, negated or not
        if self.case_insensitive and isinstance(value, str):
            value = value.lower()
        result: bool
        if self.op == "like":
            assert self._pattern is not None
            result = self._pattern.fullmatch(str(value)) is not None
        elif self.op == "in":
            result = value in self._members
        elif self.op == "between":
            result = self.values[0] <= value <= self.values[1]
        else:
            result = _COMPARE[self.op](value, self.values[0])
        return result != self.negated


_COMPARE: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


@dataclass(frozen=True, slots=True)
class SortKey:
    column: str
    descending: bool


@dataclass(frozen=True, slots=True)
class BoundItem:
    kind: Literal["column", "to_char", "df", "count"]
    column: str | None
    column_type: ColumnType | None
    mask: str | None
    name: str


@dataclass(frozen=True, slots=True)
class BoundQuery:
    table: Table
    items: tuple[BoundItem, ...]
    where: tuple[Condition, ...]
    order: tuple[SortKey, ...]
    top: int | None

    @property
    def is_count(self) -> bool:
        return any(item.kind == "count" for item in self.items)


class Selection(Protocol):
    """The rows a table selected: an exact count, and any slice of them in order."""

    @property
    def total(self) -> int: ...

    def rows(self, start: int, stop: int) -> list[Mapping[str, Any]]: ...


class Table(Protocol):
    """One SuiteQL table. ``select`` may use any index it has; the result must be exact."""

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> Mapping[str, ColumnType]: ...

    @property
    def case_insensitive(self) -> frozenset[str]: ...

    def select(self, where: Sequence[Condition], order: Sequence[SortKey]) -> Selection: ...

    def display(self, column: str, value: Any) -> str | None: ...


def _coerce(value: LiteralValue, column_type: ColumnType, column: str) -> Any:
    def bad() -> NsError:
        shown = value.epoch if isinstance(value, DateLiteral) else value
        return invalid_query(f"{shown!r} cannot be compared with {column} ({column_type})")

    if column_type in ("date", "datetime"):
        if isinstance(value, DateLiteral):
            return value.epoch
        if isinstance(value, str):
            return _date_from_string(value)
        raise bad()
    if isinstance(value, DateLiteral):
        raise bad()
    if column_type == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise bad()
    if column_type == "number":
        try:
            return Decimal(value) if not isinstance(value, Decimal) else value
        except (InvalidOperation, ValueError):
            raise bad() from None
    if column_type == "bool":
        if isinstance(value, str) and value.upper() in ("T", "F"):
            return value.upper() == "T"
        raise bad()
    return str(value)  # text


def _like_pattern(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if case_insensitive else 0))


def bind(query: Query, tables: Mapping[str, Table]) -> BoundQuery:
    """Check ``query`` against its table and convert its literals (400 on any mismatch)."""
    table = tables.get(query.table.lower())
    if table is None:
        raise invalid_query(f"Record '{query.table}' was not found.")
    columns = table.columns
    names = {query.table.lower()} | ({query.alias.lower()} if query.alias else set())

    def resolve(ref: ColumnRef) -> str:
        if ref.qualifier is not None and ref.qualifier.lower() not in names:
            raise invalid_query(f"unknown table or alias {ref.qualifier!r}")
        name = ref.name.lower()
        if name not in columns:
            raise invalid_query(f"Field '{ref.name}' for record '{table.name}' was not found.")
        return name

    items: list[BoundItem] = []
    for index, item in enumerate(query.items, start=1):
        if item.kind == "count":
            items.append(BoundItem("count", None, None, None, (item.alias or "count").lower()))
            continue
        assert item.column is not None
        column = resolve(item.column)
        default = column if item.kind == "column" else f"expr{index}"
        items.append(
            BoundItem(
                item.kind, column, columns[column], item.mask, (item.alias or default).lower()
            )
        )
    if any(i.kind == "count" for i in items) and any(i.kind != "count" for i in items):
        raise invalid_query("COUNT(*) cannot be mixed with columns without GROUP BY")

    where: list[Condition] = []
    for raw in query.where:
        column = resolve(raw.column)
        column_type = columns[column]
        ci = column in table.case_insensitive
        values = tuple(_coerce(v, column_type, column) for v in raw.values)
        if ci:
            values = tuple(v.lower() if isinstance(v, str) else v for v in values)
        pattern = None
        if raw.op == "like":
            if column_type != "text":
                raise invalid_query(f"LIKE needs a text column, {column} is {column_type}")
            pattern = _like_pattern(str(values[0]), ci)
        if raw.op in ("<", "<=", ">", ">=", "between") and column_type == "bool":
            raise invalid_query(f"{column} is a boolean and has no order")
        where.append(Condition(column, raw.op, values, raw.negated, ci, pattern, frozenset(values)))

    aliases = {item.name: item.column for item in items if item.column is not None}
    order: list[SortKey] = []
    for key in query.order:
        if key.column.qualifier is None and key.column.name.lower() in aliases:
            target = aliases[key.column.name.lower()]
            assert target is not None
            order.append(SortKey(target, key.descending))
        else:
            order.append(SortKey(resolve(key.column), key.descending))
    return BoundQuery(table, tuple(items), tuple(where), tuple(order), query.top)


# -- 4. execution ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListSelection:
    """A selection held as a list (small tables, or queries no index can answer)."""

    items: list[Mapping[str, Any]]

    @property
    def total(self) -> int:
        return len(self.items)

    def rows(self, start: int, stop: int) -> list[Mapping[str, Any]]:
        return self.items[start:stop]


def _sort_value(value: Any) -> tuple[int, Any]:
    # Oracle puts NULLs last in ascending order, first in descending order.
    return (1, 0) if value is None else (0, value)


def scan_select(
    rows: Iterable[Mapping[str, Any]], where: Sequence[Condition], order: Sequence[SortKey]
) -> ListSelection:
    """Filter and sort ``rows`` by brute force (stable: ties keep the input order)."""
    chosen = [row for row in rows if all(c.matches(row) for c in where)]
    for key in reversed(order):
        column = key.column

        def sort_key(row: Mapping[str, Any], column: str = column) -> tuple[int, Any]:
            return _sort_value(row.get(column))

        chosen.sort(key=sort_key, reverse=key.descending)
    return ListSelection(chosen)


def render(value: Any, column_type: ColumnType) -> str:
    """A raw column value as SuiteQL's JSON shows it (a string)."""
    if column_type == "bool":
        return "T" if value else "F"
    if column_type in ("date", "datetime"):
        return user_date(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Result:
    """One page of answer rows, and the counts the response envelope needs."""

    items: list[dict[str, Any]]
    total: int
    offset: int

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def has_more(self) -> bool:
        return self.offset + self.count < self.total


def _render_row(bound: BoundQuery, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"links": []}
    for item in bound.items:
        assert item.column is not None
        assert item.column_type is not None
        value = row.get(item.column)
        rendered: str | None
        if value is None:
            rendered = None
        elif item.kind == "to_char":
            assert item.mask is not None
            if item.column_type in ("date", "datetime"):
                rendered = format_with_mask(int(value), item.mask)
            else:
                rendered = render(value, item.column_type)
        elif item.kind == "df":
            rendered = bound.table.display(item.column, value)
        else:
            rendered = render(value, item.column_type)
        if rendered is not None:  # SuiteQL leaves null columns out of the row (UNCERTAIN)
            out[item.name] = rendered
    return out


def check_paging(
    limit: str | None, offset: str | None, *, max_results: int = MAX_RESULTS
) -> tuple[int, int]:
    """The ``limit`` and ``offset`` query parameters, checked as NetSuite checks them (ref §4.2).

    ``limit`` is 1..1000 (default 1000); ``offset`` is >= 0 (default 0) and a multiple of
    ``limit``; the page must start below ``max_results`` (100,000) and be one of the first 1000
    pages. Past that the only way on is a new query (keyset paging).
    """

    def number(raw: str | None, name: str, default: int) -> int:
        if raw is None:
            return default
        if not re.fullmatch(r"\d{1,9}", raw):
            raise NsError(
                400,
                "INVALID_PARAMETER",
                f"Invalid '{name}' parameter value: {raw!r} is not a non-negative integer.",
                query_param=name,
            )
        return int(raw)

    the_limit = number(limit, "limit", DEFAULT_LIMIT)
    the_offset = number(offset, "offset", 0)
    if not 1 <= the_limit <= MAX_LIMIT:
        raise NsError(
            400,
            "INVALID_PARAMETER",
            f"Invalid 'limit' parameter value: it must be between 1 and {MAX_LIMIT}.",
            query_param="limit",
        )
    if the_offset % the_limit:
        raise NsError(
            400,
            "INVALID_PARAMETER",
            "Invalid 'offset' parameter value: the offset must be a multiple of the limit.",
            query_param="offset",
        )
    if the_offset >= max_results or the_offset // the_limit >= MAX_PAGES:
        raise NsError(
            400,
            "INVALID_PARAMETER",
            f"Invalid 'offset' parameter value: a query returns at most {max_results} results "
            f"in at most {MAX_PAGES} pages. Narrow the query (e.g. WHERE id > last id).",
            query_param="offset",
        )
    return the_limit, the_offset


def execute(
    text: str,
    tables: Mapping[str, Table],
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    max_results: int = MAX_RESULTS,
) -> Result:
    """Run ``text`` and return rows ``[offset, offset + limit)`` (paging already checked)."""
    bound = bind(parse_query(text), tables)
    selection = bound.table.select(bound.where, bound.order)
    total = selection.total
    if bound.top is not None:
        total = min(total, bound.top)
    if bound.is_count:
        row: dict[str, Any] = {"links": []}
        row.update({item.name: str(total) for item in bound.items})
        items = [row] if offset == 0 else []
        return Result(items, 1, offset)
    stop = min(offset + limit, total, max_results)
    rows = selection.rows(offset, stop) if stop > offset else []
    return Result([_render_row(bound, r) for r in rows], total, offset)
