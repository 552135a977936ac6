"""The hub's local MQTT bus: connection, topic tree, envelope, request/response.

Nothing outside this package imports aiomqtt or paho.
"""

from edge.bus.client import Bus, Message
from edge.bus.envelope import ENVELOPE_VERSION, HubStatus, Reply, Request
from edge.bus.errors import ERROR_CODES, BusError, BusUnavailable, ErrorCode, RequestError
from edge.bus.requester import Requester
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics

__all__ = [
    "ENVELOPE_VERSION",
    "ERROR_CODES",
    "Bus",
    "BusError",
    "BusUnavailable",
    "ErrorCode",
    "HubStatus",
    "Message",
    "Reply",
    "Request",
    "RequestContext",
    "RequestError",
    "Requester",
    "RpcRouter",
    "Topics",
    "decode_data",
]
