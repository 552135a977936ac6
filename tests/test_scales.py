"""Serial scales through the hub: every protocol the relay speaks (Mettler-Toledo 8217,
Datalogic Magellan, CAS ECR, NCI / Weigh-Tronix SCP-01), each emulated on a pseudo-terminal
(edge/sim/scale.py, 8N1: this kernel's ptys refuse 7E1), a real hub and broker, lanes asking
over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args, get_type_hints

import msgspec
import pytest

from edge.app import Hub
from edge.bus import Topics
from edge.relay.profiles import PROTOCOLS_OF_KIND, load_profiles
from edge.relay.scales import PROTOCOLS
from edge.relay.status import status_topic
from edge.settings import ScaleSettings, settings_from_dict
from edge.sim.scale import PROTOCOLS as EMULATED
from edge.sim.scale import Line, Platter, ScaleEmulator, ScaleProtocol
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")


def still(weight: str) -> Platter:
    return Platter(Decimal(weight))


def moving(weight: str) -> Platter:
    return Platter(Decimal(weight), motion=True)


class ToledoOnPty(ScaleEmulator):
    """A Mettler-Toledo 8217 on a pty, weighing 1.234 kg (the name other tests import)."""

    def __init__(self) -> None:
        super().__init__("toledo")


@pytest.fixture
async def scale() -> AsyncIterator[ScaleEmulator]:
    with ToledoOnPty() as emulated:
        yield emulated


@pytest.fixture(params=EMULATED)
async def any_scale(request: pytest.FixtureRequest) -> AsyncIterator[ScaleEmulator]:
    """One scale per protocol the hub speaks."""
    with ScaleEmulator(request.param) as emulated:
        yield emulated


@contextlib.asynccontextmanager
async def hub_with_scale(
    tmp_path: Path,
    broker: MosquittoProcess,
    scale: ScaleEmulator,
    *,
    answers: bool = True,
    devices: dict[str, Any] | None = None,
    **extra: Any,
) -> AsyncIterator[Hub]:
    """A hub weighing on ``scale`` as "deli" (``extra``: its entry; ``devices``: the
    ``[devices]`` settings, status checks an hour apart unless given).

    The hub checks the scale as it starts, with a weight request that takes a platter from
    the script. When the scale ``answers``, this waits for that check's retained status and
    then gives the test back its whole script and a scale asked nothing yet, so what a test
    counts is the lanes' requests."""
    scales = [{"name": "deli", **scale.device_settings(), "poll_s": 0.01, "settle_s": 0.5, **extra}]
    options = {"timeout_s": 0.5, "status_every_s": 3600.0, **(devices or {})}
    settings = hub_settings(
        tmp_path, broker_port=broker.port, devices__scales=scales,
        **{f"devices__{key}": value for key, value in options.items()},
    )  # fmt: skip
    script = list(scale.script)
    async with run_hub(settings) as hub:
        if answers:
            async with lane_client(hub, "probe") as probe:
                await next_status(probe, hub, lambda status: True)
            scale.script = script
            scale.weighs = 0
            scale.requests.clear()
        yield hub


