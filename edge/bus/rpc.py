"""Request/response over MQTT 5: every request gets exactly one reply.

Theory of operation
-------------------
A request arrives on ``.../rpc/{method}`` with a *Response Topic* and *Correlation Data*. The
router, in order:

1. drops (and counts) a request without a response topic: there is nowhere to answer;
2. refuses a payload over ``max_request_bytes`` (``TOO_LARGE``) before parsing it;
3. decodes the envelope (``MALFORMED_JSON``, ``SCHEMA_INVALID``, ``UNSUPPORTED_VERSION``);
4. refuses new work while the hub stops (``UNAVAILABLE``, retryable);
5. finds the method for the topic's scope (``UNKNOWN_METHOD``);
6. runs the handler under the request timeout (``TIMEOUT``); a :class:`RequestError` becomes its
   error reply, any other exception ``INTERNAL`` with a reference that is also logged;
7. publishes exactly one reply (QoS 1) to the response topic with the correlation data.

A broken request never affects another: each is handled in its own task and every failure is
turned into that request's reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from edge.bus.client import Bus, Message
from edge.bus.envelope import ENVELOPE_VERSION, ErrorBody, Reply, Request, decode_request, encode
from edge.bus.errors import BusUnavailable, ErrorCode, RequestError
from edge.bus.topics import TopicError, Topics
from edge.metrics import Metrics
from edge.settings import BusSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a handler knows about the request besides its data."""

    request_id: str
    method: str
    lane: str | None
    """The lane the request came from (from its topic), or None for hub-scope requests."""
    topic: str
    sent_at: str | None


Handler = Callable[[RequestContext, msgspec.Raw], Awaitable[Any]]


def decode_data(raw: msgspec.Raw, typ: type[T]) -> T:
    """Decode a request's ``data`` into ``typ``; a mismatch is ``SCHEMA_INVALID`` with its path."""
    try:
        return msgspec.json.decode(raw, type=typ)
    except msgspec.ValidationError as exc:
        raise RequestError(
            ErrorCode.SCHEMA_INVALID, _with_data_path(str(exc)), details={"reason": str(exc)}
        ) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the envelope already parsed it
        raise RequestError(ErrorCode.MALFORMED_JSON, str(exc)) from None


def _with_data_path(message: str) -> str:
    return message.replace("- at `$", "- at `$.data")


class RpcRouter:
    def __init__(
        self, *, bus: Bus, topics: Topics, settings: BusSettings, metrics: Metrics
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._methods: dict[tuple[str, str], Handler] = {}
        bus.route(topics.hub_rpc_filter, self.handle)
        bus.route(topics.lane_rpc_filter, self.handle)

    def register(self, scope: Literal["hub", "lane"], method: str, handler: Handler) -> None:
        key = (scope, method)
        if key in self._methods:
            raise ValueError(f"{scope} method {method!r} registered twice")
        self._methods[key] = handler

    @property
    def methods(self) -> list[tuple[str, str]]:
        return sorted(self._methods)

    async def handle(self, message: Message) -> None:
        started = time.perf_counter()
        if not message.response_topic:
            self._metrics.requests_unanswerable.inc()
            log.warning("rpc: request on %s has no response topic; dropped", message.topic)
            return
        request_id: str | None = None
        method = "?"
        try:
            address = self._topics.parse_rpc(message.topic)
            method = address.method
            request = self._decode(message.payload)
            request_id = request.id
            if self._bus.is_stopping:
                raise RequestError(ErrorCode.UNAVAILABLE, "the hub is stopping; retry shortly")
            handler = self._methods.get((address.scope, address.method))
            if handler is None:
                raise RequestError(
                    ErrorCode.UNKNOWN_METHOD,
                    f"no {address.scope} method {address.method!r}",
                    details={"known": [m for s, m in self.methods if s == address.scope]},
                )
            context = RequestContext(
                request_id=request.id,
                method=address.method,
                lane=address.lane,
                topic=message.topic,
                sent_at=request.sent_at,
            )
            try:
                async with asyncio.timeout(self._settings.request_timeout_s):
                    data = await handler(context, request.data)
            except TimeoutError:
                raise RequestError(
                    ErrorCode.TIMEOUT,
                    f"not finished within {self._settings.request_timeout_s:g}s",
                ) from None
            reply = Reply(id=request_id, ok=True, data=data)
            outcome = "ok"
        except RequestError as exc:
            reply = _error_reply(request_id, exc)
            outcome = exc.code
        except TopicError as exc:
            reply = _error_reply(request_id, RequestError(ErrorCode.UNKNOWN_METHOD, str(exc)))
            outcome = ErrorCode.UNKNOWN_METHOD
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("rpc: %s failed (ref %s)", message.topic, ref)
            reply = _error_reply(
                request_id,
                RequestError(
                    ErrorCode.INTERNAL, f"internal error (ref {ref})", details={"ref": ref}
                ),
            )
            outcome = ErrorCode.INTERNAL
        try:
            await self._bus.publish(
                message.response_topic,
                encode(reply),
                qos=1,
                correlation_data=message.correlation_data,
            )
        except BusUnavailable as exc:
            # The register did not get its reply; it re-sends, and methods are idempotent.
            log.warning("rpc: reply to %s lost: %s", message.topic, exc)
            outcome = "reply_lost"
        self._metrics.requests.labels(method, outcome).inc()
        self._metrics.request_seconds.labels(method).observe(time.perf_counter() - started)

    def _decode(self, payload: bytes) -> Request:
        limit = self._settings.max_request_bytes
        if len(payload) > limit:
            raise RequestError(
                ErrorCode.TOO_LARGE,
                f"payload is {len(payload)} bytes; the maximum is {limit}",
                details={"size": len(payload), "max": limit},
            )
        try:
            request = decode_request(payload)
        except msgspec.ValidationError as exc:
            raise RequestError(ErrorCode.SCHEMA_INVALID, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise RequestError(ErrorCode.MALFORMED_JSON, f"not UTF-8 JSON: {exc}") from None
        if request.v != ENVELOPE_VERSION:
            raise RequestError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"envelope version {request.v} is not supported (this hub: {ENVELOPE_VERSION})",
                details={"supported": [ENVELOPE_VERSION]},
            )
        return request


def _error_reply(request_id: str | None, exc: RequestError) -> Reply:
    return Reply(
        id=request_id,
        ok=False,
        error=ErrorBody(
            code=exc.code, message=exc.message, retryable=exc.retryable, details=exc.details
        ),
    )
