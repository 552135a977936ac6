"""The relay's decision core: exactly-once answers, de-duplication, priorities, deadlines,
debounced status and scale claims, all driven by passing ``now``."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from edge.relay import (
    PRIORITY_DISPLAY,
    PRIORITY_DRAWER,
    PRIORITY_RECEIPT,
    PRIORITY_REPORT,
    Command,
    Conflict,
    DeviceError,
    DeviceFlags,
    Done,
    Duplicate,
    Enqueued,
    Outcome,
    Refused,
    Relay,
    RelayUsageError,
    ScaleClaim,
    StatusDebouncer,
    device_error,
)

T0 = 1_000.0
DAY = 86_400.0


def cmd(
    command_id: str = "S1-R1-0001:receipt",
    *,
    lane: str = "lane-1",
    device: str = "front",
    kind: str = "print",
    priority: int = PRIORITY_RECEIPT,
    digest: str = "d1",
    deadline: float = T0 + 30,
) -> Command:
    return Command(command_id, lane, device, kind, priority, digest, deadline)  # type: ignore[arg-type]


def relay(**kwargs: float) -> Relay:
    r = Relay(**kwargs)  # type: ignore[arg-type]
    r.add_device("front", "printer")
    r.add_device("deli", "scale")
    r.add_device("pole", "display")
    return r


def run_once(r: Relay, device: str, now: float, outcome: Outcome | None = None) -> Command:
    started = r.next_for(device, now)
    assert started is not None
    assert r.finish(started.command_id, outcome or Done({"ok": True}), now) == "recorded"
    return started


# -- exactly once and de-duplication ---------------------------------------------------------


def test_resend_while_queued_is_not_queued_twice() -> None:
    """A lane that re-sends a print while it waits must not get two receipts."""
    r = relay()
    assert r.submit(cmd(), T0) == Enqueued("S1-R1-0001:receipt", 1)
    assert r.submit(cmd(deadline=T0 + 60), T0 + 1) == Duplicate(
        "S1-R1-0001:receipt", in_progress=True, outcome=None
    )
    assert r.depth("front") == 1


def test_resend_while_running_is_not_run_again() -> None:
    """A re-send that arrives while the printer is printing must wait, not print again."""
    r = relay()
    r.submit(cmd(), T0)
    assert r.next_for("front", T0) == cmd()
    assert r.submit(cmd(), T0 + 1) == Duplicate(cmd().command_id, in_progress=True, outcome=None)
    assert r.depth("front") == 0
    assert r.next_for("front", T0 + 1) is None  # one at a time, and nothing else queued


def test_resend_after_done_gets_the_original_answer() -> None:
    """A retried print after a lost reply gets the first answer and never prints twice."""
    r = relay()
    r.submit(cmd(), T0)
    run_once(r, "front", T0 + 1, Done({"state": "ready"}))
    decision = r.submit(cmd(), T0 + 3600)
    assert decision == Duplicate(
        cmd().command_id, in_progress=False, outcome=Done({"state": "ready"})
    )
    assert r.next_for("front", T0 + 3600) is None


def test_resend_after_dedupe_ttl_runs_again() -> None:
    """The de-duplication memory is bounded in time: after dedupe_ttl the id is forgotten."""
    r = relay(dedupe_ttl=DAY)
    r.submit(cmd(), T0)
    run_once(r, "front", T0 + 1)
    late = T0 + 1 + DAY
    assert r.submit(cmd(deadline=late + 30), late) == Enqueued(cmd().command_id, 1)
    assert r.remembered == 0


def test_dedupe_memory_is_bounded_in_size_oldest_forgotten_first() -> None:
    """A busy store must not grow the memory without end; the oldest answer goes first."""
    r = relay(dedupe_limit=2)
    for n in range(3):
        r.submit(cmd(f"c{n}"), T0 + n)
        run_once(r, "front", T0 + n)
    assert r.remembered == 2
    assert r.outcome_of("c0") is None
    assert r.outcome_of("c1") == Done({"ok": True})
    assert isinstance(r.submit(cmd("c2"), T0 + 5), Duplicate)


def test_same_id_other_content_is_a_conflict_in_every_state() -> None:
    """A lane bug reusing an id for another receipt must be refused, not answered as done."""
    r = relay()
    other = cmd(digest="d2")
    r.submit(cmd(), T0)
    queued = r.submit(other, T0)
    assert isinstance(queued, Conflict)
    assert queued.error.code == "COMMAND_ID_CONFLICT"
    assert not queued.error.retryable
    r.next_for("front", T0)
    assert isinstance(r.submit(other, T0), Conflict)
    r.finish(cmd().command_id, Done(), T0)
    assert isinstance(r.submit(other, T0), Conflict)
    assert isinstance(r.submit(cmd(lane="lane-2"), T0), Conflict)
    assert r.depth("front") == 0


def test_second_finish_is_ignored_and_reported() -> None:
    """A driver that reports twice must not change the lane's answer."""
    r = relay()
    r.submit(cmd(), T0)
    run_once(r, "front", T0, Done({"n": 1}))
    assert r.finish(cmd().command_id, device_error("PAPER_OUT"), T0 + 1) == "already_finished"
    assert r.outcome_of(cmd().command_id) == Done({"n": 1})
    assert r.finish("never-sent", Done(), T0) == "unknown"


