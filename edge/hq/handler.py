"""One message from HQ in, acknowledgements out: the config transaction and the commands.

Theory of operation
-------------------
:meth:`HqHandler.handle` takes the payload of one message from a config or command topic and
never raises (but a cancellation): whatever the bytes, the outcome is acknowledgements through
the ``send`` callable, or a log line. Messages are handled one at a time, in arrival order.

1. Open the document (:func:`edge.hq.config.open_document`). A refusal is acked ``rejected``
   with its code, except a *retained* copy of exactly the last version processed: that is the
   cloud broker re-delivering HQ's retained config at a reconnect, dropped with a log line.
2. Record the version as processed (atomically, on disk), then ack ``received``. From here the
   document is never processed again, whatever happens next (a crash, a reconnect).
3. Config: parse it, check every key has an owner and every applier's validation
   (``INVALID_CONFIG`` with every problem), ack ``validated``; run the transaction of
   :mod:`edge.hq.apply`; record the config in force, ack ``applied``; or, rolled back, ack
   ``rolled_back`` with ``APPLY_FAILED`` or ``NOT_READY``.
   Command: find its handler (``UNKNOWN_COMMAND``), ack ``validated``, run it, ack
   ``applied`` with its result, or ``rejected`` with ``COMMAND_FAILED``.

:meth:`HqHandler.restore` applies the config in force from the state file again after a
restart (once the hub is ready, or after ``apply_ready_timeout_s`` anyway; before any message
is handled), without acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.hq.apply import Applier, Undo
from edge.hq.config import (
    Ack,
    Document,
    HqConfig,
    Kind,
    Problem,
    Stage,
    config_keys,
    open_document,
    parse_command,
    parse_config,
    payload_ref,
)
from edge.hq.errors import Refused
from edge.hq.settings import HqSettings
from edge.hq.state import HqState, StateFile

log = logging.getLogger(__name__)

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""A command: its ``args`` in, a JSON-able result (or None) out. Raise :class:`Refused` with a
code for a refusal of its own (e.g. ``MALFORMED`` arguments); anything else is
``COMMAND_FAILED``."""

AckSink = Callable[[Ack], Awaitable[None]]


