"""HTTP side of enrollment, and the gate that decides what the store LAN may reach.

Routes (docs/protocol.md, "Enrollment")::

    GET  /api/v1/enroll/ca            the hub CA (PEM) and its fingerprint          LAN, open
    POST /api/v1/enroll               {code, csr} -> certificate, CA, broker port   LAN, open
    POST /api/v1/enroll/renew         {csr} with the current certificate (mTLS)     LAN
    GET  /api/v1/devices              the device register                           loopback
    POST /api/v1/devices              {name, role, lane?} -> one-time code          loopback
    GET  /api/v1/devices/{name}/code.png  (console) QR code of a fresh code         loopback
    POST /api/v1/devices/{name}/revoke                                             loopback

The HTTPS listener on the store LAN serves the same application through :func:`lan_gate`:
enrollment is open (the code is the credential), the register feed and item lookups need a
valid device certificate, the console pages keep their own login, and every other API (the
technician's CLI calls, metrics) answers 404 there: those stay on the loopback listener.

Errors: ``{"error": {"code", "message"}}`` with the statuses of
:data:`edge.security.enrollment.ENROLL_ERRORS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from aiohttp import web
from cryptography import x509

from edge.security.enrollment import ENROLL_ERRORS, EnrollError
from edge.security.pki import CsrError
from edge.security.service import Enrollment, Granted

log = logging.getLogger(__name__)

ENROLLMENT = web.AppKey("enrollment", Enrollment)
BROKER_PORT = web.AppKey("broker_lan_port", int)

LAN_OPEN = ("/api/v1/enroll",)
LAN_DEVICE = ("/api/v1/catalogue/feed", "/api/v1/catalogue/items/")
LAN_CLOSED = ("/api/", "/metrics")


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    """The one-time code as the technician typed it (case, dashes and spaces do not matter)."""
    csr: str
    """PEM certificate signing request for a key generated on the device."""


class RenewRequest(msgspec.Struct, forbid_unknown_fields=True):
    csr: str
    """PEM certificate signing request for a new key."""


class EnrollResponse(msgspec.Struct, kw_only=True):
    device: str
    """The device name: the certificate's CN, the MQTT username and client id."""
    role: Literal["register", "peripheral", "display"]
    lane: str
    """A register's lane id (empty for peripherals)."""
    certificate: str
    """PEM client certificate issued by the hub CA."""
    ca: str
    """PEM hub CA certificate: trust this, and only this, for the hub."""
    not_after: str
    """When the certificate ends (ISO 8601, UTC): renew before."""
    broker_port: int
    """The broker's mutual-TLS port."""


class AddDevice(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str
    lane: str = ""


def error(code: str, message: str = "", status: int | None = None) -> web.Response:
    status = status or ENROLL_ERRORS.get(code, (400, ""))[0]
    message = message or ENROLL_ERRORS.get(code, (0, code))[1]
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client certificate verified by the TLS handshake, if any."""
    if request.transport is None:
        return None
    sslobj = request.transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject):
        return None
    der = sslobj.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def is_lan(request: web.Request) -> bool:
    return request.transport is not None and (
        request.transport.get_extra_info("ssl_object") is not None
    )


async def _body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise EnrollError("MALFORMED", f"request: {exc}") from None
    except msgspec.DecodeError:
        raise EnrollError("MALFORMED", "request body is not JSON") from None


async def get_ca(request: web.Request) -> web.Response:
    identity = request.app[ENROLLMENT].identity
    return web.json_response({"ca": identity.ca_pem(), "fingerprint": identity.ca_fingerprint})


async def post_enroll(request: web.Request) -> web.Response:
    try:
        body: EnrollRequest = await _body(request, EnrollRequest)
        granted = await request.app[ENROLLMENT].enroll(
            body.code, body.csr, request.remote or "unknown"
        )
    except EnrollError as exc:
        response = error(exc.code, str(exc))
        if exc.code == "TOO_MANY_ATTEMPTS":
            response.headers["Retry-After"] = "60"
        return response
    except CsrError as exc:
        return error(exc.code, str(exc))
    return _granted(granted, request.app[BROKER_PORT])


def _granted(granted: Granted, broker_port: int) -> web.Response:
    answer = EnrollResponse(
        device=granted.name,
        role=granted.role,  # type: ignore[arg-type]
        lane=granted.lane,
        certificate=granted.certificate_pem,
        ca=granted.ca_pem,
        not_after=dt.datetime.fromtimestamp(granted.not_after, dt.UTC).isoformat(),
        broker_port=broker_port,
    )
    return web.Response(body=msgspec.json.encode(answer), content_type="application/json")


async def post_renew(request: web.Request) -> web.Response:
    try:
        body: RenewRequest = await _body(request, RenewRequest)
        granted = await request.app[ENROLLMENT].renew(peer_certificate(request), body.csr)
    except EnrollError as exc:
        return error(exc.code, str(exc))
    except CsrError as exc:
        return error(exc.code, str(exc))
    return _granted(granted, request.app[BROKER_PORT])


async def list_devices(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[ENROLLMENT].identity.devices)
    return web.json_response({"devices": [d.as_dict() for d in rows]})


async def add_device(request: web.Request) -> web.Response:
    try:
        body: AddDevice = await _body(request, AddDevice)
        created = await request.app[ENROLLMENT].create_code(body.name, body.role, body.lane)
    except EnrollError as exc:
        return error(exc.code, str(exc))
    except ValueError as exc:
        return error("INVALID_DEVICE", str(exc), 400)
    return web.json_response(
        {
            "device": created.name,
            "role": created.role,
            "lane": created.lane,
            "code": created.code,
            "expires_at": created.expires_at,
        },
        status=201,
    )


async def revoke_device(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not await request.app[ENROLLMENT].revoke(name):
        return error("UNKNOWN_DEVICE", f"no enrolled device {name!r}", 404)
    return web.json_response({"device": name, "state": "revoked"})


def add_routes(app: web.Application, enrollment: Enrollment, broker_lan_port: int) -> None:
    app[ENROLLMENT] = enrollment
    app[BROKER_PORT] = broker_lan_port
    app.router.add_get("/api/v1/enroll/ca", get_ca)
    app.router.add_post("/api/v1/enroll", post_enroll)
    app.router.add_post("/api/v1/enroll/renew", post_renew)
    app.router.add_get("/api/v1/devices", list_devices)
    app.router.add_post("/api/v1/devices", add_device)
    app.router.add_post("/api/v1/devices/{name}/revoke", revoke_device)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def lan_gate(device_valid: Callable[[x509.Certificate], Awaitable[bool]]) -> Any:
    """Middleware: what a request that came in over the LAN's HTTPS listener may reach."""

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_lan(request):
            return await handler(request)
        path = request.path
        if path.startswith(LAN_OPEN):
            return await handler(request)
        if path.startswith(LAN_DEVICE):
            peer = peer_certificate(request)
            if peer is None:
                return error("CERTIFICATE_REQUIRED")
            if not await device_valid(peer):
                return error("REVOKED")
            return await handler(request)
        if path.startswith(LAN_CLOSED):
            return error("NOT_ON_LAN", "this API is served on the hub's loopback only", 404)
        return await handler(request)

    return gate


def server_context(certfile: str, keyfile: str, cafile: str) -> ssl.SSLContext:
    """TLS for the LAN listener: the hub's certificate; a client certificate from the hub CA
    is asked for and verified when given (enrollment itself has none yet)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    context.load_cert_chain(certfile, keyfile)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context