def test_resend_after_a_retryable_error_runs_again() -> None:
    """docs/protocol.md §10: after PAPER_OUT (nothing printed) the lane re-sends once the
    paper is changed, and the receipt must print then, not repeat PAPER_OUT forever."""
    r = relay()
    r.submit(cmd(), T0)
    run_once(r, "front", T0, device_error("PAPER_OUT", device="front"))
    assert r.submit(cmd(deadline=T0 + 90), T0 + 60) == Enqueued(cmd().command_id, 2)
    run_once(r, "front", T0 + 61, Done())
    assert r.submit(cmd(deadline=T0 + 200), T0 + 62) == Duplicate(
        cmd().command_id, in_progress=False, outcome=Done()
    )


def test_resend_after_a_final_error_gets_that_error() -> None:
    """Over capacity will not change by re-sending: the same answer, no second weighing."""
    r = relay()
    weigh = cmd("w1", device="deli", kind="weigh")
    r.submit(weigh, T0)
    over = device_error("OVER_CAPACITY", device="deli")
    run_once(r, "deli", T0, over)
    assert r.submit(weigh, T0 + 1) == Duplicate("w1", in_progress=False, outcome=over)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (cmd(device="back-office"), "DEVICE_UNKNOWN"),
        (cmd(device="pole"), "NOT_SUPPORTED"),
        (cmd(device="deli", kind="print"), "NOT_SUPPORTED"),
        (cmd(deadline=T0), "TIMEOUT"),
    ],
)
def test_refusals_are_answered_at_once_and_not_remembered(command: Command, code: str) -> None:
    """A refused command did nothing, so a corrected re-send must not be a conflict."""
    r = relay()
    decision = r.submit(command, T0)
    assert isinstance(decision, Refused)
    assert decision.error.code == code
    assert r.state_of(command.command_id) is None
    assert r.submit(cmd(), T0) == Enqueued(cmd().command_id, 1)


def test_queue_is_bounded_per_device() -> None:
    """A stuck printer must not let the hub hold an unbounded backlog."""
    r = relay(queue_limit=2)
    r.submit(cmd("a"), T0)
    r.submit(cmd("b"), T0)
    refused = r.submit(cmd("c"), T0)
    assert isinstance(refused, Refused)
    assert refused.error.code == "QUEUE_FULL"
    assert refused.error.retryable
    assert r.submit(cmd("c", device="pole", kind="display"), T0) == Enqueued("c", 1)


def test_offline_device_refuses_and_fails_its_queue_once() -> None:
    """A printer declared gone answers its waiting lanes OFFLINE once, and refuses new work."""
    r = relay()
    r.submit(cmd("a"), T0)
    r.submit(cmd("b"), T0)
    r.next_for("front", T0)
    failed = r.set_online("front", False, T0 + 1)
    assert [(c.command_id, o.code) for c, o in failed] == [("b", "OFFLINE")]  # type: ignore[union-attr]
    assert r.set_online("front", False, T0 + 2) == []
    assert r.expired(T0 + 100) == []
    refused = r.submit(cmd("c"), T0 + 2)
    assert isinstance(refused, Refused)
    assert refused.error.code == "OFFLINE"
    assert r.finish("a", device_error("OFFLINE"), T0 + 3) == "recorded"  # the running one
    r.set_online("front", True, T0 + 4)
    assert isinstance(r.submit(cmd("c", deadline=T0 + 60), T0 + 4), Enqueued)


