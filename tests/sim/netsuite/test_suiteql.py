"""SuiteQL over real HTTP: pages of rows with hasMore, totalResults and links that walk the whole
result exactly once; NetSuite's paging rules and Prefer: transient."""

from __future__ import annotations

from edge.sim.netsuite.server import NetSuiteSim
from tests.sim.netsuite.helpers import Ns, cash_sale

SUITEQL = "/query/v1/suiteql"
TRANSIENT = {"Prefer": "transient"}


async def test_next_links_walk_every_row_once(ns: Ns, sim: NetSuiteSim) -> None:
    query = {"q": "SELECT id, itemid FROM item ORDER BY id"}
    params = {"limit": "64", "offset": "0"}
    seen: list[int] = []
    pages = 0
    while True:
        reply = await ns.call("POST", SUITEQL, query, params=params, headers=TRANSIENT)
        assert reply.status == 200, reply.body
        page = reply.body
        pages += 1
        assert page["offset"] == int(params["offset"])
        assert page["count"] == len(page["items"])
        assert all(row["links"] == [] for row in page["items"])
        seen += [int(row["id"]) for row in page["items"]]
        links = {link["rel"]: link["href"] for link in page["links"]}
        assert links["first"].endswith("limit=64&offset=0")
        if not page["hasMore"]:
            assert "next" not in links
            assert links["last"].endswith(f"offset={page['offset']}")
            break
        assert page["count"] == 64
        next_url = links["next"]
        assert next_url.startswith(ns.url(SUITEQL))
        query_string = next_url.split("?", 1)[1]
        params = dict(pair.split("=") for pair in query_string.split("&"))
    assert len(seen) == page["totalResults"] == len(sim.catalogue)
    assert seen == sorted(set(seen)), "each row once, in id order"
    assert pages == -(-len(sim.catalogue) // 64)


async def test_transactions_written_are_queryable(ns: Ns, sim: NetSuiteSim) -> None:
    for n in range(3):
        await ns.call("PUT", f"/record/v1/cashSale/eid:Q-{n}", cash_sale(sim))
    reply = await ns.call(
        "POST",
        SUITEQL,
        {"q": "SELECT id, externalid FROM transaction WHERE externalid = 'Q-1'"},
        headers=TRANSIENT,
    )
    assert reply.status == 200, reply.body
    assert [row["externalid"] for row in reply.body["items"]] == ["Q-1"]


async def test_paging_rules_are_enforced(ns: Ns) -> None:
    query = {"q": "SELECT id FROM item ORDER BY id"}
    misaligned = await ns.call(
        "POST", SUITEQL, query, params={"limit": "10", "offset": "15"}, headers=TRANSIENT
    )
    assert (misaligned.status, misaligned.error_code()) == (400, "INVALID_PARAMETER")
    assert misaligned.body["o:errorDetails"][0]["o:errorQueryParam"] == "offset"
    too_big = await ns.call("POST", SUITEQL, query, params={"limit": "1001"}, headers=TRANSIENT)
    assert (too_big.status, too_big.error_code()) == (400, "INVALID_PARAMETER")
    no_prefer = await ns.call("POST", SUITEQL, query)
    assert (no_prefer.status, no_prefer.error_code()) == (400, "INVALID_HEADER")
    no_query = await ns.call("POST", SUITEQL, {"query": "x"}, headers=TRANSIENT)
    assert (no_query.status, no_query.error_code()) == (400, "INVALID_CONTENT")
