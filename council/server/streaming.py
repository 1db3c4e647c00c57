"""Chat answers on the wire: OpenAI's chunk and field shapes, and the two ways a stream is sent.

``council.stream_mode = "live"`` (default; ``stream_live``): Agent-0's answer goes out token by token as the
model makes it, so the first token costs what the model's first token costs; the heads are not asked, and a
low-confidence answer is recorded as a failure for the night. Only the record id is known up front
(``x-council-record-id``); the confidence, route and adapter come in the last chunk's ``council`` field, sent
once the record is durable, then ``[DONE]``. A client that asks for logprobs gets the decided stream (they
come with each token there).

``"decided"`` (``stream_decided``): the council decides first (heads included), then the chosen answer is
cut at token boundaries and sent at once; its first token arrives when the whole answer is done.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
from typing import Any

from aiohttp import web

from council.core.errors import CouncilError, RequestTimeoutError
from council.memory.schema import new_record_id
from council.server import keys
from council.server.service import Answer
from council.server.validation import ChatRequest

log = logging.getLogger(__name__)


def council_field(answer: Answer) -> dict[str, Any]:
    r = answer.record
    return {"record_id": r.id, "confidence": round(r.confidence, 4), "success": r.success, "route": r.route,
            "adapter": r.adapter, "model": r.model, "context_ids": r.context_ids,
            "skipped": answer.decision.skipped}


def council_headers(answer: Answer) -> dict[str, str]:
    return {"x-council-record-id": answer.record.id, "x-council-confidence": f"{answer.record.confidence:.4f}"}


def usage(usage: dict[str, int]) -> dict[str, int]:
    return dict(usage, total_tokens=sum(usage.values()))


def entry(token: dict[str, Any], top: int) -> dict[str, Any]:
    """One token's logprobs as OpenAI sends it: at most ``top`` alternatives, most likely first."""
    alternatives = sorted(token.get("top_logprobs") or [], key=lambda t: -t["logprob"])[:top]
    return {"token": token["token"], "logprob": token["logprob"], "bytes": token.get("bytes"),
            "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes")}
                             for t in alternatives]}


def pieces(answer: Answer) -> list[tuple[str, list[dict[str, Any]]]]:
    """The answer cut at token boundaries, each piece with the logprobs of the tokens it holds. A token that
    holds part of a character rides with the piece that completes it (its raw ``bytes`` say where it ends).
    Without token data (or when it does not spell the answer), the answer is cut at words."""
    winner = answer.decision.winner
    tokens = winner.token_dicts()
    pieces: list[tuple[str, list[dict[str, Any]]]] = []
    if tokens and all(isinstance(t.get("bytes"), list) for t in tokens):
        decoder, held = codecs.getincrementaldecoder("utf-8")("replace"), []
        for token in tokens:
            held.append(token)
            text = decoder.decode(bytes(token["bytes"]))
            if text:
                pieces.append((text, held))
                held = []
        tail = decoder.decode(b"", final=True)
        if tail or held:
            pieces.append((tail, held))
        if "".join(text for text, _ in pieces) == winner.text:
            return pieces
    if tokens and "".join(t["token"] for t in tokens) == winner.text:
        return [(t["token"], [t]) for t in tokens]
    words = winner.text.split(" ")
    return [(w if i == 0 else " " + w, []) for i, w in enumerate(words)] if winner.text else []


async def stream_decided(request: web.Request, chat: ChatRequest, answer: Answer) -> web.StreamResponse:
    """SSE stream of the chosen answer; sent once the council has decided, so the headers carry its confidence.
    With ``stream_options.include_usage`` every chunk carries ``usage: null`` and a last chunk with no choices
    carries the usage, as OpenAI sends it."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **council_headers(answer)})
    await response.prepare(request)
    base = {"id": f"chatcmpl-{answer.record.id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": chat.model}
    if chat.include_usage:
        base["usage"] = None

    async def send(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, **extra: Any) -> None:
        chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
                     **extra)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    winner = answer.decision.winner
    await send({"role": "assistant", "content": "" if not winner.tool_calls else None})
    for index, call in enumerate(winner.tool_calls or []):  # as OpenAI streams a call: head, then arguments
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        await send({"tool_calls": [head]})
        await send({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
    for piece, tokens in pieces(answer) if not winner.tool_calls else []:
        logprobs = {"content": [entry(t, chat.top_logprobs) for t in tokens], "refusal": None} \
            if chat.logprobs and tokens else None
        await send({"content": piece}, logprobs=logprobs)
    await send({}, winner.finish_reason, council=council_field(answer))
    if chat.include_usage:
        chunk = dict(base, choices=[], usage=usage(winner.usage))
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def stream_live(request: web.Request, chat: ChatRequest, user: str | None,
                      session: str | None) -> web.StreamResponse:
    """SSE stream of Agent-0's answer as it is made (see the module docstring). An error before the first
    token is the usual JSON error; after it, an ``{"error": ...}`` event ends the stream."""
    record_id = new_record_id()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "x-council-record-id": record_id})
    base = {"id": f"chatcmpl-{record_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": chat.model, **({"usage": None} if chat.include_usage else {})}

    async def send(payload: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(payload)}\n\n".encode())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra)

    async def start() -> None:
        if not response.prepared:
            await response.prepare(request)
            await send(chunk({"role": "assistant", "content": ""}))

    async def on_text(piece: str) -> None:
        await start()
        await send(chunk({"content": piece}))

    limit = request.app[keys.SETTINGS].server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            answer = await request.app[keys.SERVICE].answer(chat, user, session, on_text=on_text, record_id=record_id)
    except asyncio.CancelledError:  # the client hung up: its generation was stopped, nothing recorded
        request.app[keys.STATS].cancelled.inc()
        raise
    except (TimeoutError, CouncilError) as exc:
        error = exc if isinstance(exc, CouncilError) else RequestTimeoutError(
            f"no answer within server.request_timeout_seconds ({limit:g} s)")
        if not response.prepared:
            raise error from exc
        log.warning("stream %s ended early: %s", record_id, error.message)
        await send(error.to_openai())
        await response.write_eof()
        return response
    await start()
    winner = answer.decision.winner
    await send(chunk({}, winner.finish_reason, council=council_field(answer)))
    if chat.include_usage:
        await send(dict(base, choices=[], usage=usage(winner.usage)))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
