"""Appliers: how a config from HQ reaches the live components.

An :class:`Applier` owns some config keys. The link's config transaction
(:mod:`edge.hq.handler`) is, for a config ``C`` of version ``v``:

1. every key ``C`` sets must be owned by some applier (else ``INVALID_CONFIG``: a key no
   component can change live is refused, never silently ignored);
2. ``validate(C)`` on every applier: all problems are collected (``INVALID_CONFIG``);
3. ``apply(C, v)`` on every applier, in order, each returning an *undo*; one that raises
   stops the transaction (``APPLY_FAILED``);
4. the hub must be ready (the composition root's probe and every ``is_ready()``) within
   ``apply_ready_timeout_s`` (else ``NOT_READY``);
5. on a failure in 3 or 4 the undos run in reverse order: the previous config is back.

``apply`` receives HQ's *whole* overlay: a key ``C`` leaves out goes back to the value from the
hub's settings file. The composition root builds the appliers from the live components; the
built-ins here cover an attribute of a live object and the per-lane settings.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from edge.bus.topics import Topics, segment
from edge.hq.config import HqConfig, LaneConfig, config_value

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]
ProblemList = list[tuple[str, str]]


class Applier(Protocol):
    """A component's side of a config transaction (module docstring)."""

    @property
    def keys(self) -> frozenset[str]:
        """The dotted config keys it owns (``catalogue.interval_s``, or ``lanes``)."""
        ...

    def validate(self, config: HqConfig) -> ProblemList:
        """Every problem with ``config``'s values for its keys, as ``(key, reason)``. Pure."""
        ...

    async def apply(self, config: HqConfig, version: int) -> Undo:
        """Put ``config`` in force; return how to restore what was in force before. Raising
        means nothing of it is in force (the applier cleans up its own partial work)."""
        ...

    def is_ready(self) -> bool:
        """Whether the component works (part of the post-apply health check)."""
        ...


class AttributeApplier:
    """One numeric key held in a live object's attribute that the object reads each time it
    needs it (e.g. ``CatalogueService.interval`` for ``catalogue.interval_s``)."""

    def __init__(
        self,
        key: str,
        target: object,
        attribute: str,
        *,
        minimum: float,
        maximum: float,
        integer: bool = False,
    ) -> None:
        self.key = key
        self.keys = frozenset({key})
        self._target = target
        self._attribute = attribute
        self._minimum = minimum
        self._maximum = maximum
        self._integer = integer
        self.file_value: Any = getattr(target, attribute)
        """The value from the settings file: in force when HQ's config leaves the key out."""

    def validate(self, config: HqConfig) -> ProblemList:
        value = config_value(config, self.key)
        if value is None:
            return []
        if self._integer and not isinstance(value, int):
            return [(self.key, "must be a whole number")]
        if not self._minimum <= value <= self._maximum:
            return [(self.key, f"must be between {self._minimum:g} and {self._maximum:g}")]
        return []

    async def apply(self, config: HqConfig, version: int) -> Undo:
        value = config_value(config, self.key)
        before = getattr(self._target, self._attribute)
        setattr(self._target, self._attribute, self.file_value if value is None else value)

        async def undo() -> None:
            setattr(self._target, self._attribute, before)

        return undo

    def is_ready(self) -> bool:
        return True


class Publisher(Protocol):
    """What :class:`LaneConfigApplier` needs of the local bus (edge.bus.Bus has it)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


class LaneConfigMessage(msgspec.Struct, kw_only=True):
    """Retained on ``store/{store}/lane/{lane}/config`` (schema lane-config.json)."""

    v: int = 1
    lane: str
    version: int
    """The HQ config version these settings come from."""
    settings: LaneConfig


def lane_config_topic(topics: Topics, lane: str) -> str:
    return f"{topics.root}/lane/{segment(lane, 'lane id')}/config"


class LaneConfigApplier:
    """``lanes``: each lane's settings, retained on its config topic on the local broker, so a
    lane gets them at every (re)connect. A lane left out of a config has its retained message
    cleared (an empty retained payload)."""

    keys = frozenset({"lanes"})

    def __init__(
        self, bus: Publisher, topics: Topics, *, known_devices: frozenset[str] | None = None
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._known_devices = known_devices
        self.current: dict[str, LaneConfig] = {}
        self.current_version = 0

    def validate(self, config: HqConfig) -> ProblemList:
        problems: ProblemList = []
        if self._known_devices is None:
            return problems
        for lane, settings in (config.lanes or {}).items():
            for field in ("printer", "scale"):
                name = getattr(settings, field)
                if name is not None and name not in self._known_devices:
                    problems.append((f"lanes.{lane}.{field}", f"no device named {name!r}"))
        return problems

    async def apply(self, config: HqConfig, version: int) -> Undo:
        before, before_version = dict(self.current), self.current_version
        target = dict(config.lanes or {})
        try:
            await self._publish(target, version, before)
        except BaseException:
            # Leave the broker as it was (best effort: the bus may be what failed).
            try:
                await self._publish(before, before_version, target)
            except Exception as exc:
                log.warning("hq: lane config: could not restore after a failed apply: %s", exc)
            raise

        async def undo() -> None:
            await self._publish(before, before_version, target)

        return undo

    def is_ready(self) -> bool:
        return True

    async def _publish(
        self, lanes: dict[str, LaneConfig], version: int, previous: dict[str, LaneConfig]
    ) -> None:
        for lane, settings in sorted(lanes.items()):
            message = LaneConfigMessage(lane=lane, version=version, settings=settings)
            await self._bus.publish(
                lane_config_topic(self._topics, lane), msgspec.json.encode(message), retain=True
            )
        for lane in sorted(set(previous) - set(lanes)):
            await self._bus.publish(lane_config_topic(self._topics, lane), b"", retain=True)
        self.current, self.current_version = dict(lanes), version
