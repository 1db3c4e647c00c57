"""``POST /v1/responses`` (OpenAI's Responses API) over the council, ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``.

A request (``responses_request.py`` checks it) becomes a chat request, one check for both APIs
(``parse_chat_request``), and ``ChatService.answer`` answers it exactly as ``/v1/chat/completions`` would:
memory recall, the heads when confidence is low, a record written before the reply. The answer goes back as a
``Response`` object (``responses_output.py``) with Council's ``council`` field and the ``x-council-record-id``
and ``x-council-confidence`` headers; with ``stream: true`` as the reference's server-sent events, made once
the council has decided (so they arrive together, not token by token).

Stored responses (``store``, default true) are kept durably in ``responses.sqlite3`` beside the memory
(``council/memory/responses.py``) with the whole conversation so far, so ``previous_response_id`` replays every
earlier turn (their instructions excepted, as the reference does). A response belongs to its user (``user``,
else the ``x-council-user`` header): another user's id, or an unknown one, is a 404, so one user's text never
reaches another's prompt; ``GET``, ``DELETE`` and ``input_items`` check the header the same way. Erasing a
record (``DELETE /v1/records/{id}``, ``council forget --user``) erases every stored response whose conversation
holds it.

``input_items`` lists the items the response was made from: the whole conversation replayed for it (earlier
turns' input and output, then this request's input; instructions are not items), each with its id, one page
at a time (``limit`` 1-100, default 20; ``order`` ``desc``, newest first, or ``asc``; ``after`` an item id;
``include`` must be empty), as ``{"object": "list", "data", "first_id", "last_id", "has_more"}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from council.core.errors import InvalidRequestError, NotFoundError, RequestTimeoutError
from council.memory.responses import RESPONSES_DB, ResponseStore, StoredResponse, with_ids
from council.server import keys
from council.server.openai.responses_output import events, new_id, response_object
from council.server.openai.responses_request import ResponsesRequest, chat_body, parse_responses_request
from council.server.protocol.base import parse
from council.server.protocol.responses_items import FunctionCall, OutputItem, ResponseItemList, listed
from council.server.protocol.responses_reply import InputItemsQuery, Response
from council.server.service import Answer
from council.server.streaming import council_headers
from council.server.validation import ChatRequest, parse_chat_request

# a chat parameter's path prefix -> the Responses one (first match wins; "messages" has no item-exact mapping)
CHAT_PARAMS = (("messages", "input"), ("max_completion_tokens", "max_output_tokens"),
               ("response_format.json_schema", "text.format"), ("response_format", "text.format"),
               ("tool_choice.function", "tool_choice"))


async def responses_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the stored-responses database with the app (one of ``council/server/app.py``'s RESOURCES)."""
    store = await asyncio.to_thread(ResponseStore.open, app[keys.SETTINGS].paths.memory / RESPONSES_DB)
    app[keys.RESPONSES] = store
    yield
    await asyncio.to_thread(store.close)


def responses_param(param: str) -> str:
    """The Responses path of a chat request's ``param`` (``tools[0].function.parameters`` -> ``tools[0].parameters``,
    ``response_format.json_schema.name`` -> ``text.format.name``, ``messages[3].content`` -> ``input``)."""
    for chat_name, name in CHAT_PARAMS:
        if param == chat_name or param.startswith((f"{chat_name}.", f"{chat_name}[")):
            return name if chat_name == "messages" else name + param[len(chat_name):]
    head, dot, rest = param.partition(".function")
    if head.startswith("tools[") and head.endswith("]") and dot and (not rest or rest[0] in ".["):
        return head + rest
    return param


def _chat_request(body: dict[str, Any]) -> ChatRequest:
    """``parse_chat_request`` on the converted body; a complaint names the Responses field it came from."""
    try:
        return parse_chat_request(json.dumps(body).encode())
    except InvalidRequestError as exc:
        if not exc.param:
            raise
        param = responses_param(exc.param)
        message = exc.message.replace(exc.param, param) if param != "input" else exc.message
        raise InvalidRequestError(message, code=exc.code, param=param) from exc


async def _owned(request: web.Request, response_id: str, user: str | None, param: str | None = None,
                 code: str = "response_not_found") -> StoredResponse:
    """The stored response ``response_id`` if ``user`` owns it; else a 404 (unknown and foreign look alike)."""
    stored = await asyncio.to_thread(request.app[keys.RESPONSES].get, response_id)
    if stored is None or stored.user != user:
        what = "Previous response" if param else "Response"
        raise NotFoundError(f"{what} with id {response_id!r} not found.", code=code, param=param)
    return stored


