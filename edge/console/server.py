"""The hub's HTTP server: ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: the process is alive and its event loop answers (200 always, with identity).
- ``/readyz``: 200 when every readiness check passes (the managed broker running, the outbox
  open, free disk above the floor, the bus connected), else 503;
  the body lists each check, so a technician sees which one fails.
- ``/metrics``: Prometheus text exposition from the app's own registry.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class HealthSource:
    """What the HTTP layer needs from the hub; built by edge.app."""

    identity: Callable[[], dict[str, Any]]
    checks: Callable[[], list[Check]]
    metrics: Metrics


SOURCE = web.AppKey("source", HealthSource)


async def healthz(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    return web.json_response({"alive": True, **source.identity()})


async def readyz(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    checks = source.checks()
    ready = all(c.ok for c in checks)
    body = {
        "ready": ready,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        **source.identity(),
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    body = generate_latest(source.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(source: HealthSource) -> web.Application:
    app = web.Application()
    app[SOURCE] = source
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    """Starts and stops the aiohttp app on host:port (port 0: ephemeral, see ``url``)."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        tls: tuple[str, int, ssl.SSLContext] | None = None,
    ) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host = host
        self._port = port
        self._tls = tls
        self.url = ""
        self.tls_url = ""
        """The HTTPS listener for the store LAN (hub identity present), else empty."""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        if self._tls is not None:
            tls_host, tls_port, context = self._tls
            tls_site = web.TCPSite(
                self._runner, tls_host, tls_port, ssl_context=context, reuse_address=True
            )
            await tls_site.start()
            host, port = self._runner.addresses[-1][:2]
            self.tls_url = f"https://{host}:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