class HqHandler:
    def __init__(
        self,
        settings: HqSettings,
        *,
        store_id: str,
        hub_id: str,
        public_key: Ed25519PublicKey,
        state: StateFile,
        appliers: Sequence[Applier],
        commands: Mapping[str, CommandHandler],
        ready: Callable[[], bool],
        send: AckSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store_id = store_id
        self._hub_id = hub_id
        self._public_key = public_key
        self._state_file = state
        self.appliers = list(appliers)
        self.commands = dict(commands)
        self._ready = ready
        self._send = send
        self._clock = clock
        self._groups = frozenset(settings.groups)
        self.state = HqState()
        owners: dict[str, int] = {}
        for applier in self.appliers:
            for key in applier.keys:
                if key in owners:
                    raise ValueError(f"config key {key} has two appliers")
                owners[key] = 1
        self._owned = frozenset(owners)

    # -- start ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Read the state file (raises :class:`edge.hq.state.HqStateError` if unreadable)."""
        self.state = await asyncio.to_thread(self._state_file.load)

    async def restore(self) -> None:
        """Apply the config in force again (after a restart), once the hub is ready."""
        config = self.state.applied
        if config is None:
            return
        if not await self._wait_ready():
            log.warning(
                "hq: hub not ready; restoring config version %d anyway", self.state.applied_version
            )
        for applier in self.appliers:
            try:
                await applier.apply(config, self.state.applied_version)
            except Exception as exc:
                log.error(
                    "hq: restoring config version %d: %s failed: %s",
                    self.state.applied_version,
                    type(applier).__name__,
                    exc,
                )
        log.info("hq: config version %d restored", self.state.applied_version)

    # -- one message ---------------------------------------------------------------------------

    async def handle(self, kind: Kind, payload: bytes, *, retain: bool = False) -> None:
        """Process one message; never raises but a cancellation (module docstring)."""
        ref = payload_ref(payload)
        try:
            await self._handle(kind, payload, ref, retain)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hq: unexpected error handling a %s message (ref %s)", kind, ref[:12])
            with contextlib.suppress(Exception):
                await self._ack(ref, "rejected", code="INTERNAL", message="unexpected hub error")

    async def _handle(self, kind: Kind, payload: bytes, ref: str, retain: bool) -> None:
        last = getattr(self.state.last_version, kind)
        # 1. open
        try:
            doc = open_document(
                payload,
                topic_kind=kind,
                public_key=self._public_key,
                store_id=self._store_id,
                groups=self._groups,
                last_version=last,
                now=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
                command_max_age_s=self._settings.command_max_age_s,
                max_bytes=self._settings.max_document_bytes,
            )
        except Refused as refused:
            if retain and refused.code == "STALE_VERSION" and refused.version == last:
                log.info("hq: retained %s version %d already processed", kind, last)
                return
            log.warning("hq: %s refused (ref %s): %s", kind, ref[:12], refused)
            await self._refused(ref, refused)
            return
        # 2. processed at most once: recorded before anything is acknowledged or applied
        setattr(self.state.last_version, kind, doc.version)
        await self._save()
        await self._ack(ref, "received", doc)
        # 3.
        if doc.kind == "config":
            await self._config(ref, doc)
        else:
            await self._command(ref, doc)

    async def _config(self, ref: str, doc: Document) -> None:
        try:
            config = self._validate(doc)
        except Refused as refused:
            log.warning("hq: config version %d refused: %s", doc.version, refused)
            await self._refused(ref, refused)
            return
        await self._ack(ref, "validated", doc)
        failure = await self._transaction(config, doc.version)
        if failure is not None:
            code, message = failure
            log.warning("hq: config version %d rolled back: %s %s", doc.version, code, message)
            await self._ack(ref, "rolled_back", doc, code=code, message=message)
            return
        self.state.applied, self.state.applied_version = config, doc.version
        await self._save()
        log.info("hq: config version %d applied", doc.version)
        await self._ack(ref, "applied", doc)

    def _validate(self, doc: Document) -> HqConfig:
        config = parse_config(doc)
        problems = [
            (key, "not live-changeable on this hub")
            for key in config_keys(config)
            if key not in self._owned
        ]
        for applier in self.appliers:
            problems.extend(applier.validate(config))
        if problems:
            problems.sort()
            key, reason = problems[0]
            raise Refused(
                "INVALID_CONFIG",
                reason,
                key=key,
                kind=doc.kind,
                version=doc.version,
                problems=problems,
            )
        return config

    async def _transaction(self, config: HqConfig, version: int) -> tuple[str, str] | None:
        """Apply, health-check, or roll back. None when applied, else (code, message)."""
        undos: list[Undo] = []
        failure: tuple[str, str] | None = None
        try:
            for applier in self.appliers:
                undos.append(await applier.apply(config, version))
        except Exception as exc:
            failure = ("APPLY_FAILED", f"{type(applier).__name__}: {_short(exc)}")
        if failure is None and not await self._wait_ready():
            failure = (
                "NOT_READY",
                f"the hub was not ready {self._settings.apply_ready_timeout_s:g}s after applying",
            )
        if failure is not None:
            for undo in reversed(undos):
                try:
                    await undo()
                except Exception:
                    log.exception("hq: undo of config version %d failed", version)
        return failure

    async def _wait_ready(self) -> bool:
        try:
            async with asyncio.timeout(self._settings.apply_ready_timeout_s):
                await self._until_ready()
        except TimeoutError:
            return False
        return True

    async def _until_ready(self) -> None:
        # Readiness is a probe the composition root supplies (a function of several
        # components), not an event: it is polled.
        while True:
            if self._is_ready():
                return
            await asyncio.sleep(self._settings.ready_poll_s)

    def _is_ready(self) -> bool:
        try:
            return self._ready() and all(applier.is_ready() for applier in self.appliers)
        except Exception:
            log.exception("hq: readiness probe failed")
            return False

    async def _command(self, ref: str, doc: Document) -> None:
        try:
            command = parse_command(doc)
            handler = self.commands.get(command.name)
            if handler is None:
                raise Refused(
                    "UNKNOWN_COMMAND",
                    f"no command {command.name!r} (known: {', '.join(sorted(self.commands))})",
                    kind=doc.kind,
                    version=doc.version,
                )
        except Refused as refused:
            await self._refused(ref, refused)
            return
        await self._ack(ref, "validated", doc)
        try:
            result = await handler(command.args)
        except Refused as refused:
            refused.kind, refused.version = doc.kind, doc.version
            await self._refused(ref, refused)
            return
        except Exception as exc:
            log.warning("hq: command %s (version %d) failed: %s", command.name, doc.version, exc)
            await self._ack(
                ref,
                "rejected",
                doc,
                code="COMMAND_FAILED",
                message=f"{type(exc).__name__}: {_short(exc)}",
            )
            return
        log.info("hq: command %s (version %d) done", command.name, doc.version)
        await self._ack(ref, "applied", doc, result=result)

    # -- acknowledgements and state ------------------------------------------------------------

    async def _refused(self, ref: str, refused: Refused) -> None:
        await self._send(
            Ack(
                store_id=self._store_id,
                hub_id=self._hub_id,
                stage="rejected",
                ref=ref,
                at=self._now(),
                kind=refused.kind,
                version=refused.version,
                code=refused.code,
                message=refused.message,
                key=refused.key,
                problems=[Problem(key=k, reason=r) for k, r in refused.problems]
                if refused.problems
                else None,
            )
        )

    async def _ack(
        self,
        ref: str,
        stage: Stage,
        doc: Document | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        await self._send(
            Ack(
                store_id=self._store_id,
                hub_id=self._hub_id,
                stage=stage,
                ref=ref,
                at=self._now(),
                kind=doc.kind if doc else None,
                version=doc.version if doc else None,
                code=code,
                message=message,
                result=result,
            )
        )

    async def _save(self) -> None:
        await asyncio.to_thread(self._state_file.save, self.state)

    def _now(self) -> str:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC).isoformat(timespec="milliseconds")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
