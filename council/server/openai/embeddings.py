"""``POST /v1/embeddings``: OpenAI's embeddings endpoint, served by the memory's own sentence embedder.

Every model name that ``GET /v1/models`` lists (and ``council``) is answered by the same embedder, the one
Council's memory recalls with (all-MiniLM-L6-v2: 384 numbers per text, L2-normalised, so a dot product is the
cosine similarity); an unknown name is a 404 ``model_not_found``, as in chat. ``input`` is a string or a list
of up to ``MAX_INPUTS`` non-empty strings; token-id arrays are refused (only text is supported).
``encoding_format`` is ``"float"`` (default) or ``"base64"`` (the little-endian float32 bytes, as OpenAI sends
them); ``dimensions`` is allowed only at the embedder's own size (it cannot shorten its vectors).

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

from council.core.errors import InvalidRequestError, RequestTimeoutError
from council.memory.embedder import Embedder
from council.server import keys
from council.server.openai.body import is_token_ids, load_body
from council.server.validation import COUNCIL_MODEL

MAX_INPUTS = 2048  # as OpenAI
KNOWN = ("input", "model", "encoding_format", "dimensions", "user")
ENCODINGS = ("float", "base64")


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def parse_inputs(value: Any) -> list[str]:
    """``input`` as a list of texts; raises InvalidRequestError naming what to fix."""
    if value is None:
        raise _bad("'input' is required: a string or a list of strings", "input", "missing_field")
    if is_token_ids(value):
        raise _bad("'input' holds token ids: only text input is supported; send a string or a list of strings",
                   "input", "unsupported_input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise _bad("'input' must be a string or a list of strings", "input", "invalid_type")
    if not texts:
        raise _bad("'input' must not be an empty list", "input")
    if len(texts) > MAX_INPUTS:
        raise _bad(f"'input' holds {len(texts)} texts; at most {MAX_INPUTS} per request", "input")
    for i, text in enumerate(texts):
        where = "input" if isinstance(value, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise _bad(f"{where} must be a string, got {type(text).__name__}", where, "invalid_type")
        if not text.strip():
            raise _bad(f"{where} must not be empty", where)
    return texts


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
    body = load_body(await request.read(), KNOWN)
    model = COUNCIL_MODEL if body.get("model") is None else body["model"]
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model", "invalid_type")
    encoding_format = "float" if body.get("encoding_format") is None else body["encoding_format"]
    if encoding_format not in ENCODINGS:
        raise _bad(f"'encoding_format' must be 'float' or 'base64', got {encoding_format!r}", "encoding_format")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("'user' must be a string", "user", "invalid_type")
    texts = parse_inputs(body.get("input"))
    embedder = request.app[keys.SENTENCE_MODEL]
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or dimensions != embedder.dim):
        raise _bad(f"'dimensions' must be {embedder.dim} (the embedder's size; it cannot shorten its vectors), "
                   f"got {dimensions!r}", "dimensions")
    request.app[keys.SERVICE].check_model(model)
    limit = request.app[keys.SETTINGS].server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            vectors, tokens = await asyncio.to_thread(embed_and_count, embedder, texts)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"no embeddings within server.request_timeout_seconds ({limit:g} s)") from exc
    data = [{"object": "embedding", "index": i, "embedding": encode(vector, encoding_format)}
            for i, vector in enumerate(vectors)]
    return web.json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