async def next_status(
    lane: Any, hub: Hub, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first status of "deli", retained or published from now on, that ``predicate``
    accepts."""
    async with lane.subscription(status_topic(hub.topics, "deli")) as statuses:
        return await _next(statuses, predicate)


async def _next(
    statuses: asyncio.Queue[Any], predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            status: dict[str, Any] = msgspec.json.decode((await statuses.get()).payload)
            if predicate(status):
                return status


async def ask(lane: Any, method: str, lane_id: str = "lane-1") -> dict[str, Any]:
    reply = await lane.request(TOPICS.lane_rpc(lane_id, method), {"device": "deli"})
    answer: dict[str, Any] = msgspec.to_builtins(reply)
    return answer


async def weigh(lane: Any, lane_id: str = "lane-1") -> dict[str, Any]:
    return await ask(lane, "scale.weigh", lane_id)


# -- every protocol --------------------------------------------------------------------------


def test_every_protocol_is_configurable_emulated_and_allowed_in_profiles() -> None:
    """A protocol the relay speaks but settings refuse (or a profile may not name) is a scale
    nobody can configure; one the emulator lacks is a protocol no test drives."""
    configurable = set(get_args(get_type_hints(ScaleSettings)["protocol"]))
    assert set(PROTOCOLS) == set(EMULATED) == set(PROTOCOLS_OF_KIND["scale"]) == configurable


async def test_a_stable_weight_after_motion_settles(
    tmp_path: Path, broker: MosquittoProcess, any_scale: ScaleEmulator
) -> None:
    """The weight is polled until the scale calls it stable, never taken while moving."""
    any_scale.script = [moving("0.300"), moving("0.512"), still("0.455")]
    async with hub_with_scale(tmp_path, broker, any_scale) as hub, lane_client(hub) as lane:
        answer = await weigh(lane)
    assert answer["data"] == {
        "device": "deli",
        "weight": "0.455",
        "unit": "kg",
        "net": False,
        "duplicate": False,
    }
    assert any_scale.weighs == 3, "polled until stable, not guessed"


@pytest.mark.parametrize("protocol", ["toledo", "magellan", "scp01"])
async def test_a_seven_bit_scale_read_at_8n1_keeps_its_parity_bit_out_of_the_weight(
    tmp_path: Path, broker: MosquittoProcess, protocol: ScaleProtocol
) -> None:
    """A 7E1 scale on a port set to 8N1 (a pty, a USB adapter refusing 7E1) delivers its
    parity in bit 7 of each byte: the weight must still decode, not time out as garbage.
    At 4800 baud, 2 stop bits: the emulator's line is the hub entry's, whatever it is."""
    line = Line(baudrate=4800, stopbits=2)
    with ScaleEmulator(protocol, line=line, parity_bit="E") as scale:
        assert scale.device_settings()["baudrate"] == 4800
        scale.script = [still("2.046")]
        async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
            assert (await weigh(lane))["data"]["weight"] == "2.046"


#: What a weighing answers per condition on the platter: (code, retryable).
CONDITIONS = {
    "motion": ([moving("0.400")], "WEIGHT_UNSTABLE", True),
    "over capacity": ([still("15.500")], "OVER_CAPACITY", False),
    "under zero": ([still("-0.020")], "UNDER_ZERO", True),
}


@pytest.mark.parametrize("condition", list(CONDITIONS))
async def test_no_weight_is_ever_guessed(
    tmp_path: Path, broker: MosquittoProcess, any_scale: ScaleEmulator, condition: str
) -> None:
    script, code, retryable = CONDITIONS[condition]
    if any_scale.protocol == "cas" and condition == "over capacity":
        with pytest.raises(ValueError, match="cannot say over capacity"):
            any_scale.script = script
        pytest.skip("a CAS ECR frame has no over-capacity flag (peripherals.md §2.5)")
    any_scale.script = script
    async with hub_with_scale(tmp_path, broker, any_scale) as hub, lane_client(hub) as lane:
        error = (await weigh(lane))["error"]
    assert (error["code"], error["retryable"]) == (code, retryable)
    if condition == "motion":
        assert any_scale.weighs > 1, "polled for the settle time before giving up"


async def test_a_scale_reporting_an_internal_fault_is_a_scale_fault_at_once(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """An SCP-01 scale with a failed calibration (or memory) answers a steady weight with its
    fault bits set: the lane gets SCALE_FAULT naming them, not a weight, and not
    WEIGHT_UNSTABLE after the settle time (the clerk would retry a scale that needs a
    technician)."""
    with ScaleEmulator("scp01") as scale:
        scale.script = [Platter(Decimal("0.455"), faults=frozenset({"calibration", "ram"}))]
        async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
            error = (await weigh(lane))["error"]
    assert (error["code"], error["retryable"]) == ("SCALE_FAULT", False)
    assert error["details"] == {"device": "deli", "faults": ["calibration", "ram"]}
    assert scale.weighs == 1, "a fault is not waited out"


async def test_a_toledo_zero_refused_for_motion_is_not_reported_done(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """A Toledo answers Z with its status and does not zero a moving load: the lane must
    hear WEIGHT_UNSTABLE (retry with the platter still), not "done" with the old zero kept."""
    with ScaleEmulator("toledo") as scale:
        async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
            scale.script = [moving("0.300")]  # on the platter now
            error = (await ask(lane, "scale.zero"))["error"]
            assert (error["code"], error["retryable"]) == ("WEIGHT_UNSTABLE", True)
            assert scale.zero_point == Decimal(0)
            scale.script = [still("0.300")]
            assert (await ask(lane, "scale.zero"))["data"] == {
                "device": "deli",
                "done": "zero",
                "duplicate": False,
            }
            assert scale.zero_point == Decimal("0.300")


#: Which commands each protocol has (peripherals.md §2.2-2.5); the others are NOT_SUPPORTED
#: without a byte sent to the scale.
COMMANDS = {
    "toledo": {"zero", "tare"},
    "magellan": set(),
    "cas": set(),
    "scp01": {"zero"},
}


async def test_zero_and_tare_where_the_protocol_has_them(
    tmp_path: Path, broker: MosquittoProcess, any_scale: ScaleEmulator
) -> None:
    """Zero and tare reach the scale and change what it weighs; where the protocol has no
    such command the lane gets NOT_SUPPORTED (not retryable) and the scale gets nothing."""
    supported = COMMANDS[any_scale.protocol]
    any_scale.script = [still("0.455")]
    async with hub_with_scale(tmp_path, broker, any_scale) as hub, lane_client(hub) as lane:
        assert (await weigh(lane))["data"]["weight"] == "0.455"
        asked_before = len(any_scale.requests)
        answer = await ask(lane, "scale.zero")
        if "zero" in supported:
            assert answer["data"] == {"device": "deli", "done": "zero", "duplicate": False}
            assert any_scale.zero_point == Decimal("0.455")
            any_scale.script = [still("0.655")]
            assert (await weigh(lane))["data"]["weight"] == "0.200", "weighed from the new zero"
        else:
            error = answer["error"]
            assert (error["code"], error["retryable"]) == ("NOT_SUPPORTED", False)
            assert len(any_scale.requests) == asked_before, "nothing sent to the scale"
        asked_before = len(any_scale.requests)
        answer = await ask(lane, "scale.tare")
        if "tare" in supported:
            assert answer["data"] == {"device": "deli", "done": "tare", "duplicate": False}
            any_scale.script = [still("1.155")]
            reading = (await weigh(lane))["data"]
            assert (reading["weight"], reading["net"]) == ("0.500", True), "net of the tare"
        else:
            error = answer["error"]
            assert (error["code"], error["retryable"]) == ("NOT_SUPPORTED", False)
            assert len(any_scale.requests) == asked_before, "nothing sent to the scale"


async def test_an_scp01_scale_refusing_zero_is_not_supported_not_done(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """An SCP-01 scale with zero disabled answers ``LF ? CR ETX``: the lane must not be told
    the scale was zeroed."""
    with ScaleEmulator("scp01") as scale:
        scale.refuse = {b"Z\r"}
        async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
            error = (await ask(lane, "scale.zero"))["error"]
        assert (error["code"], error["retryable"]) == ("NOT_SUPPORTED", False)
        assert b"Z\r" in scale.requests
        assert scale.zero_point == 0


def test_each_scale_profile_drives_its_protocol_with_the_commands_it_claims() -> None:
    """A scale entry naming a shipped profile gets a protocol the relay speaks, and the
    profile's zero/tare capabilities are the ones the relay offers for it (a profile saying
    "tare" on a protocol without one would promise lanes a button that always fails)."""
    scales = [p for p in load_profiles() if p.kind == "scale"]
    assert {p.protocol for p in scales} == set(PROTOCOLS)
    for profile in scales:
        dialect = PROTOCOLS[profile.protocol]
        caps = profile.capabilities
        assert (dialect.zero is not None, dialect.tare is not None) == (caps.zero, caps.tare), (
            profile.model
        )
        entry = {"name": "deli", "port": "/dev/ttyS0", "profile": profile.model}
        raw = {"devices": {"scales": [entry]}}
        configured = settings_from_dict(raw, "edge.toml").devices.scales[0]
        assert configured.protocol == profile.protocol
        assert (configured.baudrate, configured.bytesize, configured.parity) == (
            profile.transport.baudrate,
            profile.transport.bytesize,
            profile.transport.parity,
        )


# -- the line and the claim (protocol-independent: Toledo) -----------------------------------


async def test_a_silent_scale_is_offline(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    scale.silent = True
    async with (
        hub_with_scale(tmp_path, broker, scale, answers=False) as hub,
        lane_client(hub) as lane,
    ):
        error = (await weigh(lane))["error"]
        assert (error["code"], error["retryable"]) == ("OFFLINE", True)
        scale.silent = False
        assert (await weigh(lane))["data"]["weight"] == "1.234", "the line is reopened"


async def test_one_lane_at_a_time_released_when_the_holder_goes_offline(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    async with (
        hub_with_scale(tmp_path, broker, scale, claim_ttl_s=600) as hub,
        lane_client(hub, "lane-1") as one,
        lane_client(hub, "lane-2") as two,
    ):
        assert (await weigh(one, "lane-1"))["data"]["weight"] == "1.234"
        refused = (await weigh(two, "lane-2"))["error"]
        assert (refused["code"], refused["details"]["holder"]) == (
            "CLAIMED_BY_OTHER_LANE",
            "lane-1",
        )
        # Lane 1 closes (its retained presence says offline): the scale is free.
        await one.publish(
            TOPICS.lane_status("lane-1"), b'{"v": 1, "state": "offline"}', retain=True
        )
        async with asyncio.timeout(10):
            while "error" in (answer := await weigh(two, "lane-2")):
                assert answer["error"]["code"] == "CLAIMED_BY_OTHER_LANE"
        assert answer["data"]["weight"] == "1.234"
        released = await one.request(TOPICS.lane_rpc("lane-2", "scale.release"), {"device": "deli"})
        assert released.ok


async def test_line_settings_the_port_refuses_are_offline_not_a_crash(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    """The 8217's own 7E1 on a port that refuses 7 data bits with parity (a pseudo-terminal
    here; some USB adapters in stores): a structured OFFLINE naming the port, the hub runs on."""
    async with (
        hub_with_scale(tmp_path, broker, scale, answers=False, bytesize=7, parity="E") as hub,
        lane_client(hub) as lane,
    ):
        answer = await weigh(lane)
        assert answer["error"]["code"] == "OFFLINE"
        assert scale.path in answer["error"]["message"]
        assert (await lane.request(TOPICS.hub_rpc("ping"), {})).ok


# -- status on MQTT (protocol-independent: Toledo) -------------------------------------------


async def test_a_scales_status_is_retained_online_with_who_holds_it(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    """A register that connects must learn the scale's state from the retained topic, as it
    does the printers' and displays'; and which lane holds it."""
    async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
        topic = status_topic(hub.topics, "deli")
        async with lane.subscription(topic) as statuses:
            retained = await _next(statuses, lambda s: True)
            assert retained["kind"] == "scale"
            assert (retained["online"], retained["summary"]) == (True, "ready")
            assert (retained["claimed_by"], retained["over_capacity"], retained["faults"]) == (
                None,
                False,
                [],
            )
            assert (await weigh(lane))["data"]["weight"] == "1.234"
            held = await _next(statuses, lambda s: s["claimed_by"] is not None)
            assert (held["claimed_by"], held["online"]) == ("lane-1", True)
            await lane.request(TOPICS.lane_rpc("lane-1", "scale.release"), {"device": "deli"})
            assert (await _next(statuses, lambda s: True))["claimed_by"] is None


async def test_a_silent_scale_goes_offline_only_after_several_missed_checks(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    """A scale that misses one check (a weighing keeping it busy, a hiccup on a serial
    server) must not flap the lanes' status: offline only after ``misses_to_offline`` checks
    in a row went unanswered, and online again at the first answer."""
    misses = 3
    devices = {"status_every_s": 0.2, "timeout_s": 0.2, "misses_to_offline": misses}
    async with (
        hub_with_scale(tmp_path, broker, scale, devices=devices) as hub,
        lane_client(hub) as lane,
        lane.subscription(status_topic(hub.topics, "deli")) as statuses,
    ):
        assert (await _next(statuses, lambda s: True))["online"]
        scale.silent = True
        unanswered_from = scale.weighs
        offline = await _next(statuses, lambda s: not s["online"])
        assert offline["summary"] == "offline"
        assert scale.weighs - unanswered_from >= misses, "not offline before the third miss"
        scale.silent = False
        answered_from = scale.weighs
        online = await _next(statuses, lambda s: s["online"])
        assert online["summary"] == "ready"
        assert scale.weighs - answered_from < misses, "online again at the first answer"
        assert (await weigh(lane))["data"]["weight"] == "1.234"


class SlowToledo(ToledoOnPty):
    """A Toledo scale answering each request 30 ms late, recording when requests and answers
    cross the line: a request sent while another awaits its answer shows as two requests in
    a row."""

    def __init__(self) -> None:
        super().__init__()
        self.line_events: list[str] = []

    def _toledo(self, command: bytes) -> bytes | None:
        answer = super()._toledo(command)
        self.line_events.append("request")
        if answer is not None:
            asyncio.get_running_loop().call_later(0.03, self._answer_late, answer)
        return None  # answered late, by _answer_late

    def _answer_late(self, answer: bytes) -> None:
        if self._master is not None:
            os.write(self._master, answer)
            self.line_events.append("answer")


async def test_a_status_check_never_comes_between_a_weighings_request_and_its_answer(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The check asks the same line the lanes weigh on: if it sent its request while a
    weighing waits for its answer, one of them would read the other's answer (or the hub's
    reader would fail). Checks due every 5 ms, answers 30 ms late: each weighing still gets
    its weight, and the scale sees every request answered before the next one."""
    with SlowToledo() as scale:
        devices = {"status_every_s": 0.005, "timeout_s": 2.0}
        async with (
            hub_with_scale(tmp_path, broker, scale, devices=devices) as hub,
            lane_client(hub) as lane,
        ):
            for _ in range(10):
                assert (await weigh(lane))["data"]["weight"] == "1.234"
        events = scale.line_events
        assert events.count("request") >= 10
        overlaps = [i for i in range(1, len(events)) if events[i - 1 : i + 1] == ["request"] * 2]
        assert not overlaps, f"a request sent before the previous answer: {events}"


