"""``GET /api/v1/hq``: the HQ link, the config in force and the documents HQ sent lately, with
every stage the hub acknowledged (the console's Config page and ``edge hq status`` read it).
Served on the loopback listener only (the LAN's HTTPS listener closes /api/)."""

from __future__ import annotations

from aiohttp import web

from edge.hq.link import HqLink

LINK = web.AppKey("hq_link", HqLink)


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[LINK].status())


def add_routes(app: web.Application, link: HqLink) -> None:
    app[LINK] = link
    app.router.add_get("/api/v1/hq", get_status)