# -- priorities and deadlines -----------------------------------------------------------------


def test_priority_first_then_arrival_order() -> None:
    """A customer's receipt must not wait behind an end-of-day report; equals stay FIFO."""
    r = relay()
    order = [
        ("report", PRIORITY_REPORT),
        ("display", PRIORITY_DISPLAY),
        ("receipt-1", PRIORITY_RECEIPT),
        ("drawer", PRIORITY_DRAWER),
        ("receipt-2", PRIORITY_RECEIPT),
    ]
    for command_id, priority in order:
        assert isinstance(r.submit(cmd(command_id, priority=priority), T0), Enqueued)
    ran = [run_once(r, "front", T0).command_id for _ in order]
    assert ran == ["receipt-1", "receipt-2", "drawer", "display", "report"]


@given(st.lists(st.integers(min_value=0, max_value=3), max_size=30))
def test_drain_order_is_stable_sort_by_priority(priorities: list[int]) -> None:
    r = relay()
    for n, priority in enumerate(priorities):
        r.submit(cmd(f"c{n}", priority=priority), T0)
    ran = []
    while (started := r.next_for("front", T0)) is not None:
        ran.append(started.command_id)
        r.finish(started.command_id, Done(), T0)
    expected = sorted(range(len(priorities)), key=lambda n: priorities[n])
    assert ran == [f"c{n}" for n in expected]


def test_deadline_expiry_gives_exactly_one_timeout() -> None:
    """A command that waited too long is answered TIMEOUT once, and never runs late."""
    r = relay()
    r.submit(cmd("slow", deadline=T0 + 5), T0)
    r.submit(cmd("fine", deadline=T0 + 60), T0)
    assert r.next_for("front", T0 + 5) == cmd("fine", deadline=T0 + 60)
    expired = r.expired(T0 + 5)
    assert len(expired) == 1
    command, outcome = expired[0]
    assert command.command_id == "slow"
    assert isinstance(outcome, DeviceError)
    assert (outcome.code, outcome.retryable) == ("TIMEOUT", True)
    assert r.expired(T0 + 100) == []
    assert r.finish("slow", Done(), T0 + 6) == "already_finished"
    # Not started, so a re-send with a fresh deadline may run.
    assert r.submit(cmd("slow", deadline=T0 + 90), T0 + 7) == Enqueued("slow", 2)


def test_expired_sweeps_queues_nobody_asked_for() -> None:
    """A device whose worker is stuck still answers its waiting lanes when their time is up."""
    r = relay()
    r.submit(cmd("a", deadline=T0 + 5), T0)
    r.submit(cmd("b", device="pole", kind="display", deadline=T0 + 50), T0)
    assert r.expired(T0 + 4.9) == []
    assert [c.command_id for c, _ in r.expired(T0 + 5)] == ["a"]
    assert r.state_of("b") == "queued"


def test_running_command_is_not_timed_out_by_the_core() -> None:
    """A print in progress may still come out: answering TIMEOUT (retryable) would invite a
    second print, so only the shell's finish answers a started command."""
    r = relay()
    r.submit(cmd(deadline=T0 + 5), T0)
    r.next_for("front", T0 + 1)
    assert r.expired(T0 + 100) == []
    assert r.state_of(cmd().command_id) == "running"


def test_finish_of_a_queued_command_cancels_it() -> None:
    r = relay()
    r.submit(cmd("a"), T0)
    assert r.finish("a", device_error("OFFLINE", "hub shutting down"), T0) == "recorded"
    assert r.next_for("front", T0) is None


def test_usage_errors_are_raised() -> None:
    r = relay()
    with pytest.raises(RelayUsageError):
        r.add_device("front", "printer")
    with pytest.raises(RelayUsageError):
        r.next_for("nowhere", T0)
    with pytest.raises(RelayUsageError):
        device_error("NO_SUCH_CODE")
    with pytest.raises(RelayUsageError):
        Relay(queue_limit=0)


# -- status debouncing ------------------------------------------------------------------------


