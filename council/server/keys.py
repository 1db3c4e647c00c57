"""Typed keys for what the app holds (aiohttp ``web.AppKey``)."""

from aiohttp import web

from council.core.config import Settings
from council.engine.base import ServingEngine
from council.memory.embedder import BatchingEmbedder, Embedder
from council.memory.responses import ResponseStore
from council.memory.store import MemoryStore
from council.routing.prompts import PromptStore
from council.server.service import ChatService
from council.server.startup import Startup
from council.server.stats import ServerStats

SETTINGS = web.AppKey("settings", Settings)
PROMPTS = web.AppKey("prompts", PromptStore)
STATS = web.AppKey("stats", ServerStats)
LOCAL = web.AppKey("engine", ServingEngine)  # serves local/* models: in process or on vLLM
MEMORY = web.AppKey("memory", MemoryStore)
SENTENCE_MODEL = web.AppKey("sentence_model", Embedder)  # shared by memory and adapter scopes
EMBEDDER = web.AppKey("embedder", BatchingEmbedder)
SERVICE = web.AppKey("service", ChatService)
STARTUP = web.AppKey("startup", Startup)  # models and stores load after the port is bound
RESPONSES = web.AppKey("responses", ResponseStore)  # stored /v1/responses answers (council/memory/responses.py)
