"""``POST /v1/embeddings``: OpenAI's embeddings endpoint, served by the memory's own sentence embedder.

Every model name that ``GET /v1/models`` lists (and ``council``) is answered by the same embedder, the one
Council's memory recalls with (all-MiniLM-L6-v2: 384 numbers per text, L2-normalised, so a dot product is the
cosine similarity); an unknown name is a 404 ``model_not_found``, as in chat. The request is
``EmbeddingRequest`` and the reply ``CreateEmbeddingResponse`` (council/server/protocol/embeddings.py, which
says what is accepted: text only, ``encoding_format`` float or base64, ``dimensions`` only the embedder's own).

The embedder reads at most its ``max_seq_length`` word pieces (256) of each text and ignores the rest, as
sentence-transformers does. ``usage.prompt_tokens`` counts the word pieces it read: each text cut by the
embedder's own tokenizer, ``[CLS]``/``[SEP]`` included, capped at that length (whitespace-separated words when
the model folder has no ``tokenizer.json``). The texts are embedded and counted in a worker thread, never on
the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from council.core.errors import RequestTimeoutError
from council.memory.embedder import Embedder
from council.server import keys
from council.server.protocol.base import parse
from council.server.protocol.embeddings import (
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingUsage,
)
from council.server.validation import COUNCIL_MODEL


@functools.lru_cache(maxsize=4)
def _tokenizer(model_path: Path) -> Any:
    """The embedder's tokenizer cutting as it does (None when the folder has no ``tokenizer.json``)."""
    from tokenizers import Tokenizer

    if not (model_path / "tokenizer.json").is_file():
        return None
    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    try:
        max_len = json.loads((model_path / "sentence_bert_config.json").read_text()).get("max_seq_length", 512)
    except (OSError, ValueError):
        max_len = 512
    tokenizer.enable_truncation(max_length=int(max_len))
    tokenizer.no_padding()
    return tokenizer


def embed_and_count(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, int]:
    """(vectors, prompt tokens) for ``texts``; blocking, so run it in a worker thread."""
    vectors = embedder.embed(texts)
    tokenizer = _tokenizer(embedder.model_path)
    if tokenizer is None:
        return vectors, sum(len(text.split()) for text in texts)
    return vectors, sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts))


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def embeddings(request: web.Request) -> web.Response:
    body = parse(EmbeddingRequest, await request.read())
    embedder = request.app[keys.SENTENCE_MODEL]
    body.check_dimensions(embedder.dim)
    model = body.model or COUNCIL_MODEL
    request.app[keys.SERVICE].check_model(model)
    limit = request.app[keys.SETTINGS].server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            vectors, tokens = await asyncio.to_thread(embed_and_count, embedder, body.texts)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"no embeddings within server.request_timeout_seconds ({limit:g} s)") from exc
    encoding_format = body.encoding_format or "float"
    reply = CreateEmbeddingResponse(
        data=[Embedding(index=i, embedding=encode(vector, encoding_format)) for i, vector in enumerate(vectors)],
        model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
    return web.json_response(reply.dump())
