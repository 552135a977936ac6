"""The console's login, logout and session middleware (aiohttp glue over :mod:`.auth`).

- ``GET /login``: the login form. ``POST /login``: form fields ``name``, ``password``, ``next``.
  Success sets the ``edge_session`` cookie (HttpOnly, SameSite=Strict, Path=/, Secure when
  the hub serves HTTPS) and answers 303 to ``next`` if it is a local path, else to ``/``.
  A wrong name or password answers 401 with the form and one generic message (it never says
  whether the name exists); a locked name or address answers 429 with ``Retry-After``.
- ``POST /logout``: ends the session (needs the CSRF token like any other form) and answers
  303 to ``/login``.
- The middleware leaves ``/healthz``, ``/readyz``, ``/metrics``, ``/static/…`` and ``/api/…``
  alone (the register API gets its own authentication). Every other path is a console page:
  a GET without a live session is redirected to ``/login?next=<path>``; any other method
  without one answers 401 ``LOGIN_REQUIRED`` (303 to ``/login`` for ``/logout`` and for a
  browser, i.e. ``Accept: text/html``); a non-GET/HEAD with a session but without its
  CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) answers 403 ``CSRF_INVALID``.
  Error bodies are ``{"error": {"code": "...", "message": "..."}}``.
- Handlers behind it find the account name in ``request[ACCOUNT]`` and the session's CSRF
  token in ``request[CSRF]`` (to render into forms).
- Console responses (pages and ``/login``) carry ``X-Frame-Options: DENY``, a
  ``default-src 'self'`` Content-Security-Policy, ``Referrer-Policy: same-origin`` and
  ``Cache-Control: no-store``, unless the handler set its own.

Calling contract: :func:`setup_auth` once, before the app starts. Password checks run in a
worker thread (scrypt costs tens of milliseconds), at most two at a time.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from edge.console.auth import Accounts, Locked, LoginGuard, SessionStore

log = logging.getLogger(__name__)

COOKIE_NAME: Final = "edge_session"
CSRF_FIELD: Final = "csrf"
ACCOUNT: Final = web.RequestKey("account", str)
CSRF: Final = web.RequestKey("csrf", str)
CSRF_HEADER: Final = "X-CSRF-Token"

_OPEN_EXACT: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_OPEN_PREFIXES: Final = ("/static/", "/api/")
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
_FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_SECURITY_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# The guard keys on the name as typed; longer than any valid account name is cut so a client
# cannot make the guard hold megabytes per entry.
_GUARD_KEY_LENGTH: Final = 65
_MAX_NEXT_LENGTH: Final = 2048
_GENERIC_FAILURE: Final = "Wrong account name or password."
_LOCKED_MESSAGE: Final = "Too many failed logins. Try again later."


@dataclass(slots=True)
class ConsoleAuth:
    """The login state of one app; ``app[AUTH]``. ``sessions.revoke_all(name)`` after a
    password change or account removal ends that technician's sessions."""

    accounts: Accounts
    guard: LoginGuard
    sessions: SessionStore
    secure_cookies: bool
    clock: Callable[[], float]
    verifying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


AUTH: Final = web.AppKey("console_auth", ConsoleAuth)


def setup_auth(
    app: web.Application,
    accounts: Accounts,
    *,
    secure_cookies: bool,
    clock: Callable[[], float] = time.monotonic,
    guard: LoginGuard | None = None,
    sessions: SessionStore | None = None,
) -> ConsoleAuth:
    """Add login, logout and the session middleware to ``app`` (before it starts).

    ``clock``: seconds, the one clock every lockout and session time is read from (a test
    passes its own to expire sessions without sleeping). ``secure_cookies``: True when the
    console is served over HTTPS (the cookie then never travels in clear).
    """
    auth = ConsoleAuth(
        accounts=accounts,
        guard=guard if guard is not None else LoginGuard(),
        sessions=sessions if sessions is not None else SessionStore(),
        secure_cookies=secure_cookies,
        clock=clock,
    )
    app[AUTH] = auth
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.middlewares.append(session_middleware)
    app.on_response_prepare.append(_add_security_headers)
    return auth


# --- middleware ---------------------------------------------------------------------------


def _is_open(path: str) -> bool:
    return path in _OPEN_EXACT or path.startswith(_OPEN_PREFIXES)


