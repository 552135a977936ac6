"""Fixtures for the NetSuite simulator tests: a settable clock, a served simulator (TBA
credential ``TBA`` registered) and a signing client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from tests.sim.netsuite.helpers import ACCOUNT, TBA, Clock, Ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> NetSuiteSim:
    return NetSuiteSim(ACCOUNT, catalogue_size=300, tba=[TBA], clock=clock)


@pytest.fixture
async def server(sim: NetSuiteSim) -> AsyncIterator[NetSuiteServer]:
    async with run_netsuite_sim(sim) as served:
        yield served


@pytest.fixture
async def ns(server: NetSuiteServer, clock: Clock) -> AsyncIterator[Ns]:
    async with aiohttp.ClientSession() as session:
        yield Ns(session, server, clock)
