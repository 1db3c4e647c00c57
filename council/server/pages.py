"""The web pages and the loop's JSON endpoints.

* ``GET /``: the chat page; ``GET /loop``: what the nightly loop learned. Both are jinja2 shells
  (``web/templates``) plus plain JavaScript (``web/static``); they hold no data and need no API key, since
  the data comes from the ``/v1/...`` calls their scripts make with the key.
* ``GET /v1/loop/adapters``: every adapter version, newest first, with its state, losses and what it learned;
  ``GET /v1/loop/adapters/{version}`` one of them; ``GET /v1/loop/adapters/{version}/loss.png`` its training
  curve; ``GET /v1/loop/night``: the last night (summary, harvest, what was learned, deploy, rollback).

The loop data is read from the files the stages write (``council/server/loop_data.py``), off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from council.core.errors import NotFoundError
from council.server import keys, loop_data

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_DIR = WEB_DIR / "static"
ASSETS = ("style.css", "api.js", "chat.js", "loop.js", "loop_nights.js", "vendor/marked.umd.js", "vendor/purify.min.js",
          "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")

ENV = Environment(loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=select_autoescape(default=True),
                  trim_blocks=True, lstrip_blocks=True)

# Model output is untrusted: besides DOMPurify in the page, scripts, styles and images come only from here.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _asset_urls() -> dict[str, str]:
    """Each asset's URL, relative (the pages work under a path prefix too), with a hash of its content so a
    browser never runs a stale script after an upgrade. Computed once per process: the files ship with it."""
    return {name: f"static/{name}?v={hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]}"
            for name in ASSETS}


def _render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(assets=_asset_urls(), **context)


def _static_file(name: str) -> Path:
    """``web/static/<name>``; NotFoundError for anything outside that folder, hidden or missing."""
    try:
        path = (STATIC_DIR / name).resolve()
        found = (path.is_relative_to(STATIC_DIR) and not any(part.startswith(".") for part in Path(name).parts)
                 and path.is_file())
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise NotFoundError(f"no static file {name!r}", code="not_found")
    return path


async def static_file(request: web.Request) -> web.FileResponse:
    """``GET /static/{name}``: the pages' scripts, styles and vendored libraries (no key needed)."""
    path = await asyncio.to_thread(_static_file, request.match_info["name"])
    return web.FileResponse(path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def _page(request: web.Request, template: str, **context: Any) -> web.Response:
    html = await asyncio.to_thread(_render, template, **context)
    return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)


async def chat_page(request: web.Request) -> web.Response:
    """``GET /``: conversations kept in the browser, streamed answers, feedback under each answer."""
    return await _page(request, "chat.html", page="chat", title="Chat")


async def loop_page(request: web.Request) -> web.Response:
    """``GET /loop``: the adapters, the last night, the live adapter's window and the failures waiting."""
    return await _page(request, "loop.html", page="loop", title="The nightly loop")


async def loop_adapters(request: web.Request) -> web.Response:
    """``GET /v1/loop/adapters``: ``{object: "list", data: [...], current, previous, updated_at}``."""
    paths = request.app[keys.SETTINGS].paths
    return web.json_response(await asyncio.to_thread(loop_data.adapters, paths))


async def loop_adapter(request: web.Request) -> web.Response:
    """``GET /v1/loop/adapters/{version}``: one version; 404 for a bad name or an unknown one."""
    version = request.match_info["version"]
    found = await asyncio.to_thread(loop_data.adapter, request.app[keys.SETTINGS].paths, version)
    if found is None:
        raise NotFoundError(f"no adapter version {version!r}; list them with GET /v1/loop/adapters",
                            code="adapter_not_found", param="version")
    return web.json_response(found)


async def loop_loss_png(request: web.Request) -> web.Response:
    """``GET /v1/loop/adapters/{version}/loss.png``: the version's training curve; 404 when there is none."""
    image = await asyncio.to_thread(loop_data.loss_png, request.app[keys.SETTINGS].paths,
                                    request.match_info["version"])
    return web.Response(body=image, content_type="image/png",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def loop_night(request: web.Request) -> web.Response:
    """``GET /v1/loop/night``: ``{night, harvest, trained, learned, deploy, rollback}``; null parts mean that
    stage has not run yet."""
    paths = request.app[keys.SETTINGS].paths
    return web.json_response(await asyncio.to_thread(loop_data.night, paths))


async def loop_nights(request: web.Request) -> web.Response:
    """``GET /v1/loop/nights``: ``{data: [...]}``, one entry a night, oldest first (``cron/history.py``): failures,
    corrections, seconds by stage, tonight's probes and every earlier night's probes still answered."""
    paths = request.app[keys.SETTINGS].paths
    return web.json_response(await asyncio.to_thread(loop_data.nights, paths))
