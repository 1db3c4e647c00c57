"""``council serve``: bind the port, say so, load the models behind it, serve until interrupted.

    council serve [--host H] [--port P]        # defaults: server.host 127.0.0.1, server.port 8000

A busy port, a bad host or port and a missing model folder are one line on stderr and exit 2, before any model
loads; "ready on URL" is logged once the server can answer (``council/server/startup.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import socket
import sys
from pathlib import Path

from council.core import exitcodes
from council.core.config import Settings
from council.core.errors import CouncilError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council serve", description="Run the chat server.",
                                     epilog="Also: --home DIR, --config FILE, --log-level LEVEL (before or after "
                                            "'serve').")
    parser.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to bind (default: server.port, 8000)")
    parser.add_argument("--engine", choices=["local", "vllm"],
                        help="what serves local/* models (default: engine.kind, local): 'vllm' uses engine.urls, or "
                             "starts one vLLM server from engine.vllm_python")
    return parser


def cli(argv: list[str], settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; exit 0, 2 for bad flags or an unusable port or model, 1 when loading failed."""
    args = _parser().parse_args(argv)
    changes = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    try:
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, **changes))
        if args.engine:
            settings = dataclasses.replace(settings, engine=dataclasses.replace(settings.engine, kind=args.engine))
        if settings.engine.kind == "vllm" and not settings.engine.urls:
            from council.engine.vllm.process import vllm_python

            vllm_python(settings.engine)  # a missing vLLM install is one line, before anything loads
    except ValueError as exc:
        sys.stderr.write(f"council: configuration error: {exc}\n")
        return exitcodes.USAGE
    return _serve(settings)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket before anything loads, so a busy port is one line, not a traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror} (another server there? pick another "
                         "--port)") from exc
    sock.listen(128)
    return sock


def _check_model_source(settings: Settings) -> None:
    """A missing base model is one line before anything loads (hub ids are left to the loader)."""
    from council.engine.model_files import embedded_gguf_path

    source = settings.model.source
    if not source:
        try:
            embedded_gguf_path()
        except CouncilError as exc:
            raise ValueError(exc.message) from exc
    elif source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise ValueError(f"model.source {source} is not a folder; point it at a model folder or a hub id")


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv: faster sockets and scheduling) where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _serve(settings: Settings) -> int:
    try:
        _check_model_source(settings)
        sock = _listen(settings.server.host, settings.server.port)  # before the slow imports below
    except ValueError as exc:
        sys.stderr.write(f"council: {exc}\n")
        return exitcodes.USAGE
    from aiohttp import web

    from council.server import keys
    from council.server.access_log import AccessLogger
    from council.server.app import create_app

    log = logging.getLogger("council.serve")
    url = f"http://{settings.server.host}:{settings.server.port}"
    app = create_app(settings, background_start=True)
    startup = app[keys.STARTUP]
    startup.on_ready.append(lambda: log.info("ready on %s (home %s, %.1f s to load)", url, settings.home,
                                             startup.ready_seconds))
    startup.on_failure.append(lambda error: (log.error("could not start: %s", error),
                                             signal.raise_signal(signal.SIGINT)))
    log.info("loading models; %s/health says \"starting\" until they are ready", url)
    # handler_cancellation: a client that hangs up cancels its handler, which stops its generation
    web.run_app(app, sock=sock, print=None, access_log_class=AccessLogger,
                access_log=logging.getLogger("council.access"), handler_cancellation=True, loop=event_loop())
    return exitcodes.FAILURE if startup.error else exitcodes.OK
