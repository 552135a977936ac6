"""A simulated register fleet: lanes that ring up valid sales and hand them to the hub the way
a well-behaved register does (used by the demo, the tests and the benchmarks).

A :class:`SimLane` keeps every transaction it rang up until the hub acknowledged it, and
re-sends on timeout or a retryable error, forever (a register's journal): so after any crash,
restart or outage, ``acked`` is exactly the set of transactions the hub promised to keep. It
also keeps what was acknowledged (the last :data:`JOURNAL_KEPT`), and re-sends it from the
time the hub asks on ``store/{store}/hub/journal/resend`` (after it salvaged a damaged outbox
file, after an unclean stop, or while a sale it holds fails its checksum), once per request id:
docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec

from edge.bus import Requester, Topics
from edge.bus.client import Message
from edge.bus.envelope import JournalResend
from edge.bus.errors import BusError

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
JOURNAL_KEPT = 20_000
CATALOGUE = [
    ("SKU-COFFEE-250", "Coffee beans 250 g", Decimal("4.50"), Decimal("0.07")),
    ("SKU-MUG", "Mug", Decimal("9.90"), Decimal("0.19")),
    ("012345678905", "Oat bar 6-pack", Decimal("3.49"), Decimal("0.07")),
    ("4006381333931", "Gouda", Decimal("12.99"), Decimal("0.07")),
    ("SKU-BREAD", "Sourdough loaf", Decimal("3.20"), Decimal("0.07")),
    ("SKU-WINE-RED", "Red wine 0.75 l", Decimal("8.95"), Decimal("0.19")),
]


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def make_sale(
    *, store_id: str, lane_id: str, number: int, rng: random.Random, txn_prefix: str = ""
) -> dict[str, Any]:
    """A valid, reconciling sale (tax exclusive), paid by cash or card token."""
    lines = []
    subtotal = tax_total = Decimal(0)
    for line_no in range(1, rng.randint(1, 4) + 1):
        sku, name, price, rate = rng.choice(CATALOGUE)
        quantity = rng.randint(1, 3)
        amount = (price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
        tax = (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)
        subtotal += amount
        tax_total += tax
        lines.append(
            {
                "line_no": line_no,
                "sku": sku,
                "description": name,
                "quantity": str(quantity),
                "unit_price": _money(price),
                "amount": _money(amount),
                "tax": {"code": f"VAT-{int(rate * 100)}", "rate": str(rate), "amount": _money(tax)},
            }
        )
    total = subtotal + tax_total
    if rng.random() < 0.5:
        tendered = (total / 5).to_integral_value(rounding="ROUND_CEILING") * 5
        change = tendered - total
        tenders = [{"type": "cash", "amount": _money(tendered), "change": _money(change)}]
    else:
        tendered, change = total, Decimal(0)
        tenders = [
            {
                "type": "card",
                "amount": _money(total),
                "auth_code": f"A{rng.randint(10000, 99999)}",
                "token": f"tok_{rng.getrandbits(64):016x}",
                "card_brand": "visa",
                "last4": f"{rng.randint(0, 9999):04d}",
            }
        ]
    return {
        "kind": "sale",
        "txn_id": f"{txn_prefix}{store_id}-{lane_id}-{number:07d}",
        "store_id": store_id,
        "lane_id": lane_id,
        "operator_id": "op-1",
        "register_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "currency": "EUR",
        "receipt_no": f"{number:06d}",
        "lines": lines,
        "tenders": tenders,
        "totals": {
            "subtotal": _money(subtotal),
            "discount_total": "0.00",
            "tax_total": _money(tax_total),
            "total": _money(total),
            "tendered": _money(tendered),
            "change": _money(change),
        },
    }


@dataclass
class LaneStats:
    rung: int = 0
    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    """Transactions the hub refused for good (should stay empty with valid sales)."""
    resends: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    printed: int = 0
    """Receipts the hub answered as printed (a duplicate answer counts once)."""
    journal_resent: int = 0
    """Acknowledged sales sent again because the hub asked for the journal."""
    print_errors: dict[str, int] = field(default_factory=dict)
    """Print refusals by code (paper out, offline, ...): the cashier would be told."""


class Journal:
    """A register's journal of acknowledged sales (the last :data:`JOURNAL_KEPT`), and its
    answer to the hub's re-send request (docs/protocol.md, ``txn.submit``): every sale handed
    over at or after ``since``, oldest first, once per request id."""

    def __init__(self) -> None:
        self.sales: dict[str, tuple[float, dict[str, Any]]] = {}
        """By txn id: (when handed over, by this register's clock; the sale)."""
        self._answered: set[str] = set()

    def record(self, txn: dict[str, Any]) -> None:
        self.sales.setdefault(txn["txn_id"], (dt.datetime.now(dt.UTC).timestamp(), txn))
        if len(self.sales) > JOURNAL_KEPT:
            del self.sales[next(iter(self.sales))]

    async def answer(
        self,
        requests: asyncio.Queue[Message] | None,
        submit: Callable[[dict[str, Any]], Awaitable[bool]],
    ) -> int:
        """Act on the requests queued (``submit`` until it returns True: acknowledged or
        refused for good); returns how many sales were sent again. A connection error
        propagates: the request is answered again, whole, after the reconnect (it is
        retained)."""
        sent = 0
        while requests is not None and not requests.empty():
            try:
                request = msgspec.json.decode(requests.get_nowait().payload, type=JournalResend)
            except msgspec.DecodeError:
                continue  # empty (nothing asked) or not for us
            if request.id in self._answered:
                continue
            start = dt.datetime.fromisoformat(request.since).timestamp() if request.since else 0
            for handed_at, txn in sorted(self.sales.values(), key=lambda entry: entry[0]):
                if handed_at >= start:
                    while not await submit(txn):
                        pass
                    sent += 1
            self._answered.add(request.id)
        return sent


class SimLane:
    """One register: rings up ``count`` sales (or until stopped), at ``interval_s`` apart."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        store_id: str,
        lane_id: str,
        seed: int = 0,
        interval_s: float = 0.0,
        timeout_s: float = 2.0,
        txn_prefix: str = "",
        printer: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls
        """Mutual TLS with the certificate this lane got at enrollment (a secured hub)."""
        self._host = host
        self._port = port
        self._store_id = store_id
        self.lane_id = lane_id
        self._rng = random.Random(seed)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._prefix = txn_prefix
        self._printer = printer
        self._topics = Topics(store_id)
        self.device_id = f"SIM-{store_id}-{lane_id}".upper()
        self.stats = LaneStats()
        self.stop = asyncio.Event()
        self.receipts = 0
        """The receipt counter: it goes on across runs, as a register's does."""
        self.journal = Journal()
        self._resend_requests: asyncio.Queue[Message] | None = None

    async def run(self, count: int | None = None) -> LaneStats:
        """Ring up sales until ``count`` are acknowledged or :attr:`stop` is set.

        One MQTT connection for the lane's life, as a register keeps one: it announces the lane
        online (retained, with a retained last will ``offline``) and re-connects after any
        loss, re-sending the sale in hand (a register's journal)."""
        pending: dict[str, Any] | None = None
        attempt = 0
        while not self.stop.is_set() and (count is None or len(self.stats.acked) < count):
            try:
                async with self._connect() as requester:
                    attempt = 0
                    while not self.stop.is_set() and (
                        count is None or len(self.stats.acked) < count
                    ):
                        if pending is None:
                            self.receipts += 1
                            pending = make_sale(
                                store_id=self._store_id,
                                lane_id=self.lane_id,
                                number=self.receipts,
                                rng=self._rng,
                                txn_prefix=self._prefix,
                            )
                            self.stats.rung += 1
                        self.stats.journal_resent += await self.journal.answer(
                            self._resend_requests, lambda txn: self._submit(requester, txn)
                        )
                        if await self._submit(requester, pending):
                            if self._printer and pending["txn_id"] in self.stats.acked:
                                await self._print(requester, pending)
                            pending = None
                        if self._interval_s:
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(self._interval_s):
                                    await self.stop.wait()
                    await requester.publish(
                        self._topics.lane_status(self.lane_id), _status("offline"), retain=True
                    )
            except (BusError, OSError) as exc:  # broker gone: reconnect
                log.debug("sim lane %s: %s; reconnecting", self.lane_id, exc)
                self.stats.resends += 1
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
                attempt += 1
        return self.stats

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Requester]:
        status = self._topics.lane_status(self.lane_id)
        async with (
            Requester(
                self._host,
                self._port,
                client_id=f"sim-{self._store_id}-{self.lane_id}",
                reply_topic=self._topics.lane_reply(self.lane_id),
                will=(status, _status("offline", reason="lost")),
                tls=self._tls,
            ) as requester,
            requester.subscription(self._topics.journal_resend) as requests,
        ):
            self._resend_requests = requests
            await requester.publish(status, _status("online", device=self.device_id), retain=True)
            yield requester

    async def _submit(self, requester: Requester, txn: dict[str, Any]) -> bool:
        """One request; True once the sale is acknowledged or refused for good. Connection
        errors propagate (the caller reconnects and sends it again)."""
        topic = self._topics.lane_rpc(self.lane_id, "txn.submit")
        started = asyncio.get_running_loop().time()
        try:
            reply = await requester.request(topic, txn, timeout=self._timeout_s)
        except TimeoutError:
            self.stats.resends += 1
            return False
        if reply.ok:
            self.stats.latencies_ms.append((asyncio.get_running_loop().time() - started) * 1000)
            self.stats.acked.add(txn["txn_id"])
            self.journal.record(txn)
            return True
        assert reply.error is not None
        if not reply.error.retryable:
            self.stats.refused[txn["txn_id"]] = reply.error.code
            return True
        self.stats.resends += 1
        await asyncio.sleep(0.05)
        return False

    async def _print(self, requester: Requester, txn: dict[str, Any]) -> None:
        """The customer's receipt on the shared printer, once (``device.print`` de-duplicates
        by command id, so a re-send after a timeout never prints twice)."""
        command = {
            "command_id": f"{txn['txn_id']}:receipt",
            "device": self._printer,
            "receipt": receipt_of(txn),
        }
        topic = self._topics.lane_rpc(self.lane_id, "device.print")
        for _ in range(3):
            try:
                reply = await requester.request(topic, command, timeout=self._timeout_s)
            except TimeoutError:
                continue
            if reply.ok:
                self.stats.printed += 1
                return
            assert reply.error is not None
            code = reply.error.code
            self.stats.print_errors[code] = self.stats.print_errors.get(code, 0) + 1
            return  # a register would tell the cashier and offer an e-receipt


def receipt_of(txn: dict[str, Any]) -> dict[str, Any]:
    """The receipt document (docs/protocol.md, device.print) of a simulated sale."""
    totals = txn["totals"]
    return {
        "header": [f"Store {txn['store_id']}", f"{txn['lane_id']}  {txn['txn_id']}"],
        "lines": [
            {
                "text": line["description"],
                "quantity": str(line["quantity"]),
                "amount": line["amount"],
            }
            for line in txn["lines"]
        ],
        "totals": [
            {"label": "Subtotal", "amount": totals["subtotal"]},
            {"label": "Tax", "amount": totals["tax_total"]},
            {"label": "TOTAL", "amount": totals["total"]},
        ],
        "tenders": [{"label": t["type"], "amount": t["amount"]} for t in txn["tenders"]],
        "footer": ["Thank you!"],
        "barcode": {"symbology": "CODE128", "data": txn["txn_id"][-14:]},
    }


def _status(state: str, *, device: str | None = None, reason: str | None = None) -> bytes:
    status: dict[str, Any] = {"v": 1, "state": state}
    if device:
        status |= {"device_id": device, "software": "sim-1"}
    if reason:
        status["reason"] = reason
    return json.dumps(status).encode()
