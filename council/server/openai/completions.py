"""``POST /v1/completions``: OpenAI's legacy text-completion endpoint, answered by the council.

The prompt is NOT continued as raw text: it is answered as one user message by the council, exactly as
``/v1/chat/completions`` answers ``[{"role": "user", "content": prompt}]`` (memory recall, the heads'
confidence, the record written before the reply, the ``council`` field and the ``x-council-*`` headers), and
the answer is sent back in the ``text_completion`` shape (``id`` ``cmpl-<record id>``, ``choices[].text``).

``prompt`` is a string or a list holding ONE string; token-id prompts and several prompts are refused by name.
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``n`` (1 only), the penalties, ``logit_bias``,
``user``, ``stream`` and ``stream_options`` are checked as chat checks them (council/server/validation.py);
an unset ``max_tokens`` means the server's ``model.max_new_tokens``, not OpenAI's 16. ``echo``, ``suffix``,
``best_of`` and ``logprobs`` are refused when set to anything but their defaults. Streamed, the answer comes
as ``text_completion`` chunks and ``data: [DONE]``, live or decided as ``council.stream_mode`` says
(council/server/streaming.py explains the two).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from council.core.errors import CouncilError, InvalidRequestError, RequestTimeoutError
from council.memory.schema import new_record_id
from council.server import keys
from council.server.openai.body import is_token_ids, load_body
from council.server.service import Answer
from council.server.streaming import Sse, council_field, council_headers, pieces, usage
from council.server.validation import ChatRequest, parse_chat_request

log = logging.getLogger(__name__)

PASSED = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "stream_options", "user",
          "frequency_penalty", "presence_penalty", "logit_bias")  # checked by the chat parser, same names
REFUSED = {  # name: (defaults, why)
    "echo": ((None, False), "echoing the prompt is not supported: the council answers it as a chat message"),
    "suffix": ((None, ""), "insertion after a suffix is not supported"),
    "best_of": ((None, 1), "best_of is not supported: the council answers each request once"),
    "logprobs": ((None,), "logprobs are not supported on /v1/completions; use /v1/chat/completions"),
}
KNOWN = (*PASSED, "prompt", *REFUSED)


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequestError("'prompt' is required", param="prompt", code="missing_field")
    if is_token_ids(prompt):
        raise InvalidRequestError("'prompt' holds token ids: only text prompts are supported", param="prompt",
                                  code="unsupported_input")
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequestError(f"'prompt' holds {len(prompt)} prompts; Council answers one prompt per request",
                                      param="prompt", code="unsupported_parameter")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError("'prompt' must be a string (or a list of one string)", param="prompt",
                                  code="invalid_type")
    if not prompt.strip():
        raise InvalidRequestError("'prompt' must not be empty", param="prompt", code="invalid_value")
    return prompt


def parse_completion_request(raw: bytes) -> ChatRequest:
    """The completion request as the chat request the council answers; raises InvalidRequestError."""
    body = load_body(raw, KNOWN)
    for name, (defaults, why) in REFUSED.items():
        if not any(body.get(name) == default and type(body.get(name)) is type(default) for default in defaults):
            raise InvalidRequestError(f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter")
    chat = {name: body[name] for name in PASSED if name in body}
    chat["messages"] = [{"role": "user", "content": _prompt(body)}]
    return parse_chat_request(json.dumps(chat).encode())


def choice(piece: str, finish: str | None = None) -> dict[str, Any]:
    """A ``text_completion`` chunk's choice (the chunks themselves: ``council/server/streaming.py`` ``Sse``)."""
    return {"text": piece, "logprobs": None, "finish_reason": finish}


async def _answer(request: web.Request, chat: ChatRequest, user: str | None, session: str | None,
                  **live: Any) -> Answer:
    """The council's answer, within ``server.request_timeout_seconds``; a hang-up stops it unrecorded."""
    limit = request.app[keys.SETTINGS].server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            return await request.app[keys.SERVICE].answer(chat, user, session, **live)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"no answer within server.request_timeout_seconds ({limit:g} s)") from exc
    except asyncio.CancelledError:
        request.app[keys.STATS].cancelled.inc()
        raise


async def _stream_live(request: web.Request, chat: ChatRequest, user: str | None,
                       session: str | None) -> web.StreamResponse:
    """Agent-0's answer as it is made; an error before the first piece is a JSON error, after it an
    ``{"error": ...}`` event ends the stream."""
    record_id = new_record_id()
    sse = Sse(request, chat, f"cmpl-{record_id}", "text_completion", {"x-council-record-id": record_id})

    async def on_text(piece: str) -> None:
        await sse.choice(choice(piece))

    try:
        answer = await _answer(request, chat, user, session, on_text=on_text, record_id=record_id)
    except CouncilError as exc:
        if not sse.response.prepared:
            raise
        return await sse.fail(exc, record_id)
    return await sse.end(answer, choice("", answer.decision.winner.finish_reason))


async def completions(request: web.Request) -> web.StreamResponse:
    chat = parse_completion_request(await request.read())
    user = chat.user or request.headers.get("x-council-user")
    session = request.headers.get("x-council-session")
    if chat.stream and request.app[keys.SETTINGS].council.stream_mode == "live":
        request.app[keys.SERVICE].check_model(chat.model)  # a bad model is a JSON 404, not a broken stream
        return await _stream_live(request, chat, user, session)
    answer = await _answer(request, chat, user, session)
    if chat.stream:
        sse = Sse(request, chat, f"cmpl-{answer.record.id}", "text_completion", council_headers(answer))
        for piece, _ in pieces(answer):
            await sse.choice(choice(piece))
        return await sse.end(answer, choice("", answer.decision.winner.finish_reason))
    winner = answer.decision.winner
    body = {"id": f"cmpl-{answer.record.id}", "object": "text_completion", "created": int(time.time()),
            "model": chat.model, "choices": [dict(choice(winner.text, winner.finish_reason), index=0)],
            "usage": usage(winner.usage), "council": council_field(answer)}
    return web.json_response(body, headers=council_headers(answer))