def test_single_miss_does_not_flap_the_status() -> None:
    """A printer busy cutting misses one check; the lanes must not see it go offline."""
    d = StatusDebouncer("front", misses_to_offline=3)
    first = d.observe(True, T0)
    assert first is not None
    assert (first.online, first.since) == (True, T0)
    assert d.missed(T0 + 5) is None
    assert d.observe(True, T0 + 10) is None  # same status: nothing to publish
    assert d.missed(T0 + 15) is None
    assert d.missed(T0 + 20) is None
    gone = d.missed(T0 + 25)
    assert gone is not None
    assert (gone.online, gone.since) == (False, T0 + 25)
    assert d.missed(T0 + 30) is None  # already published
    back = d.observe(True, T0 + 35)
    assert back is not None
    assert (back.online, back.since) == (True, T0 + 35)


def test_nothing_is_published_before_the_first_check_settles() -> None:
    d = StatusDebouncer("front", misses_to_offline=2)
    assert d.status is None
    assert d.observe(False, T0) is None
    offline = d.observe(False, T0 + 1)
    assert offline is not None
    assert not offline.online
    assert d.status == offline


def test_flag_changes_are_published_without_changing_since() -> None:
    """Paper out while online is news for the lanes; ``since`` stays the online time."""
    d = StatusDebouncer("front")
    d.observe(True, T0)
    out = d.observe(True, T0 + 5, DeviceFlags(paper_out=True, cover_open=True))
    assert out is not None
    assert out.flags == DeviceFlags(paper_out=True, cover_open=True)
    assert out.since == T0
    assert d.observe(True, T0 + 10, DeviceFlags(paper_out=True, cover_open=True)) is None
    fixed = d.observe(True, T0 + 15, DeviceFlags(drawer_open=True))
    assert fixed is not None
    assert fixed.flags == DeviceFlags(drawer_open=True)


def test_an_answer_resets_the_miss_count() -> None:
    d = StatusDebouncer("front", misses_to_offline=2)
    d.observe(True, T0)
    for n in range(10):  # miss, answer, miss, answer...: never two in a row
        assert d.missed(T0 + 2 * n) is None
        assert d.observe(True, T0 + 2 * n + 1) is None
    assert d.status is not None
    assert d.status.online


# -- scale claims -----------------------------------------------------------------------------


def test_claim_release_and_other_lane() -> None:
    c = ScaleClaim("deli", claim_ttl=30)
    assert c.claim("lane-1", T0) is True
    assert c.claim("lane-1", T0 + 1) is False
    refused = c.claim("lane-2", T0 + 2)
    assert isinstance(refused, DeviceError)
    assert refused.code == "CLAIMED_BY_OTHER_LANE"
    assert refused.retryable
    assert refused.details["holder"] == "lane-1"
    assert c.release("lane-2") is False
    assert c.holder(T0 + 2) == "lane-1"
    assert c.release("lane-1") is True
    assert c.claim("lane-2", T0 + 3) is True


def test_claim_ends_when_the_lane_disconnects() -> None:
    """A register switched off mid-weighing must not lock the scale for the others."""
    c = ScaleClaim("deli")
    c.claim("lane-1", T0)
    assert c.lane_disconnected("lane-1") is True
    assert c.holder(T0) is None
    assert c.claim("lane-2", T0) is True


def test_claim_expires_when_idle_and_use_refreshes_it() -> None:
    c = ScaleClaim("deli", claim_ttl=30)
    c.claim("lane-1", T0)
    c.touch("lane-1", T0 + 20)
    assert c.holder(T0 + 49) == "lane-1"
    assert c.holder(T0 + 50) is None
    assert c.claim("lane-2", T0 + 50) is True


def test_relay_refuses_weighing_for_another_lane() -> None:
    r = relay(claim_ttl=30)
    assert isinstance(r.submit(cmd("w1", device="deli", kind="weigh"), T0), Enqueued)
    run_once(r, "deli", T0 + 1, Done({"weight": "0.455"}))
    refused = r.submit(cmd("w2", lane="lane-2", device="deli", kind="weigh"), T0 + 2)
    assert isinstance(refused, Refused)
    assert refused.error.code == "CLAIMED_BY_OTHER_LANE"
    # A status read does not need the claim.
    status = cmd("s1", lane="lane-2", device="deli", kind="status")
    assert isinstance(r.submit(status, T0 + 2), Enqueued)
    # Idle since the end of the weighing (T0 + 1): free at T0 + 31.
    assert r.scale_holder("deli", T0 + 30.9) == "lane-1"
    w2 = cmd("w2", lane="lane-2", device="deli", kind="weigh", deadline=T0 + 60)
    assert isinstance(r.submit(w2, T0 + 31), Enqueued)
    assert r.scale_holder("deli", T0 + 31) == "lane-2"


