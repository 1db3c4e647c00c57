"""``POST /v1/completions``: OpenAI's legacy text-completion endpoint, answered by the council.

The prompt is NOT continued as raw text: it is answered as one user message by the council, exactly as
``/v1/chat/completions`` answers ``[{"role": "user", "content": prompt}]`` (memory recall, the heads'
confidence, the record written before the reply, the ``council`` field and the ``x-council-*`` headers), and
the answer is sent back in the ``text_completion`` shape (``id`` ``cmpl-<record id>``, ``choices[].text``).

The request is ``CompletionRequest`` and the replies ``Completion`` / ``CompletionChunk``
(council/server/protocol/completions.py, which says what is accepted and refused); an unset ``max_tokens``
means the server's ``model.max_new_tokens``, not OpenAI's 16. Streamed, the answer comes
as ``text_completion`` chunks and ``data: [DONE]``, live or decided as ``council.stream_mode`` says
(council/server/streaming.py explains the two).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from council.core.errors import CouncilError, RequestTimeoutError
from council.memory.schema import new_record_id
from council.server import keys
from council.server.protocol.base import parse
from council.server.protocol.chat_reply import Usage
from council.server.protocol.completions import Completion, CompletionChoice, CompletionRequest
from council.server.service import Answer
from council.server.streaming import Sse, council_field, council_headers, pieces, usage
from council.server.validation import ChatRequest

log = logging.getLogger(__name__)


def parse_completion_request(raw: bytes) -> ChatRequest:
    """The completion request as the chat request the council answers; raises InvalidRequestError."""
    return parse(CompletionRequest, raw).to_chat()


def choice(piece: str, finish: str | None = None) -> dict[str, Any]:
    """A ``text_completion`` chunk's choice (the chunks themselves: ``council/server/streaming.py`` ``Sse``)."""
    return CompletionChoice(text=piece, finish_reason=finish).dump()


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
    reply = Completion(id=f"cmpl-{answer.record.id}", created=int(time.time()), model=chat.model,
                       choices=[CompletionChoice(text=winner.text, finish_reason=winner.finish_reason)],
                       usage=Usage(**usage(winner.usage)), council=council_field(answer))
    return web.json_response(reply.dump(), headers=council_headers(answer))
