"""The HQ link end to end: two real Mosquittos (the store's and the cloud's), a real Bus on the
store's, HQ's side as a plain MQTT client on the cloud's. Acks and retained messages are
awaited with timeouts, never slept for."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bus import Topics
from edge.hq.apply import AttributeApplier, LaneConfigApplier
from edge.hq.commands import outbox_retry_parked
from edge.hq.state import HqState
from edge.metrics import Metrics
from edge.outbox.intake import DiskGuard
from edge.outbox.service import OutboxService
from edge.outbox.store import Entry, OutboxStore
from tests.conftest import MosquittoProcess
from tests.hq.conftest import hq_side, link_settings, local_bus, running_link, snapshot
from tests.hq.keys import NOW, signed
from tests.schemas import validate

DEVICES = frozenset({"front", "back"})


class Component:
    """A live object as the hub's components are: settings read from attributes."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


async def retained_lane_configs(port: int) -> dict[str, Any]:
    """Every retained lane config on the store's broker, as a lane connecting now sees them:
    the retained messages come with the subscription, before a marker published after it."""
    marker = f"test/marker/{uuid.uuid4().hex}"
    found: dict[str, Any] = {}
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("store/s1/lane/+/config", qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"end", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                topic = str(message.topic)
                if topic == marker:
                    break
                assert message.retain
                document = json.loads(message.payload)  # type: ignore[arg-type]
                validate("lane-config.json", document)
                found[topic.split("/")[3]] = document
    return found


def read_state(tmp_path: Path) -> HqState:
    return msgspec.json.decode((tmp_path / "state" / "hq-state.json").read_bytes(), type=HqState)


async def test_a_signed_config_is_acked_stage_by_stage_and_reaches_the_lanes_retained(
    broker: MosquittoProcess,
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    catalogue = Component(interval=300.0)
    async with local_bus(broker.port) as bus, hq_side(cloud) as hq:
        appliers = [
            LaneConfigApplier(bus, Topics("s1"), known_devices=DEVICES),
            AttributeApplier(
                "catalogue.interval_s", catalogue, "interval", minimum=10, maximum=86400
            ),
        ]
        async with running_link(
            link_settings(cloud), tmp_path / "state", pinned_key_path, appliers=appliers
        ):
            lanes = {
                "lane-1": {"printer": "front", "idle_lock_s": 120},
                "lane-2": {"receipt_footer": ["Thank you"], "options": {"theme": "dark"}},
            }
            payload = {"catalogue": {"interval_s": 60}, "lanes": lanes}
            await hq.send("config", signed(hq_key, version=1, payload=payload))
            assert await hq.stages(3) == [
                ("received", 1, None),
                ("validated", 1, None),
                ("applied", 1, None),
            ]
            assert catalogue.interval == 60
            assert await retained_lane_configs(broker.port) == {
                lane: {"v": 1, "lane": lane, "version": 1, "settings": settings}
                for lane, settings in lanes.items()
            }
            assert read_state(tmp_path).applied_version == 1

            # Each config is HQ's whole overlay: what v2 leaves out goes back to the file's
            # value, and a lane left out has its retained config cleared.
            v2 = {"lanes": {"lane-1": {"printer": "back"}}}
            await hq.send("config", signed(hq_key, version=2, payload=v2))
            assert [stage for stage, *_ in await hq.stages(3)] == [
                "received",
                "validated",
                "applied",
            ]
            assert catalogue.interval == 300.0
            assert await retained_lane_configs(broker.port) == {
                "lane-1": {"v": 1, "lane": "lane-1", "version": 2, "settings": {"printer": "back"}}
            }


async def test_replayed_tampered_older_foreign_and_invalid_documents_are_refused(
    broker: MosquittoProcess,
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    catalogue = Component(interval=300.0)
    async with local_bus(broker.port) as bus, hq_side(cloud) as hq:
        appliers = [
            LaneConfigApplier(bus, Topics("s1"), known_devices=DEVICES),
            AttributeApplier(
                "catalogue.interval_s", catalogue, "interval", minimum=10, maximum=86400
            ),
        ]
        async with running_link(
            link_settings(cloud), tmp_path / "state", pinned_key_path, appliers=appliers
        ):
            v3 = signed(hq_key, version=3, payload={"catalogue": {"interval_s": 45}})
            await hq.send("config", v3)
            assert (await hq.stages(3))[-1] == ("applied", 3, None)

            await hq.send("config", v3)  # a replay, byte for byte
            assert await hq.stages(1) == [("rejected", 3, "STALE_VERSION")]
            older = signed(hq_key, version=2, payload={"catalogue": {"interval_s": 20}})
            await hq.send("config", older)
            assert await hq.stages(1) == [("rejected", 2, "STALE_VERSION")]

            envelope = json.loads(
                signed(hq_key, version=4, payload={"catalogue": {"interval_s": 45}})
            )
            body = base64.b64decode(envelope["doc"]).replace(b"45", b"15")
            envelope["doc"] = base64.b64encode(body).decode()
            await hq.send("config", json.dumps(envelope).encode())
            tampered = await hq.ack()
            assert (tampered["stage"], tampered["code"]) == ("rejected", "BAD_SIGNATURE")
            assert "version" not in tampered, "nothing unauthenticated is echoed"

            other = Ed25519PrivateKey.generate()
            await hq.send("config", signed(other, version=4))
            assert await hq.stages(1) == [("rejected", None, "BAD_SIGNATURE")]

            await hq.send("config", signed(hq_key, version=4, target="store:s2"))
            assert await hq.stages(1) == [("rejected", 4, "NOT_FOR_THIS_STORE")]

            invalid = {"catalogue": {"interval_s": 1}, "lanes": {"lane-1": {"printer": "nope"}}}
            await hq.send("config", signed(hq_key, version=4, payload=invalid))
            assert await hq.stages(1) == [("received", 4, None)]
            rejected = await hq.ack()
            assert (rejected["stage"], rejected["code"], rejected["key"]) == (
                "rejected",
                "INVALID_CONFIG",
                "catalogue.interval_s",
            )
            assert [p["key"] for p in rejected["problems"]] == [
                "catalogue.interval_s",
                "lanes.lane-1.printer",
            ]
            not_live = {"outbox": {"concurrency": 8}}
            await hq.send("config", signed(hq_key, version=5, payload=not_live))
            assert (await hq.stages(2))[1] == ("rejected", 5, "INVALID_CONFIG")
            assert catalogue.interval == 45, "no refused document changed anything"

            # A group and every store reach this hub on their own topics.
            group = signed(
                hq_key, version=6, target="group:north", payload={"catalogue": {"interval_s": 50}}
            )
            await hq.send("config", group, scope="group/north")
            assert (await hq.stages(3))[-1] == ("applied", 6, None)
            everyone = signed(
                hq_key, version=7, target="*", payload={"catalogue": {"interval_s": 70}}
            )
            await hq.send("config", everyone, scope="all")
            assert (await hq.stages(3))[-1] == ("applied", 7, None)
            assert catalogue.interval == 70
            for ack in [*await _drain(hq)]:
                validate("hq-ack.json", ack)


async def _drain(hq: Any) -> list[dict[str, Any]]:
    acks = []
    while not hq.acks.empty():
        acks.append(hq.acks.get_nowait())
    return acks


async def test_a_config_that_breaks_readiness_is_rolled_back(
    broker: MosquittoProcess,
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    """The previous config is back everywhere: the live attribute, the lanes' retained
    settings on the store's broker, and the state file."""
    sender = Component(concurrency=4)
    async with local_bus(broker.port) as bus, hq_side(cloud) as hq:
        appliers = [
            LaneConfigApplier(bus, Topics("s1"), known_devices=DEVICES),
            AttributeApplier(
                "outbox.concurrency", sender, "concurrency", minimum=1, maximum=64, integer=True
            ),
        ]

        def ready() -> bool:  # this "component" fails above 8 connections
            return bus.is_connected and sender.concurrency <= 8

        async with running_link(
            link_settings(cloud, apply_ready_timeout_s=0.5),
            tmp_path / "state",
            pinned_key_path,
            appliers=appliers,
            ready=ready,
        ):
            good = {"outbox": {"concurrency": 6}, "lanes": {"lane-1": {"printer": "front"}}}
            await hq.send("config", signed(hq_key, version=1, payload=good))
            assert (await hq.stages(3))[-1] == ("applied", 1, None)

            bad = {"outbox": {"concurrency": 32}, "lanes": {"lane-1": {"printer": "back"}}}
            await hq.send("config", signed(hq_key, version=2, payload=bad))
            assert await hq.stages(2) == [("received", 2, None), ("validated", 2, None)]
            rolled = await hq.ack()
            assert (rolled["stage"], rolled["version"], rolled["code"]) == (
                "rolled_back",
                2,
                "NOT_READY",
            )
            assert sender.concurrency == 6
            assert (await retained_lane_configs(broker.port))["lane-1"]["settings"] == {
                "printer": "front"
            }
            state = read_state(tmp_path)
            assert (state.applied_version, state.last_version.config) == (1, 2)

            await hq.send(
                "config", signed(hq_key, version=3, payload={"outbox": {"concurrency": 8}})
            )
            assert (await hq.stages(3))[-1] == ("applied", 3, None)
            assert sender.concurrency == 8


async def test_commands_run_once_and_unknown_or_failing_ones_are_rejected(
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    store = OutboxStore(tmp_path / "outbox.db")
    await store.open()
    try:
        for key in ("t-1", "t-2"):
            payload = json.dumps({"txn_id": key}).encode()
            entry = Entry(
                key=key, kind="sale", event_type="sale.v1", lane="lane-1", payload=payload
            )
            appended = await store.append(entry, now=NOW.timestamp())
        await store.mark_parked([(appended.seq, "REJECTED", None)], now=NOW.timestamp())
        outbox = OutboxService(store, None, DiskGuard(tmp_path, 0), Metrics())

        async def broken(args: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("the printer caught fire")

        commands = {"outbox.retry_parked": outbox_retry_parked(outbox), "test.broken": broken}
        async with hq_side(cloud) as hq:
            async with running_link(
                link_settings(cloud), tmp_path / "state", pinned_key_path, commands=commands
            ):
                assert (await hq.next_telemetry())["reason"] == "connect"
                retry = signed(
                    hq_key, "command", version=1, payload={"name": "outbox.retry_parked"}
                )
                await hq.send("command", retry)
                assert await hq.stages(2) == [("received", 1, None), ("validated", 1, None)]
                done = await hq.ack()
                assert (done["stage"], done["result"]) == ("applied", {"requeued": 1})
                assert (await store.stats()).parked == 0

                await hq.send("command", retry)
                assert await hq.stages(1) == [("rejected", 1, "STALE_VERSION")]

                now = signed(hq_key, "command", version=2, payload={"name": "telemetry.now"})
                await hq.send("command", now)
                acks = [await hq.ack() for _ in range(3)]
                assert acks[2]["stage"] == "applied"
                telemetry = await hq.next_telemetry()
                assert (telemetry["reason"], telemetry["seq"]) == (
                    "command",
                    acks[2]["result"]["seq"],
                )

                unknown = signed(hq_key, "command", version=3, payload={"name": "hub.reboot"})
                await hq.send("command", unknown)
                assert await hq.stages(2) == [
                    ("received", 3, None),
                    ("rejected", 3, "UNKNOWN_COMMAND"),
                ]

                failing = signed(hq_key, "command", version=4, payload={"name": "test.broken"})
                await hq.send("command", failing)
                assert await hq.stages(3) == [
                    ("received", 4, None),
                    ("validated", 4, None),
                    ("rejected", 4, "COMMAND_FAILED"),
                ]
                bad_args = {"name": "outbox.retry_parked", "args": {"reason": 5}}
                await hq.send("command", signed(hq_key, "command", version=5, payload=bad_args))
                assert (await hq.stages(3))[-1] == ("rejected", 5, "MALFORMED")

                config_on_command_topic = signed(hq_key, "config", version=9)
                await hq.send("command", config_on_command_topic)
                assert await hq.stages(1) == [("rejected", 9, "MALFORMED")]
    finally:
        await store.close()


async def test_telemetry_on_connect_on_change_debounced_and_on_interval(
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    current = {"snapshot": snapshot()}
    async with hq_side(cloud) as hq:
        async with running_link(
            link_settings(cloud), tmp_path / "state", pinned_key_path, current=current
        ):
            first = await hq.next_telemetry()
            validate("hq-telemetry.json", first)
            assert first == {
                "v": 1,
                "store_id": "s1",
                "hub_id": "hub-test",
                "seq": 1,
                "at": first["at"],
                "reason": "connect",
                "wan": "up",
                "outbox_depth": 3,
                "outbox_oldest_age_s": 1.2,
                "parked": 1,
                "lanes": {"offline": 1, "online": 2},
                "devices": {"online": 1},
                "catalogue_version": 42,
                "free_disk_bytes": 10_000_000_000,
                "hub_version": "0.1.0",
                "outbox_salvage": None,
            }
            status = await asyncio.wait_for(hq.status.get(), 10)
            assert status["state"] == "online"

            current["snapshot"] = snapshot(wan="down", parked=2)
            change = await hq.next_telemetry()
            assert (change["reason"], change["wan"], change["parked"]) == ("change", "down", 2)

            # The depth moves with every sale: it rides along, it does not trigger a message.
            current["snapshot"] = snapshot(wan="down", parked=2, outbox_depth=9)
            now = signed(hq_key, "command", version=1, payload={"name": "telemetry.now"})
            await hq.send("command", now)
            asked = await hq.next_telemetry()
            assert (asked["reason"], asked["outbox_depth"]) == ("command", 9)

            # HQ shortens the interval live.
            await hq.send(
                "config", signed(hq_key, version=1, payload={"telemetry": {"interval_s": 1}})
            )
            periodic = await hq.next_telemetry(timeout=5)
            assert periodic["reason"] == "interval"
            assert periodic["seq"] == asked["seq"] + 1


async def test_after_a_restart_nothing_is_applied_twice_and_replays_are_refused(
    broker: MosquittoProcess,
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    """HQ publishes its config retained, so a new connection gets it again: a second HqLink
    over the same state directory restores the config in force without acking anything,
    drops the retained copy, refuses a replay, and still knows which lanes it configured."""
    sender = Component(concurrency=4)
    v1 = signed(
        hq_key,
        version=1,
        payload={"outbox": {"concurrency": 6}, "lanes": {"lane-1": {}, "lane-2": {}}},
    )
    async with local_bus(broker.port) as bus, hq_side(cloud) as hq:

        def appliers() -> list[Any]:
            return [
                LaneConfigApplier(bus, Topics("s1")),
                AttributeApplier(
                    "outbox.concurrency", sender, "concurrency", minimum=1, maximum=64
                ),
            ]

        async with running_link(
            link_settings(cloud), tmp_path / "state", pinned_key_path, appliers=appliers()
        ):
            await hq.send("config", v1, retain=True)
            assert (await hq.stages(3))[-1] == ("applied", 1, None)

        sender.concurrency = 4  # a new process starts from the settings file
        async with running_link(
            link_settings(cloud), tmp_path / "state", pinned_key_path, appliers=appliers()
        ):
            assert sender.concurrency == 6, "the config in force was restored"
            await hq.send("config", v1)  # a replay
            assert await hq.stages(1) == [("rejected", 1, "STALE_VERSION")], (
                "the retained copy at the reconnect was dropped without an ack"
            )
            v2 = signed(hq_key, version=2, payload={"lanes": {"lane-1": {"scale": "deli"}}})
            await hq.send("config", v2)
            assert (await hq.stages(3))[-1] == ("applied", 2, None)
            assert set(await retained_lane_configs(broker.port)) == {"lane-1"}, (
                "the restored applier knew lane-2 and cleared it"
            )
            assert sender.concurrency == 4


async def test_garbage_on_the_cloud_broker_gets_structured_refusals_and_the_link_lives_on(
    cloud: MosquittoProcess,
    hq_key: Ed25519PrivateKey,
    pinned_key_path: Path,
    tmp_path: Path,
) -> None:
    async with hq_side(cloud) as hq:
        async with running_link(link_settings(cloud), tmp_path / "state", pinned_key_path) as link:
            for junk in (b"", b"\x00\xff" * 50, b"[]", b'{"doc": 1}', b"x" * 300_000):
                await hq.send("config", junk)
                ack = await hq.ack()
                validate("hq-ack.json", ack)
                assert (ack["stage"], ack["code"]) == ("rejected", "MALFORMED")
            await hq.send("command", signed(hq_key, "command", version=1))
            assert (await hq.stages(3))[-1] == ("applied", 1, None)
            assert link.connects == 1