def test_relay_claim_release_and_disconnect() -> None:
    r = relay()
    r.submit(cmd("w1", device="deli", kind="tare"), T0)
    assert r.release_scale("deli", "lane-2") is False
    assert r.release_scale("deli", "lane-1") is True
    r.submit(cmd("w2", lane="lane-2", device="deli", kind="zero"), T0)
    assert r.lane_disconnected("lane-2") == ["deli"]
    assert r.scale_holder("deli", T0) is None


def test_claim_is_not_idle_while_the_holders_work_waits() -> None:
    """A weighing queued behind a slow one must not lose the claim to another lane."""
    r = relay(claim_ttl=30)
    r.submit(cmd("w1", device="deli", kind="weigh", deadline=T0 + 100), T0)
    r.submit(cmd("w3", device="deli", kind="weigh", deadline=T0 + 100), T0)
    r.next_for("deli", T0)
    r.finish("w1", Done(), T0 + 1)
    w2 = cmd("w2", lane="lane-2", device="deli", kind="weigh", deadline=T0 + 100)
    refused = r.submit(w2, T0 + 40)
    assert isinstance(refused, Refused)
    assert refused.error.code == "CLAIMED_BY_OTHER_LANE"
    assert r.next_for("deli", T0 + 41) == cmd("w3", device="deli", kind="weigh", deadline=T0 + 100)
    r.finish("w3", Done(), T0 + 42)
    assert isinstance(r.submit(w2, T0 + 72), Enqueued)


# -- any interleaving: exactly one outcome per accepted attempt --------------------------------

DEVICE_NAMES = ("front", "pole", "deli")
KIND_FOR = {"front": "print", "pole": "display", "deli": "weigh"}
IDS = st.sampled_from([f"c{n}" for n in range(6)])
#: Mostly the same content again (a re-send); sometimes other content under the same id.
CONTENT = st.sampled_from(["same"] * 4 + ["other-digest", "other-lane", "other-device"])
OUTCOMES = st.sampled_from(
    [
        Done({"ok": True}),
        device_error("PAPER_OUT"),  # retryable: a re-send runs again
        device_error("OVER_CAPACITY"),  # final: a re-send gets it again
    ]
)


def machine_command(cid: str, content: str, priority: int, deadline: float) -> Command:
    n = int(cid[1:])
    device = DEVICE_NAMES[n % 3]
    lane = f"lane-{n % 2}"
    digest = "d1"
    if content == "other-digest":
        digest = "d2"
    elif content == "other-lane":
        lane = f"lane-{(n + 1) % 2}"
    elif content == "other-device":
        device = DEVICE_NAMES[(n + 1) % 3]
    return Command(cid, lane, device, KIND_FOR[device], priority, digest, deadline)  # type: ignore[arg-type]


