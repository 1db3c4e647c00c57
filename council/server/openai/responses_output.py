"""The council's answer as a Responses-API ``Response`` object, and as the stream of events that builds it.

``response_object`` makes the ``Response`` (``council/server/protocol/responses_reply.py`` declares its shape):
the output items (a ``message`` with one ``output_text`` part, and/or one ``function_call`` item per tool call),
``status`` ``completed`` or ``incomplete`` (``incomplete_details.reason: "max_output_tokens"`` when the answer
hit the token limit), the usage in the Responses names, the request's settings echoed, and Council's ``council``
field.

``events`` cuts a finished Response into the reference's server-sent events, numbered by ``sequence_number``:
``response.created``, ``response.in_progress``, per message item ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` (one per piece of the answer, cut at token
boundaries), ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``; per
function call ``response.output_item.added``, ``response.function_call_arguments.delta``,
``response.function_call_arguments.done``, ``response.output_item.done``; then ``response.completed`` (or
``response.incomplete``). The answer is decided in full before the first event is made (as
``council.stream_mode = "decided"`` streams chat): the events arrive together once the council has decided.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from council.server.protocol.responses import ResponseCreateRequest, TextConfig
from council.server.protocol.responses_items import FunctionCall, OutputItem, OutputMessage, OutputText
from council.server.protocol.responses_reply import (
    ContentPartEvent,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    IncompleteDetails,
    OutputItemEvent,
    OutputTextDelta,
    OutputTextDone,
    Response,
    ResponseEvent,
    ResponseText,
    StreamEvent,
    Usage,
)
from council.server.service import Answer
from council.server.streaming import council_field, pieces


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def output_items(answer: Answer) -> list[OutputItem]:
    """The answer as Responses output items: its text as a ``message``, its tool calls as ``function_call``s."""
    winner = answer.decision.winner
    calls = getattr(winner, "tool_calls", None) or []
    status = "incomplete" if winner.finish_reason == "length" else "completed"
    items: list[OutputItem] = []
    if winner.text or not calls:
        items.append(OutputMessage(id=new_id("msg"), status=status, content=[OutputText(text=winner.text)]))
    for call in calls:
        items.append(FunctionCall(id=new_id("fc"), call_id=call["id"], name=call["function"]["name"],
                                  arguments=call["function"]["arguments"]))
    return items


def response_object(request: ResponseCreateRequest, answer: Answer, response_id: str, created_at: int,
                    model: str, default_temperature: float) -> Response:
    winner = answer.decision.winner
    incomplete = winner.finish_reason == "length"
    return Response(
        id=response_id, created_at=created_at, status="incomplete" if incomplete else "completed",
        completed_at=None if incomplete else int(time.time()),
        incomplete_details=IncompleteDetails(reason="max_output_tokens") if incomplete else None,
        instructions=request.instructions, max_output_tokens=request.max_output_tokens, model=model,
        output=output_items(answer), parallel_tool_calls=request.parallel_tool_calls is not False,
        previous_response_id=request.previous_response_id, prompt_cache_key=request.prompt_cache_key,
        safety_identifier=request.safety_identifier, store=request.store is not False,
        temperature=default_temperature if request.temperature is None else request.temperature,
        text=ResponseText(format=(request.text or TextConfig()).format_dict()),
        tool_choice=request.tool_choice or "auto", tools=request.function_tools,
        top_p=1.0 if request.top_p is None else request.top_p, usage=Usage.of(winner.usage), user=request.user,
        metadata=request.metadata or {}, council=council_field(answer))


def _message_events(item: OutputMessage, index: int, answer: Answer) -> Iterator[StreamEvent]:
    part = item.content[0]
    at: dict[str, Any] = {"item_id": item.id, "output_index": index, "content_index": 0}
    yield OutputItemEvent(type="response.output_item.added", output_index=index,
                          item=item.model_copy(update={"status": "in_progress", "content": []}))
    yield ContentPartEvent(type="response.content_part.added", **at, part=part.model_copy(update={"text": ""}))
    for piece, _ in pieces(answer):
        yield OutputTextDelta(**at, delta=piece)
    yield OutputTextDone(**at, text=part.text)
    yield ContentPartEvent(type="response.content_part.done", **at, part=part)
    yield OutputItemEvent(type="response.output_item.done", output_index=index, item=item)


def _call_events(item: FunctionCall, index: int) -> Iterator[StreamEvent]:
    at: dict[str, Any] = {"item_id": item.id, "output_index": index}
    yield OutputItemEvent(type="response.output_item.added", output_index=index,
                          item=item.model_copy(update={"status": "in_progress", "arguments": ""}))
    yield FunctionCallArgumentsDelta(**at, delta=item.arguments)
    yield FunctionCallArgumentsDone(**at, arguments=item.arguments)
    yield OutputItemEvent(type="response.output_item.done", output_index=index, item=item)


def events(response: Response, answer: Answer) -> Iterator[dict[str, Any]]:
    """The stream of events for ``response`` (see the module docstring), each with its ``sequence_number``."""
    started = response.model_copy(update={  # the usage, and the council's verdict, come with the last event
        "status": "in_progress", "output": [], "completed_at": None, "incomplete_details": None, "usage": None,
        "council": None})
    steps: list[StreamEvent] = [ResponseEvent(type="response.created", response=started),
                                ResponseEvent(type="response.in_progress", response=started)]
    for index, item in enumerate(response.output):
        steps.extend(_message_events(item, index, answer) if isinstance(item, OutputMessage)
                     else _call_events(item, index))
    steps.append(ResponseEvent(type=f"response.{response.status}", response=response))
    for number, step in enumerate(steps):
        yield step.model_copy(update={"sequence_number": number}).dump()