# -- exactly once ------------------------------------------------------------------------------


async def command(lane: Any, method: str, command_id: str) -> dict[str, Any]:
    data = {"device": "deli", "command_id": command_id}
    answer: dict[str, Any] = msgspec.to_builtins(
        await lane.request(TOPICS.lane_rpc("lane-1", method), data)
    )
    return answer


async def test_a_resent_tare_or_weighing_is_answered_once_never_run_twice(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    """The lane's answer was lost and it sends the same command again: the tare is not applied
    a second time (the container is not subtracted twice), the weighing is not repeated (the
    sale gets the weight the scale gave the first time)."""
    scale.script = [still("0.200")]
    async with hub_with_scale(tmp_path, broker, scale) as hub, lane_client(hub) as lane:
        first = await command(lane, "scale.tare", "tare-1")
        tares = scale.requests.count(b"T")
        scale.script = [still("0.700")]  # the container filled meanwhile
        again = await command(lane, "scale.tare", "tare-1")
        assert scale.requests.count(b"T") == tares == 1
        assert scale.tare == Decimal("0.200")
        assert first["data"] == {"command_id": "tare-1", "device": "deli", "done": "tare",
                                 "duplicate": False}  # fmt: skip
        assert again["data"] == first["data"] | {"duplicate": True}

        weighed = await command(lane, "scale.weigh", "weigh-1")
        scale.script = [still("0.950")]
        reweighed = await command(lane, "scale.weigh", "weigh-1")
        fresh = await command(lane, "scale.weigh", "weigh-2")
    assert weighed["data"]["weight"] == reweighed["data"]["weight"] == "0.500"
    assert reweighed["data"]["duplicate"] is True
    assert fresh["data"]["weight"] == "0.750", "a new command id weighs again"


async def test_a_resent_command_that_failed_retryably_runs_again(
    tmp_path: Path, broker: MosquittoProcess, scale: ScaleEmulator
) -> None:
    """WEIGHT_UNSTABLE means nothing was weighed: the same command sent again weighs."""
    scale.script = [moving("0.300")]
    async with (
        hub_with_scale(tmp_path, broker, scale, settle_s=0.2) as hub,
        lane_client(hub) as lane,
    ):
        unstable = await command(lane, "scale.weigh", "weigh-1")
        scale.script = [still("0.455")]
        settled = await command(lane, "scale.weigh", "weigh-1")
        conflict = await command(lane, "scale.tare", "weigh-1")
    assert unstable["error"]["code"] == "WEIGHT_UNSTABLE"
    assert settled["data"]["weight"] == "0.455"
    assert settled["data"]["duplicate"] is False
    assert conflict["error"]["code"] == "COMMAND_ID_CONFLICT", "one id, one command"
