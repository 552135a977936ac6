"""The chaos suite (`make chaos`): a short seeded run must end clean with every fault kind really
injected, and the invariant checker must catch each way the promise can break."""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path

from edge.chaos.invariants import (
    Catalogue,
    FindingKind,
    OutboxRecord,
    Records,
    check,
)
from edge.chaos.schedule import DEFAULT_KINDS, FaultKind, draw_schedule, parse_kinds

# -- the checker (pure) -----------------------------------------------------------------------

RUNG = frozenset({"t1", "t2", "t3", "t4"})


def kinds_of(records: Records) -> list[FindingKind]:
    findings, _ = check(records)
    return [f.kind for f in findings]


def test_checker_passes_a_clean_run() -> None:
    """Acked sales each once in the cloud, one parked for a rule the cloud was given, and one
    sale the hub took without its ack reaching the lane (in the cloud once): no finding."""
    findings, tally = check(
        Records(
            rung=RUNG,
            acked=frozenset({"t1", "t2", "t3"}),
            cloud={"t1": 1, "t2": 1, "t4": 1},
            outbox={"t3": OutboxRecord("parked", "INVALID_FLD_VALUE: refused by a rule")},
            rejected=frozenset({"t3"}),
        )
    )
    assert findings == []
    assert (tally.sent, tally.acked, tally.delivered, tally.parked) == (4, 3, 2, 1)


def test_checker_finds_an_acked_transaction_that_is_lost() -> None:
    """Acknowledged, not in the cloud and not held by the hub (or held as delivered): lost."""
    findings, tally = check(
        Records(
            rung=RUNG,
            acked=frozenset({"t1", "t2", "t3"}),
            cloud={"t1": 1},
            outbox={"t3": OutboxRecord("delivered")},
        )
    )
    assert [(f.kind, f.subject) for f in findings] == [
        (FindingKind.LOST, "t2"),
        (FindingKind.LOST, "t3"),
    ]
    assert tally.lost == 2


def test_checker_finds_a_transaction_duplicated_in_the_cloud() -> None:
    """Twice in the cloud is a finding whether or not the lane got the ack."""
    findings, tally = check(Records(rung=RUNG, acked=frozenset({"t1"}), cloud={"t1": 2, "t4": 3}))
    assert [(f.kind, f.subject) for f in findings] == [
        (FindingKind.DUPLICATED, "t1"),
        (FindingKind.DUPLICATED, "t4"),
    ]
    assert tally.duplicates == 2


def test_checker_finds_unexplained_or_unexpected_parking_stuck_phantoms_and_refusals() -> None:
    found = kinds_of(
        Records(
            rung=RUNG,
            acked=RUNG,
            cloud={"t4": 1, "never-rung": 1},
            cloud_unknown=frozenset({"cust-x"}),
            outbox={
                "t1": OutboxRecord("parked", ""),
                "t2": OutboxRecord("parked", "USER_ERROR: something"),
                "t3": OutboxRecord("pending", "timeout"),
            },
            rejected=frozenset({"t1"}),
            refused={"t9": "VALIDATION_FAILED"},
        )
    )
    assert sorted(found) == sorted(
        [
            FindingKind.PARKED_UNEXPLAINED,
            FindingKind.PARKED_UNEXPECTED,
            FindingKind.STUCK,
            FindingKind.PHANTOM,
            FindingKind.PHANTOM,
            FindingKind.REFUSED,
        ]
    )


def test_checker_finds_a_sale_the_cloud_holds_with_another_amount() -> None:
    """A bit flipped on the hub's disk must never reach the ERP: the cloud's record adds up to
    what the lane rang up, or it is a finding."""
    findings, tally = check(
        Records(
            rung=RUNG,
            acked=frozenset({"t1", "t2"}),
            cloud={"t1": 1, "t2": 1},
            rung_amounts={"t1": Decimal("51.09"), "t2": Decimal("7.15"), "t3": Decimal("1")},
            cloud_amounts={"t1": Decimal("41.09"), "t2": Decimal("7.150")},
        )
    )
    assert [(f.kind, f.subject) for f in findings] == [(FindingKind.ALTERED, "t1")]
    assert "the cloud holds 41.09, the lane rang up 51.09" in findings[0].detail
    assert (tally.altered, tally.amounts_checked) == (1, 2)