class RelayMachine(RuleBasedStateMachine):
    """Drives a Relay with random submits (repeated ids, sometimes with other content),
    next_for, finish (sometimes twice), status changes, lane disconnects and time passing;
    checks that each accepted attempt is answered exactly once, by exactly one of finish,
    expired and set_online, and that a final answer is never followed by another run while it
    is remembered."""

    @initialize(ttl=st.sampled_from([50.0, DAY]))
    def start(self, ttl: float) -> None:
        self.relay = Relay(queue_limit=4, dedupe_ttl=ttl, dedupe_limit=1_000, claim_ttl=10)
        for name, kind in [("front", "printer"), ("pole", "display"), ("deli", "scale")]:
            self.relay.add_device(name, kind)  # type: ignore[arg-type]
        self.ttl = ttl
        self.now = T0
        self.serial = 0
        self.open: dict[str, int] = {}
        """Accepted attempts not answered yet: id -> the attempt's serial number."""
        self.answers: dict[int, int] = {}
        """serial -> how many outcomes that attempt got."""
        self.final_at: dict[str, float] = {}
        """When each id last got a final outcome (Done, or a non-retryable error)."""
        self.content: dict[str, tuple[tuple[str, ...], float]] = {}
        """id -> (what its accepted attempt was, remembered until)."""

    def answered(self, command: Command, outcome: Outcome) -> None:
        cid = command.command_id
        assert cid in self.open, f"{cid} answered but no attempt was open"
        event(f"answered: {outcome.code if isinstance(outcome, DeviceError) else 'done'}")
        serial = self.open.pop(cid)
        self.answers[serial] = self.answers.get(serial, 0) + 1
        if isinstance(outcome, Done) or not outcome.retryable:
            self.final_at[cid] = self.now
        self.content[cid] = (self.content[cid][0], self.now + self.ttl)

    @rule(
        cid=IDS,
        content=CONTENT,
        priority=st.integers(0, 3),
        wait=st.sampled_from([1.0, 5.0, 30.0]),
    )
    def submit(self, cid: str, content: str, priority: int, wait: float) -> None:
        command = machine_command(cid, content, priority, self.now + wait)
        decision = self.relay.submit(command, self.now)
        event(f"submit: {type(decision).__name__}")
        what = (command.lane, command.device, command.kind, command.payload_digest)
        known, until = self.content.get(cid, (what, 0.0))
        assert isinstance(decision, Conflict) == (known != what and self.now < until)
        if isinstance(decision, Enqueued):
            assert cid not in self.open, "queued twice"
            final = self.final_at.get(cid)
            assert final is None or self.now >= final + self.ttl, "ran again while remembered"
            assert decision.attempt >= 1
            self.serial += 1
            self.open[cid] = self.serial
            self.content[cid] = (what, math.inf)
        elif isinstance(decision, Duplicate):
            assert decision.in_progress == (cid in self.open)
            assert (decision.outcome is None) == decision.in_progress

    @rule(device=st.sampled_from(DEVICE_NAMES))
    def start_next(self, device: str) -> None:
        started = self.relay.next_for(device, self.now)
        if started is not None:
            assert started.deadline > self.now, "started after its deadline"
            assert started.command_id in self.open
            assert self.relay.state_of(started.command_id) == "running"

    @rule(device=st.sampled_from(DEVICE_NAMES), outcome=OUTCOMES, twice=st.booleans())
    def finish(self, device: str, outcome: Outcome, twice: bool) -> None:
        command = self.relay.running(device)
        if command is None:
            return
        assert self.relay.finish(command.command_id, outcome, self.now) == "recorded"
        self.answered(command, outcome)
        if twice:
            again = self.relay.finish(command.command_id, Done(), self.now)
            assert again in {"already_finished", "unknown"}

    @rule(seconds=st.sampled_from([0.5, 3.0, 20.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        for command, outcome in self.relay.expired(self.now):
            assert isinstance(outcome, DeviceError)
            assert outcome.code == "TIMEOUT"
            self.answered(command, outcome)

    @rule(device=st.sampled_from(DEVICE_NAMES), online=st.booleans())
    def set_online(self, device: str, online: bool) -> None:
        for command, outcome in self.relay.set_online(device, online, self.now):
            self.answered(command, outcome)

    @rule(lane=st.sampled_from(["lane-0", "lane-1"]))
    def disconnect(self, lane: str) -> None:
        self.relay.lane_disconnected(lane)

    @invariant()
    def each_attempt_answered_at_most_once(self) -> None:
        assert all(count == 1 for count in self.answers.values())

    def teardown(self) -> None:
        # Finish whatever runs, then let every deadline pass: nothing may stay unanswered.
        for device in DEVICE_NAMES:
            started = self.relay.running(device)
            if started is not None:
                self.relay.finish(started.command_id, Done(), self.now)
                self.answered(started, Done())
        self.now += 1_000
        for command, outcome in self.relay.expired(self.now):
            self.answered(command, outcome)
        assert self.open == {}, f"never answered: {self.open}"
        assert all(count == 1 for count in self.answers.values())


TestRelayMachine = RelayMachine.TestCase
TestRelayMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_replace_keeps_commands_comparable() -> None:
    """A re-send differs only in its deadline; it must still be recognised as the same."""
    r = relay()
    r.submit(cmd(), T0)
    assert isinstance(r.submit(replace(cmd(), deadline=T0 + 99, priority=3), T0), Duplicate)
