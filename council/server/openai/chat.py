"""``POST /v1/chat/completions``: a chat request checked (``council/server/validation.py``), answered by the
council (``council/server/service.py``) and sent as OpenAI's ``chat.completion``, or streamed
(``council/server/streaming.py``: live, or decided when the answer may be tool calls or carries logprobs)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from council.core.errors import RequestTimeoutError
from council.server import keys
from council.server.protocol.chat_reply import ChatCompletion
from council.server.streaming import council_field, council_headers, entry, stream_decided, stream_live, usage
from council.server.validation import ChatRequest, parse_chat_request


async def chat_completions(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    chat: ChatRequest = parse_chat_request(raw)
    user = chat.user or request.headers.get("x-council-user")
    session = request.headers.get("x-council-session")
    settings = request.app[keys.SETTINGS]
    if chat.stream and settings.council.stream_mode == "live" and not chat.logprobs and not chat.may_call_tools:
        request.app[keys.SERVICE].check_model(chat.model)  # a bad model is a JSON 404, not a broken stream
        return await stream_live(request, chat, user, session)
    limit = settings.server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            answer = await request.app[keys.SERVICE].answer(chat, user, session)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"no answer within server.request_timeout_seconds ({limit:g} s)") from exc
    except asyncio.CancelledError:  # the client hung up: its generation was stopped, nothing recorded
        request.app[keys.STATS].cancelled.inc()
        raise
    if chat.stream:
        return await stream_decided(request, chat, answer)
    winner = answer.decision.winner
    message: dict[str, Any] = {"role": "assistant", "content": winner.text if not winner.tool_calls else None,
                               "refusal": None}
    if winner.tool_calls:
        message["tool_calls"] = winner.tool_calls
    logprobs = None
    if chat.logprobs and winner.logprobs is not None:
        logprobs = {"content": [entry(t, chat.top_logprobs) for t in winner.token_dicts()], "refusal": None}
    body = ChatCompletion.model_validate({
        "id": f"chatcmpl-{answer.record.id}", "object": "chat.completion", "created": int(time.time()),
        "model": chat.model, "usage": usage(winner.usage), "council": council_field(answer),
        "choices": [{"index": 0, "message": message, "finish_reason": winner.finish_reason, "logprobs": logprobs}]})
    return web.json_response(body.dump(), headers=council_headers(answer))
