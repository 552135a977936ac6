"""The MQTT topic tree, in one place.

Every topic the hub or a register uses is built here; nothing else formats topic strings.

::

    store/{store}/hub/status                     retained hub presence (last will: offline)
    store/{store}/hub/rpc/{method}               requests to the hub itself (ping, ...)
    store/{store}/lane/{lane}/rpc/{method}       requests from one lane (txn.submit, ...)
    store/{store}/lane/{lane}/reply              the conventional response topic of a lane
    store/{store}/lane/{lane}/status             retained lane presence (last will: offline)
    store/{store}/device/{device}/status         retained peripheral status

Segments are restricted to ``[A-Za-z0-9_.-]`` (1-64 characters) so that an id can never inject
a ``/``, ``+`` or ``#`` into a topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(ValueError):
    """An id that cannot be a topic segment, or a topic outside the tree."""


def segment(value: str, what: str = "id") -> str:
    if not _SEGMENT.match(value):
        raise TopicError(f"{what} {value!r} is not a valid topic segment ([A-Za-z0-9_.-]{{1,64}})")
    return value


@dataclass(frozen=True)
class RpcAddress:
    """Where a request was sent: the hub itself (lane is None) or on behalf of one lane."""

    scope: Literal["hub", "lane"]
    method: str
    lane: str | None = None


class Topics:
    """Topic names for one store."""

    def __init__(self, store_id: str) -> None:
        self.store_id = segment(store_id, "store id")
        self.root = f"store/{self.store_id}"

    @property
    def hub_status(self) -> str:
        return f"{self.root}/hub/status"

    @property
    def journal_resend(self) -> str:
        """Retained: the hub asks the registers to re-send their journals (docs/protocol.md)."""
        return f"{self.root}/hub/journal/resend"

    def hub_rpc(self, method: str) -> str:
        return f"{self.root}/hub/rpc/{segment(method, 'method')}"

    @property
    def hub_rpc_filter(self) -> str:
        return f"{self.root}/hub/rpc/+"

    def lane_rpc(self, lane: str, method: str) -> str:
        return f"{self.root}/lane/{segment(lane, 'lane id')}/rpc/{segment(method, 'method')}"

    @property
    def lane_rpc_filter(self) -> str:
        return f"{self.root}/lane/+/rpc/+"

    def lane_reply(self, lane: str) -> str:
        return f"{self.root}/lane/{segment(lane, 'lane id')}/reply"

    def lane_status(self, lane: str) -> str:
        return f"{self.root}/lane/{segment(lane, 'lane id')}/status"

    def lane_status_filter(self) -> str:
        return f"{self.root}/lane/+/status"

    def device_status(self, device: str) -> str:
        return f"{self.root}/device/{segment(device, 'device id')}/status"

    def parse_rpc(self, topic: str) -> RpcAddress:
        """The address of a request topic; :class:`TopicError` if it is not one."""
        parts = topic.split("/")
        if len(parts) >= 2 and parts[0] == "store" and parts[1] == self.store_id:
            rest = parts[2:]
            if len(rest) == 3 and rest[0] == "hub" and rest[1] == "rpc":
                return RpcAddress("hub", segment(rest[2], "method"))
            if len(rest) == 4 and rest[0] == "lane" and rest[2] == "rpc":
                return RpcAddress("lane", segment(rest[3], "method"), segment(rest[1], "lane id"))
        raise TopicError(f"{topic!r} is not a request topic of store {self.store_id}")