def _bypasses_auth(request: web.Request) -> bool:
    # Both spellings must be open: "/api%2F..%2Fsecret" decodes to a path under /api/ but may
    # route elsewhere, so a path is only let through if its raw form is open too.
    return _is_open(request.path) and _is_open(request.rel_url.raw_path)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _csrf_token(request: web.Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token is not None:
        return token
    if request.content_type in _FORM_TYPES:
        # aiohttp caches the parsed form, so the handler can still call request.post().
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require a live session (and its CSRF token on unsafe methods) on console pages."""
    if _bypasses_auth(request) or request.path == "/login":
        return await handler(request)
    auth = request.app[AUTH]
    session_id = request.cookies.get(COOKIE_NAME)
    session = auth.sessions.get(session_id, auth.clock()) if session_id else None
    if session is None:
        if request.method in _SAFE_METHODS:
            target = URL("/login").with_query(next=request.rel_url.raw_path_qs)
            raise web.HTTPSeeOther(location=str(target))
        if request.path == "/logout" or "text/html" in request.headers.get("Accept", ""):
            # A browser posting a form after its session ended (or logging out twice): back to
            # the login form rather than a JSON error page.
            raise web.HTTPSeeOther(location="/login")
        return _error(401, "LOGIN_REQUIRED", "log in to the console first")
    if request.method not in _SAFE_METHODS and not session.csrf_matches(await _csrf_token(request)):
        log.warning(
            "console %s %s refused: CSRF token missing or wrong", request.method, request.path
        )
        return _error(403, "CSRF_INVALID", "the form's CSRF token is missing or wrong; reload")
    request[ACCOUNT] = session.name
    request[CSRF] = session.csrf
    return await handler(request)


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if _bypasses_auth(request):
        return
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# --- login and logout ---------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirect).

    A local path starts with one "/" ("//host" is another site to a browser), and holds no
    backslash (browsers read "/\\host" as "//host") and no control character.
    """
    if (
        not target
        or len(target) > _MAX_NEXT_LENGTH
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    return target


_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · store hub</title>
<link rel="stylesheet" href="/static/console.css">
</head>
<body class="login">
<main>
<h1>Store hub console</h1>
{message}<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Account
<input name="name" value="{name}" autocomplete="username" required autofocus></label>
<label>Password
<input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
"""


def _login_form(
    *, status: int = 200, message: str = "", next_path: str = "/", name: str = ""
) -> web.Response:
    body = _PAGE.format(
        message=f'<p class="error" role="alert">{html.escape(message)}</p>\n' if message else "",
        next=html.escape(next_path),
        name=html.escape(name),
    )
    return web.Response(text=body, status=status, content_type="text/html")


async def login_page(request: web.Request) -> web.Response:
    return _login_form(next_path=safe_next(request.query.get("next")))


def _field(form: Mapping[str, object], key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _same_origin(request: web.Request) -> bool:
    """False if the browser says the form was posted from another site (login CSRF)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or an old one: the session cookie is SameSite anyway
    _, sep, authority = origin.partition("://")
    return bool(sep) and authority.lower() == request.host.lower()


async def login(request: web.Request) -> web.Response:
    """Check the form's name and password; on success start a session and redirect."""
    auth = request.app[AUTH]
    if not _same_origin(request):
        return _error(403, "CSRF_INVALID", "login form posted from another site")
    form = await request.post()
    name = _field(form, "name")
    password = _field(form, "password")
    next_path = safe_next(_field(form, "next"))
    addr = request.remote or "unknown"
    guard_key = name[:_GUARD_KEY_LENGTH]

    # 1. Refuse at once while the name or address is locked: no password is checked then.
    if (lock := auth.guard.check(guard_key, addr, auth.clock())) is not None:
        return _locked(lock, auth.clock(), next_path, name)
    async with auth.verifying:
        # 2. Check again now it is our turn: attempts queued behind this semaphore must not
        #    get past a lock that a failure ahead of them started.
        if (lock := auth.guard.check(guard_key, addr, auth.clock())) is not None:
            return _locked(lock, auth.clock(), next_path, name)
        # 3. scrypt in a worker thread; an unknown name costs the same as a known one.
        account = await asyncio.to_thread(auth.accounts.verify, name, password)
        now = auth.clock()
        if account is None:
            auth.guard.failed(guard_key, addr, now)
            if auth.accounts.role(name) is not None:
                log.warning("console login failed for %s from %s", name, addr)
            else:  # people type their password into the name field: do not log it
                log.warning("console login failed for an unknown account name from %s", addr)
            return _login_form(status=401, message=_GENERIC_FAILURE, next_path=next_path, name=name)
        auth.guard.succeeded(guard_key, addr, now)

    # 4. A new session id on every login (an id planted before login is worthless after).
    if (old := request.cookies.get(COOKIE_NAME)) is not None:
        auth.sessions.revoke(old)
    session_id, _csrf = auth.sessions.create(account.name, now)
    log.info("console login: %s from %s", account.name, addr)
    response = web.Response(status=303, headers={"Location": next_path})
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=auth.secure_cookies,
    )
    return response


def _locked(lock: Locked, now: float, next_path: str, name: str) -> web.Response:
    log.warning("console login refused: %s locked", lock.scope)
    response = _login_form(status=429, message=_LOCKED_MESSAGE, next_path=next_path, name=name)
    response.headers["Retry-After"] = str(lock.retry_after(now))
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session (the middleware has checked it and its CSRF token)."""
    auth = request.app[AUTH]
    session_id = request.cookies.get(COOKIE_NAME)
    if session_id is not None:
        auth.sessions.revoke(session_id)
    log.info("console logout: %s", request.get(ACCOUNT))
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(COOKIE_NAME, path="/")
    return response
