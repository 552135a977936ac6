"""Simulators for the demo, the tests and the benchmarks. Never imported by the running hub.

- :mod:`edge.sim.wan_proxy`: :class:`WanProxy`, a TCP proxy standing for the WAN, with
  switchable faults (pass, refuse, blackhole, reset) and added latency.
- :mod:`edge.sim.hq_api`: :class:`HqApiSimulator` and :func:`run_hq_api`, a generic HQ HTTPS
  JSON API receiving the store's transactions as CloudEvents batches, with scripted and seeded
  random faults.
"""

from edge.sim.hq_api import (
    Fault,
    FaultKind,
    FaultProfile,
    HqApiServer,
    HqApiSimulator,
    make_hq_app,
    run_hq_api,
)
from edge.sim.wan_proxy import WAN_MODES, ProxyStats, WanMode, WanProxy

__all__ = [
    "WAN_MODES",
    "Fault",
    "FaultKind",
    "FaultProfile",
    "HqApiServer",
    "HqApiSimulator",
    "ProxyStats",
    "WanMode",
    "WanProxy",
    "make_hq_app",
    "run_hq_api",
]
