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
from council.server.protocol.chat_reply import ChatCompletionChunk, CouncilInfo
from council.server.protocol.completions import CompletionChunk
from council.server.service import Answer
from council.server.validation import ChatRequest

log = logging.getLogger(__name__)


CHUNKS: dict[str, Any] = {"chat.completion.chunk": ChatCompletionChunk,  # object -> its reply model
                          "text_completion": CompletionChunk}


def council_field(answer: Answer) -> dict[str, Any]:
    r = answer.record
    return CouncilInfo(record_id=r.id, confidence=round(r.confidence, 4), success=r.success, route=r.route,
                       adapter=r.adapter, model=r.model, context_ids=r.context_ids,
                       skipped=answer.decision.skipped, stored=answer.stored).dump()


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


class Sse:
    """One answer as an SSE stream of OpenAI chunks, built here for every endpoint that streams them: each chunk
    is ``base`` (id, object, created, model, and ``usage: null`` when ``stream_options.include_usage`` asks)
    plus its ``choices``; the response starts with the first chunk written."""

    def __init__(self, request: web.Request, chat: ChatRequest, chunk_id: str, kind: str,
                 headers: dict[str, str]) -> None:
        self.request, self.chat = request, chat
        self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                    **headers})
        self.base = {"id": chunk_id, "object": kind, "created": int(time.time()), "model": chat.model,
                     **({"usage": None} if chat.include_usage else {})}
        self.model = CHUNKS.get(kind)

    async def write(self, payload: dict[str, Any] | str) -> None:
        """One event: ``[DONE]``, an error, or a chunk (checked against its reply model, when it has one)."""
        if not self.response.prepared:
            await self.response.prepare(self.request)
        if isinstance(payload, dict) and self.model is not None and "error" not in payload:
            payload = self.model.model_validate(payload).model_dump(mode="json", exclude_unset=True)
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await self.response.write(f"data: {data}\n\n".encode())

    async def choice(self, choice: dict[str, Any], **extra: Any) -> None:
        await self.write(dict(self.base, choices=[dict(choice, index=0)], **extra))

    async def end(self, answer: Answer, last: dict[str, Any]) -> web.StreamResponse:
        """The last choice with the ``council`` field (sent once the record is durable), the usage chunk when
        asked for, then ``[DONE]``."""
        await self.choice(last, council=council_field(answer))
        if self.chat.include_usage:
            await self.write(dict(self.base, choices=[], usage=usage(answer.decision.winner.usage)))
        await self.write("[DONE]")
        await self.response.write_eof()
        return self.response

    async def fail(self, error: CouncilError, record_id: str) -> web.StreamResponse:
        """An error after the first chunk: an ``{"error": ...}`` event ends the stream."""
        log.warning("stream %s ended early: %s", record_id, error.message)
        await self.write(error.to_openai())
        await self.response.write_eof()
        return self.response


def delta(content: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` choice."""
    return {"delta": content, "finish_reason": finish, "logprobs": logprobs}


async def stream_decided(request: web.Request, chat: ChatRequest, answer: Answer) -> web.StreamResponse:
    """SSE stream of the chosen answer; sent once the council has decided, so the headers carry its confidence.
    Tool calls go out as OpenAI streams them (a call's head with its id and name, then its arguments)."""
    sse = Sse(request, chat, f"chatcmpl-{answer.record.id}", "chat.completion.chunk", council_headers(answer))
    winner = answer.decision.winner
    await sse.choice(delta({"role": "assistant", "content": "" if not winner.tool_calls else None}))
    for index, call in enumerate(winner.tool_calls or []):
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        await sse.choice(delta({"tool_calls": [head]}))
        arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        await sse.choice(delta({"tool_calls": [arguments]}))
    for piece, tokens in pieces(answer) if not winner.tool_calls else []:
        logprobs = {"content": [entry(t, chat.top_logprobs) for t in tokens], "refusal": None} \
            if chat.logprobs and tokens else None
        await sse.choice(delta({"content": piece}, logprobs=logprobs))
    return await sse.end(answer, delta({}, winner.finish_reason))


async def stream_live(request: web.Request, chat: ChatRequest, user: str | None,
                      session: str | None) -> web.StreamResponse:
    """SSE stream of Agent-0's answer as it is made (see the module docstring). An error before the first
    token is the usual JSON error; after it, an ``{"error": ...}`` event ends the stream."""
    record_id = new_record_id()
    sse = Sse(request, chat, f"chatcmpl-{record_id}", "chat.completion.chunk", {"x-council-record-id": record_id})

    async def start() -> None:
        if not sse.response.prepared:
            await sse.choice(delta({"role": "assistant", "content": ""}))

    async def on_text(piece: str) -> None:
        await start()
        await sse.choice(delta({"content": piece}))

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
        if not sse.response.prepared:
            raise error from exc
        return await sse.fail(error, record_id)
    await start()
    return await sse.end(answer, delta({}, answer.decision.winner.finish_reason))
