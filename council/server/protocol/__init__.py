"""Typed OpenAI protocol models: each endpoint's request and reply, declared once (pydantic, strict, unknown keys
refused at every level), as vLLM's OpenAI server declares its protocol.

``ENDPOINTS`` lists them for the docs' generated API reference (``docs/gen_api.py``) and the tests; the
handlers in ``council/server/openai/`` read requests with ``base.parse`` and build replies through the models.
Entries name their models as text (``model("chat:ChatCompletionRequest")`` imports one) so that a handler can
import one endpoint's models alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    request: str | None  # "module:Class" under council.server.protocol; None when the request has no body
    reply: str
    stream: str | None = None  # the model of one streamed event, when the endpoint streams
    query: str | None = None  # the model of the query string, when the endpoint reads one


ENDPOINTS = (
    Endpoint("POST", "/v1/chat/completions", "A chat answered by the council.", "chat:ChatCompletionRequest",
             "chat_reply:ChatCompletion", "chat_reply:ChatCompletionChunk"),
    Endpoint("POST", "/v1/responses", "The Responses API over the same council.", "responses:ResponseCreateRequest",
             "responses_reply:Response"),
    Endpoint("GET", "/v1/responses/{response_id}/input_items", "A stored response's input items.", None,
             "responses_items:ResponseItemList", query="responses_reply:InputItemsQuery"),
    Endpoint("POST", "/v1/completions", "A prompt answered by the council, as a text completion.",
             "completions:CompletionRequest", "completions:Completion", "completions:CompletionChunk"),
    Endpoint("POST", "/v1/embeddings", "Vectors from the memory's embedder.", "embeddings:EmbeddingRequest",
             "embeddings:CreateEmbeddingResponse"),
)


def model(name: str) -> Any:
    """``"chat:ChatCompletionRequest"`` -> the class."""
    module, _, cls = name.partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)