def test_checker_finds_a_register_whose_catalogue_differs_from_the_hubs() -> None:
    hub = Catalogue("e:7", {("item", "A"): b'{"p":1}', ("item", "B"): b'{"p":2}'})
    findings, _ = check(
        Records(
            rung=frozenset(),
            acked=frozenset(),
            cloud={},
            hub_catalogue=hub,
            lane_catalogues={
                "lane-01": Catalogue("e:7", dict(hub.records)),
                "lane-02": Catalogue("e:6", {("item", "A"): b'{"p":1}'}),
            },
        )
    )
    assert [(f.kind, f.subject) for f in findings] == [(FindingKind.CATALOGUE_DIFFERS, "lane-02")]


# -- the schedule (pure) ----------------------------------------------------------------------


def test_schedule_is_reproducible_and_short_runs_get_every_kind() -> None:
    """The same seed gives the same schedule; a 20 s run still strikes with every kind."""
    first = draw_schedule(seed=5, duration_s=20, kinds=DEFAULT_KINDS, rate_per_min=24, lanes=3)
    again = draw_schedule(seed=5, duration_s=20, kinds=DEFAULT_KINDS, rate_per_min=24, lanes=3)
    assert first == again
    assert {e.kind for e in first} == set(FaultKind)
    assert all(0 <= e.at_s < 20 for e in first)
    assert first != draw_schedule(
        seed=6, duration_s=20, kinds=DEFAULT_KINDS, rate_per_min=24, lanes=3
    )
    assert parse_kinds("wan_flap, hub_kill") == (FaultKind.WAN_FLAP, FaultKind.HUB_KILL)


# -- a real run -------------------------------------------------------------------------------


async def test_short_chaos_run_is_clean_and_really_injects_every_fault(tmp_path: Path) -> None:
    """20 s of every fault kind against a real hub process, Mosquitto, SQLite on a tmpfs and
    the NetSuite simulator (seed 1 includes a completely full disk); the verdict must be clean
    and every kind must have struck for real, not only been scheduled."""
    summary_path = tmp_path / "summary.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.chaos",
        "--duration=20", "--seed=1", "--lanes=3", "--rate=24", "--sale-every=0.3",
        "--drain-timeout=25", "--catalogue-size=100",
        f"--workdir={tmp_path / 'run'}", f"--json={summary_path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 100)
    text = out.decode(errors="replace")
    assert process.returncode == 0, text
    summary = json.loads(summary_path.read_text())
    assert summary["verdict"] == "clean", text
    assert summary["findings"] == []
    assert set(summary["faults"]["by_kind"]) == {k.value for k in FaultKind}, text
    assert all(n > 0 for n in summary["faults"]["by_kind"].values())
    assert summary["hub"]["sigkills"] >= 1
    assert summary["hub"]["starts"] >= 2
    assert summary["broker_starts"] >= 2
    t = summary["transactions"]
    assert t["acked"] > 20, "too little traffic to prove anything"
    assert t["lost"] == t["duplicates"] == t["stuck"] == t["altered"] == 0
    assert t["delivered"] + t["parked"] == t["acked"]
    assert t["amounts_checked"] >= t["delivered"], "every sale's amount in the cloud checked"
    assert summary["catalogue"]["lanes_equal"] == 3


def test_checker_finds_a_hub_that_exited_or_did_not_start() -> None:
    """A hub that crashes or cannot start again (a full disk) takes the store's printers,
    scales and catalogue down with its sales: every such exit and failed start is a
    finding, even when no sale was lost."""
    findings, _ = check(
        Records(
            rung=frozenset(),
            acked=frozenset(),
            cloud={},
            hub_exits=("exit 1: outbox: ... is damaged",),
            hub_start_failures=("hub exited before ready: sqlite3.OperationalError: full",),
        )
    )
    assert [(f.kind, f.subject) for f in findings] == [(FindingKind.HUB_DOWN, "hub")] * 2
    assert "did not start: hub exited before ready" in findings[1].detail
