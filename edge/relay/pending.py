"""The asyncio side of :class:`edge.relay.core.Relay`, shared by the device shells (printers,
displays): each accepted command's job and its one answer, awaited by the lane that sent it
and by every re-send of it, settled exactly once (by the device's worker, the deadline sweep,
the device going offline, or the hub stopping)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Generic, TypeVar

from edge.bus.errors import RequestError
from edge.relay.core import (
    Command,
    Conflict,
    DeviceError,
    Duplicate,
    Enqueued,
    Outcome,
    Refused,
    Relay,
    device_error,
)
from edge.relay.status import StatusPublisher

J = TypeVar("J")
D = TypeVar("D")

EXPIRY_TICK_S = 0.5
"""How often queued commands are checked against their deadline."""


class Pending(Generic[J]):
    def __init__(self, relay: Relay, clock: Callable[[], float]) -> None:
        self.relay = relay
        self._clock = clock
        self._jobs: dict[str, J] = {}
        """Queued or running commands' work, by command id."""
        self._answers: dict[str, asyncio.Future[Outcome]] = {}
        """Queued or running commands' outcomes-to-be, shared by their re-sends."""

    async def submit(
        self, command: Command, job: J, wake: asyncio.Event | None
    ) -> tuple[Outcome, bool]:
        """Submit ``command`` and wait for its outcome; True with it when this is a re-send
        answered with the original's outcome. A refusal is its outcome (an unknown device,
        which has no worker to ``wake``, is one). Calling contract: no ``await`` before the
        submission (a lane's commands queue in their arrival order)."""
        decision = self.relay.submit(command, self._clock())
        if isinstance(decision, Conflict | Refused):
            return decision.error, False
        if isinstance(decision, Duplicate) and decision.outcome is not None:
            return decision.outcome, True
        if isinstance(decision, Enqueued):
            self._jobs[command.command_id] = job
            answer = asyncio.get_running_loop().create_future()
            self._answers[command.command_id] = answer
            assert wake is not None  # the relay accepts commands for its own devices only
            wake.set()
        else:
            answer = self._answers[command.command_id]
        # Shielded: a re-send (or the router's timeout) must not cancel the shared answer.
        outcome = await asyncio.shield(answer)
        return outcome, not isinstance(decision, Enqueued)

    async def next(self, device: str, wake: asyncio.Event) -> tuple[Command, J]:
        """For a device's worker: the next command to run on ``device``, marked running, and
        its job; waits on ``wake`` (set by :meth:`submit`) while there is none."""
        while True:
            wake.clear()
            command = self.relay.next_for(device, self._clock())
            if command is not None:
                return command, self._jobs[command.command_id]
            await wake.wait()

    def finish(self, command_id: str, outcome: Outcome) -> None:
        """The worker ran the command: record it and answer its waiters."""
        if self.relay.finish(command_id, outcome, self._clock()) == "recorded":
            self.settle(command_id, outcome)

    def resolve(self, failed: list[tuple[Command, Outcome]]) -> None:
        for command, outcome in failed:
            self.settle(command.command_id, outcome)

    def settle(self, command_id: str, outcome: Outcome) -> None:
        self._jobs.pop(command_id, None)
        answer = self._answers.pop(command_id, None)
        if answer is not None and not answer.done():
            answer.set_result(outcome)

    async def expire(self) -> None:
        """Answer TIMEOUT to queued commands past their deadline, until cancelled."""
        while True:
            await asyncio.sleep(EXPIRY_TICK_S)
            self.resolve(self.relay.expired(self._clock()))

    def stopping(self) -> None:
        """The hub stops: every waiting command is answered (nothing was done)."""
        for command_id in list(self._answers):
            self.settle(command_id, device_error("OFFLINE", "the hub is stopping"))


def request_error(error: DeviceError) -> RequestError:
    details = {"device": error.device, **error.details} if error.device else dict(error.details)
    return RequestError(error.code, error.message, retryable=error.retryable, details=details)


def answer(command_id: str, outcome: Outcome, *, duplicate: bool) -> dict[str, Any]:
    """The lane's reply data, or the device error raised as the RPC's error reply."""
    if isinstance(outcome, DeviceError):
        raise request_error(outcome)
    return {"command_id": command_id, **outcome.detail, "duplicate": duplicate}


async def run_devices(
    label: str,
    devices: Mapping[str, D],
    *,
    work: Callable[[D], Coroutine[Any, Any, None]],
    check: Callable[[D], Coroutine[Any, Any, None]],
    every_s: float,
    pending: Pending[Any],
    status: StatusPublisher,
) -> None:
    """A device shell's tasks, until cancelled: one worker per device, the queue's deadline
    sweep, a status check of every device each ``every_s``, the status publication. Every
    command still waiting is answered when it ends (the caller then closes its lines)."""

    async def watch() -> None:
        while True:
            await asyncio.gather(*(check(device) for device in devices.values()))
            await asyncio.sleep(every_s)

    try:
        async with asyncio.TaskGroup() as tg:
            for name, device in devices.items():
                tg.create_task(work(device), name=f"{label}-{name}")
            tg.create_task(pending.expire(), name=f"{label}s-expiry")
            tg.create_task(watch(), name=f"{label}s-status")
            tg.create_task(status.run(), name=f"{label}s-publish")
    finally:
        pending.stopping()
