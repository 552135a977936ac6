"""The cloud broker's topic tree for one store (docs/protocol.md §11).

::

    {prefix}/store/{store}/config      HQ → hub   config documents for this store (QoS 1)
    {prefix}/store/{store}/command     HQ → hub   commands for this store (QoS 1)
    {prefix}/group/{group}/config      HQ → hubs  config documents for a group of stores
    {prefix}/group/{group}/command     HQ → hubs  commands for a group
    {prefix}/all/config                HQ → hubs  config documents for every store
    {prefix}/all/command               HQ → hubs  commands for every store
    {prefix}/store/{store}/ack         hub → HQ   one message per stage of each document
    {prefix}/store/{store}/telemetry   hub → HQ   health, periodic and on change
    {prefix}/store/{store}/status      hub → HQ   retained online/offline (last will: offline)

The topic only routes: what a document is for is decided by its signed ``target``.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.bus.topics import segment
from edge.hq.config import Kind


class HqTopics:
    def __init__(self, prefix: str, store_id: str, groups: Iterable[str] = ()) -> None:
        self.prefix = segment(prefix, "topic prefix")
        self.store_id = segment(store_id, "store id")
        self.groups = tuple(segment(group, "group") for group in groups)
        self.store = f"{self.prefix}/store/{self.store_id}"

    def inbound(self, kind: Kind) -> list[str]:
        """Every topic documents of ``kind`` may arrive on for this store."""
        return [
            f"{self.store}/{kind}",
            *(f"{self.prefix}/group/{group}/{kind}" for group in self.groups),
            f"{self.prefix}/all/{kind}",
        ]

    def config(self) -> str:
        return f"{self.store}/config"

    def command(self) -> str:
        return f"{self.store}/command"

    @property
    def ack(self) -> str:
        return f"{self.store}/ack"

    @property
    def telemetry(self) -> str:
        return f"{self.store}/telemetry"

    @property
    def status(self) -> str:
        return f"{self.store}/status"

    def kind_of(self, topic: str) -> Kind | None:
        """The kind of documents ``topic`` carries, or None when it is not an inbound topic."""
        for kind in ("config", "command"):
            if topic in self.inbound(kind):
                return kind
        return None
