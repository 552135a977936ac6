"""Close another client's connection by taking over its session (MQTT 5, 3.1.4-3).

The broker disconnects an existing client when a new one connects with the same client id. The
hub uses it to make a revocation take effect at once: on the LAN listener a device's client id is
its certificate CN (``use_username_as_clientid``), so the hub connects on its loopback listener
with that id and a clean start, which also discards the revoked device's queued messages, and
leaves.
"""

from __future__ import annotations

import socket

import aiomqtt


async def take_over_session(
    host: str, port: int, client_id: str, credentials: tuple[str, str] | None
) -> None:
    client = aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        username=credentials[0] if credentials else None,
        password=credentials[1] if credentials else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        timeout=5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    async with client:
        pass
