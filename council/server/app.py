"""The aiohttp application factory. ``council serve`` runs it; tests build it with ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from council.core.config import Settings
from council.engine.provider import PROVIDER, register_local_provider, register_provider, unregister_provider
from council.memory.embedder import BatchingEmbedder, Embedder
from council.memory.store import MemoryStore
from council.routing.prompts import PromptStore
from council.routing.router import Router
from council.server import keys
from council.server.handlers import live_adapter, note_adapter
from council.server.middleware import auth_middleware, errors_middleware, startup_middleware
from council.server.openai.responses import responses_ctx
from council.server.routes import setup_routes
from council.server.service import ChatService
from council.server.startup import Startup
from council.server.stats import ServerStats

log = logging.getLogger(__name__)


def uses_local_models(settings: Settings) -> bool:
    c = settings.council
    models = [c.agent0, *c.heads.values(), *(m for chain in c.fallbacks.values() for m in chain)]
    return any(m.startswith(f"{PROVIDER}/") for m in models)


def load_provider(spec: str) -> object:
    module_name, _, class_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


async def local_model_ctx(app: web.Application) -> AsyncIterator[None]:
    """Register the configured custom providers and, when any model is ``local/*``, the embedded model."""
    settings = app[keys.SETTINGS]
    extra = {name: load_provider(spec) for name, spec in settings.providers.items()}
    for name, handler in extra.items():
        register_provider(name, handler)
    provider = None
    if uses_local_models(settings) and settings.engine.kind == "vllm":
        from council.engine.vllm.provider import VllmProvider

        provider = VllmProvider(settings, app[keys.SENTENCE_MODEL].embed)
        try:
            await provider.start()
        except BaseException:
            await asyncio.to_thread(provider.close)
            raise
        register_provider(PROVIDER, provider)
        app[keys.LOCAL] = provider
    elif uses_local_models(settings):
        provider = await register_local_provider(settings, app[keys.SENTENCE_MODEL].embed)
        app[keys.LOCAL] = provider
    yield
    for name, handler in extra.items():
        unregister_provider(name, handler)
    if provider is not None:
        unregister_provider(PROVIDER, provider)
        await asyncio.to_thread(provider.close)


async def sentence_model_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sentence embedder: memory lookups and adapter scopes (council/engine/adapter_scope.py) share it."""
    settings = app[keys.SETTINGS]
    if settings.model.torch_threads:
        import torch

        torch.set_num_threads(settings.model.torch_threads)
    app[keys.SENTENCE_MODEL] = await asyncio.to_thread(Embedder, runtime=settings.memory.embedder_runtime)
    yield


async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    embedder = app[keys.SENTENCE_MODEL]
    memory = await asyncio.to_thread(MemoryStore.open, settings.paths.memory, embedder.dim)
    app[keys.EMBEDDER] = BatchingEmbedder(embedder)
    app[keys.MEMORY] = memory
    engine = app.get(keys.LOCAL)
    app[keys.SERVICE] = ChatService(settings, Router(settings, app[keys.PROMPTS]), memory, app[keys.EMBEDDER],
                                    app[keys.STATS], lambda: live_adapter(app),
                                    getattr(engine, "arriving", contextlib.nullcontext))
    app[keys.STATS].memory_size.set(memory.count())
    yield
    await app[keys.SERVICE].close()
    await app[keys.EMBEDDER].close()
    await asyncio.to_thread(memory.close)


async def adapter_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Poll ``loras/current``; a new target is loaded between generations, never under one."""
    provider = app.get(keys.LOCAL)
    app[keys.STATS].adapter_live(live_adapter(app), provider.adapter_changed_at if provider else None)
    if provider is None:
        yield
        return

    async def watch() -> None:
        interval = app[keys.SETTINGS].server.adapter_poll_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                if provider.link_changed():
                    await provider.sync_adapter()
                note_adapter(app)
            except Exception:  # noqa: BLE001 - logged; the watcher must outlive any one bad poll
                log.exception("adapter watch: poll failed; trying again in %.2f s", interval)

    task = asyncio.create_task(watch(), name="council-adapter-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


BACKGROUND_START = web.AppKey("background_start", bool)
RESOURCES = (sentence_model_ctx, local_model_ctx, memory_ctx, responses_ctx,  # opened in order
             adapter_watch_ctx)


async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open RESOURCES in a background task, so the port answers (``/livez``, ``/health``) while they load;
    close whatever was opened when the app stops."""
    startup = app[keys.STARTUP]
    stack = contextlib.AsyncExitStack()

    async def load() -> None:
        try:
            for ctx in RESOURCES:
                await stack.enter_async_context(contextlib.asynccontextmanager(ctx)(app))
        except Exception as exc:  # noqa: BLE001 - reported once, by the callbacks and on every request
            log.debug("start-up failed", exc_info=True)
            startup.finish(f"{type(exc).__name__}: {exc}")
            return
        startup.finish()

    task = asyncio.create_task(load(), name="council-startup")
    if not app[BACKGROUND_START]:
        await task  # embedded use and tests: serve only once loaded
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stack.aclose()


def create_app(settings: Settings, background_start: bool = False) -> web.Application:
    """Build the server for ``settings``; models and stores open with the app and close with it. With
    ``background_start`` (``council serve``) they load after the port serves (``council/server/startup.py``);
    without, the app serves only once they have loaded."""
    settings.paths.ensure()
    app = web.Application(client_max_size=settings.server.max_body_bytes,
                          middlewares=[errors_middleware, auth_middleware, startup_middleware])  # 401 first
    app[keys.SETTINGS] = settings
    app[keys.PROMPTS] = PromptStore(settings.prompts_dir)
    app[keys.STATS] = ServerStats(settings.paths.logs / "loop_metrics.json")
    app[keys.STARTUP] = Startup()
    app[BACKGROUND_START] = background_start
    app.cleanup_ctx.append(resources_ctx)
    setup_routes(app)
    return app
