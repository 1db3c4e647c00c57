"""The server's middlewares, outermost first: errors as OpenAI-shaped JSON, the bearer token
(``server.api_key``), and "starting" while the models load. ``council/server/app.py`` installs them in that
order, so a missing or wrong token is a 401 at once, even while the models load.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Any

from aiohttp import web

from council.core.errors import (
    AuthenticationError,
    CouncilError,
    PayloadTooLargeError,
    StartingError,
)
from council.server import keys

log = logging.getLogger(__name__)
OPEN_PATHS = ("/health", "/livez", "/readyz", "/", "/loop")  # no bearer token needed (the pages hold no data)
OPEN_PREFIXES = ("/static/",)  # the pages' scripts and styles: no token, and served while the models load
STARTUP_PATHS = OPEN_PATHS  # answered while the models load
STARTUP_PREFIXES = (*OPEN_PREFIXES, "/v1/loop/")  # the loop's files need no model (the token still does)


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the bearer token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def error_response(exc: CouncilError) -> web.Response:
    headers = {"Retry-After": "1"} if exc.code in ("overloaded", "starting") else None
    return web.json_response(exc.to_openai(), status=exc.status, headers=headers)


def endpoints(app: web.Application) -> list[str]:
    """The ``/v1/`` endpoints the router serves, as ``"METHOD /path"``, path by path."""
    found = {(route.resource.canonical, route.method) for route in app.router.routes()
             if route.resource is not None and route.resource.canonical.startswith("/v1/")
             and route.method not in ("HEAD", "*")}
    return [f"{method} {path}" for path, method in sorted(found)]


def http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx as OpenAI-shaped JSON: a path no route has under ``/v1/`` names the endpoints Council
    serves (code ``unknown_url``), a known path with the wrong method names the allowed ones (405)."""
    err = CouncilError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
    err.status, err.type = exc.status, "invalid_request_error"
    headers = {}
    routing = request.match_info.http_exception is exc  # raised by the router, not by a handler
    if routing and isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        err.message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}"
        headers["Allow"] = ", ".join(allowed)
    elif routing and exc.status == 404 and (request.path + "/").startswith("/v1/"):
        err.code = "unknown_url"
        err.message = (f"Invalid URL ({request.method} {request.path}): Council serves "
                       f"{', '.join(endpoints(request.app))}")
    response = error_response(err)
    response.headers.update(headers)
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure leaves as an OpenAI-style ``{"error": {...}}``; nothing leaks a traceback. An unexpected
    exception is logged once, with its traceback, under a request id that the 500 answer also carries."""
    try:
        return await handler(request)
    except CouncilError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
            request.app[keys.STATS].errors.labels(str(exc.status)).inc()
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[keys.SETTINGS].server.max_body_bytes
        return error_response(PayloadTooLargeError(f"request body exceeds server.max_body_bytes ({limit} bytes)"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(request, exc)
    except Exception:  # noqa: BLE001 - logged with its traceback; the client gets JSON, not text/plain
        request_id = f"req_{secrets.token_hex(8)}"
        log.exception("%s %s failed unexpectedly (request id %s)", request.method, request.path, request_id)
        request.app[keys.STATS].errors.labels("500").inc()
        err = CouncilError(f"internal error; the server log has the details under request id {request_id}",
                           code="internal_error")
        return web.json_response(err.to_openai(), status=500, headers={"x-request-id": request_id})


@web.middleware
async def startup_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Until the models and stores have loaded, requests that need them wait (``/livez``, ``/readyz``,
    ``/health``, the pages, their static files and ``/v1/loop/*`` answer at once); if loading failed, they get
    a 503 that says why."""
    startup = request.app[keys.STARTUP]
    routed = request.match_info.http_exception is None  # an unknown path or method is answered at once
    if not startup.ready and routed and request.path not in STARTUP_PATHS \
            and not request.path.startswith(STARTUP_PREFIXES):
        limit = request.app[keys.SETTINGS].server.request_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                await startup.done.wait()
        except TimeoutError as exc:
            raise StartingError(f"the server is still loading its models after {limit:g} s; retry shortly") from exc
        if startup.error:
            raise StartingError(f"the server could not start: {startup.error}", code="startup_failed")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    api_key = request.app[keys.SETTINGS].server.api_key
    if api_key and not is_open(request.path):
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        given_key = token.strip().encode("utf-8", "surrogateescape")  # headers may hold any bytes
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_key, api_key.encode()):
            raise AuthenticationError("missing or wrong bearer token: send 'Authorization: Bearer <server.api_key>'")
    return await handler(request)
