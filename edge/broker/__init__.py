"""The local Mosquitto broker: config rendering and supervision (managed mode)."""

from edge.broker.config import LanSecurity, render_config
from edge.broker.supervisor import (
    BrokerError,
    BrokerNotInstalled,
    BrokerStartFailed,
    BrokerSupervisor,
    find_mosquitto,
    wait_for_port,
)

__all__ = [
    "BrokerError",
    "BrokerNotInstalled",
    "BrokerStartFailed",
    "BrokerSupervisor",
    "LanSecurity",
    "find_mosquitto",
    "render_config",
    "wait_for_port",
]