def _as_input(items: list[OutputItem]) -> list[dict[str, Any]]:
    """Output items as the input items a later turn replays (with their ids)."""
    replay = []
    for item in items:
        if isinstance(item, FunctionCall):
            replay.append({"type": "function_call", "call_id": item.call_id, "name": item.name,
                           "arguments": item.arguments, "id": item.id})
        else:
            replay.append({"type": "message", "role": "assistant", "content": item.content[0].text, "id": item.id})
    return replay


async def _answer(request: web.Request, chat: ChatRequest, user: str | None, session: str | None) -> Answer:
    limit = request.app[keys.SETTINGS].server.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            return await request.app[keys.SERVICE].answer(chat, user, session)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"no answer within server.request_timeout_seconds ({limit:g} s)") from exc
    except asyncio.CancelledError:  # the client hung up: its generation was stopped, nothing recorded
        request.app[keys.STATS].cancelled.inc()
        raise


async def _stream(request: web.Request, response: Response, answer: Answer) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                         **council_headers(answer)})
    await stream.prepare(request)
    for event in events(response, answer):
        await stream.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    await stream.write_eof()
    return stream


async def create_response(request: web.Request) -> web.StreamResponse:
    created_at = int(time.time())
    parsed: ResponsesRequest = parse_responses_request(await request.read())
    user = parsed.user or request.headers.get("x-council-user")
    history, chain = [], []
    if parsed.previous_response_id is not None:
        previous = await _owned(request, parsed.previous_response_id, user, "previous_response_id",
                                "previous_response_not_found")
        history, chain = previous.items, previous.records
    chat = _chat_request(chat_body(parsed, history))
    answer = await _answer(request, chat, user, request.headers.get("x-council-session"))
    settings = request.app[keys.SETTINGS]
    response_id = new_id("resp")
    response = response_object(parsed, answer, response_id, created_at, chat.model, settings.council.temperature)
    if parsed.store is not False:
        items = with_ids([*history, *parsed.items(), *_as_input(response.output)])
        stored = StoredResponse(response_id, user, answer.record.id, [*chain, answer.record.id], items,
                                response.dump())
        await asyncio.to_thread(request.app[keys.RESPONSES].put, stored)
    if parsed.stream:
        return await _stream(request, response, answer)
    return web.json_response(response.dump(), headers=council_headers(answer))


async def get_response(request: web.Request) -> web.Response:
    stored = await _owned(request, request.match_info["response_id"], request.headers.get("x-council-user"))
    return web.json_response(stored.response)


async def delete_response(request: web.Request) -> web.Response:
    """Forget a stored response (its record stays in the memory; ``DELETE /v1/records/{id}`` erases that)."""
    response_id = request.match_info["response_id"]
    await _owned(request, response_id, request.headers.get("x-council-user"))
    await asyncio.to_thread(request.app[keys.RESPONSES].delete, response_id)
    return web.json_response({"id": response_id, "object": "response.deleted", "deleted": True})


def _query(request: web.Request) -> dict[str, Any]:
    """The query string as ``InputItemsQuery`` reads it: ``include`` (or ``include[]``) a list, the rest the last
    value given."""
    query: dict[str, Any] = {}
    for key in dict.fromkeys(request.query.keys()):
        values = request.query.getall(key)
        if key in ("include", "include[]"):
            query.setdefault("include", []).extend(value for value in values if value)
        else:
            query[key] = values[-1]
    return query


async def list_input_items(request: web.Request) -> web.Response:
    """One page of the items a stored response was made from (see the module docstring)."""
    query = parse(InputItemsQuery, _query(request))
    stored = await _owned(request, request.match_info["response_id"], request.headers.get("x-council-user"))
    items = stored.items[:len(stored.items) - len(stored.response.get("output", []))]  # less its own output
    ordered = items if query.order == "asc" else items[::-1]
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        if query.after not in ids:
            raise InvalidRequestError(f"'after': {query.after!r} is not one of this response's input items",
                                      param="after", code="invalid_value")
        ordered = ordered[ids.index(query.after) + 1:]
    page = ordered[:query.limit]
    return web.json_response(ResponseItemList(
        data=[listed(item) for item in page], first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None, has_more=len(ordered) > len(page)).dump())
