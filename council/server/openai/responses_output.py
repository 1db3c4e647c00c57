"""The council's answer as a Responses-API ``Response`` object, and as the stream of events that builds it.

``response_object`` makes the ``Response`` (``object: "response"``): the output items (a ``message`` with one
``output_text`` part, and/or one ``function_call`` item per tool call), ``status`` ``completed`` or
``incomplete`` (``incomplete_details.reason: "max_output_tokens"`` when the answer hit the token limit), the
usage in the Responses names, the request's settings echoed, and Council's ``council`` field.

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

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

from council.server.openai.responses_request import ResponsesRequest
from council.server.service import Answer
from council.server.streaming import council_field, pieces


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def output_items(answer: Answer) -> list[dict[str, Any]]:
    """The answer as Responses output items: its text as a ``message``, its tool calls as ``function_call``s."""
    winner = answer.decision.winner
    calls = getattr(winner, "tool_calls", None) or []
    status = "incomplete" if winner.finish_reason == "length" else "completed"
    items: list[dict[str, Any]] = []
    if winner.text or not calls:
        items.append({"id": new_id("msg"), "type": "message", "status": status, "role": "assistant",
                      "content": [{"type": "output_text", "text": winner.text, "annotations": [], "logprobs": []}]})
    for call in calls:
        items.append({"id": new_id("fc"), "type": "function_call", "status": "completed", "call_id": call["id"],
                      "name": call["function"]["name"], "arguments": call["function"]["arguments"]})
    return items


def usage_object(usage: dict[str, int]) -> dict[str, Any]:
    given, made = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"input_tokens": given, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": made, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": given + made}


def response_object(request: ResponsesRequest, answer: Answer, response_id: str, created_at: int, model: str,
                    default_temperature: float) -> dict[str, Any]:
    body = request.body
    winner = answer.decision.winner
    incomplete = winner.finish_reason == "length"
    fmt = {k: v for k, v in request.text_format.items() if v is not None}
    response = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else int(time.time()), "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": output_items(answer),
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"), "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default", "store": request.store,
        "temperature": default_temperature if body.get("temperature") is None else body["temperature"],
        "text": {"format": fmt, "verbosity": "medium"}, "tool_choice": body.get("tool_choice") or "auto",
        "tools": request.tools, "top_logprobs": 0, "top_p": 1.0 if body.get("top_p") is None else body["top_p"],
        "truncation": "disabled", "usage": usage_object(winner.usage), "user": body.get("user"),
        "metadata": body.get("metadata") or {}, "council": council_field(answer),
    }
    if response["user"] is None:
        del response["user"]  # the reference's schema has it a string, never null
    return response


def _message_events(item: dict[str, Any], index: int, answer: Answer) -> Iterator[dict[str, Any]]:
    part = item["content"][0]
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield {"type": "response.output_item.added", "output_index": index,
           "item": dict(item, status="in_progress", content=[])}
    yield {"type": "response.content_part.added", **at, "part": dict(part, text="")}
    for piece, _ in pieces(answer):
        yield {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
    yield {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []}
    yield {"type": "response.content_part.done", **at, "part": part}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _call_events(item: dict[str, Any], index: int) -> Iterator[dict[str, Any]]:
    at = {"item_id": item["id"], "output_index": index}
    yield {"type": "response.output_item.added", "output_index": index,
           "item": dict(item, status="in_progress", arguments="")}
    yield {"type": "response.function_call_arguments.delta", **at, "delta": item["arguments"]}
    yield {"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def events(response: dict[str, Any], answer: Answer) -> Iterator[dict[str, Any]]:
    """The stream of events for ``response`` (see the module docstring), each with its ``sequence_number``."""
    started = copy.deepcopy(response)
    started.update(status="in_progress", output=[], completed_at=None, incomplete_details=None)
    for unknown_yet in ("usage", "council"):  # the usage, and the council's verdict, come with the last event
        started.pop(unknown_yet)
    steps: list[dict[str, Any]] = [{"type": "response.created", "response": started},
                                   {"type": "response.in_progress", "response": started}]
    for index, item in enumerate(response["output"]):
        steps.extend(_message_events(item, index, answer) if item["type"] == "message" else _call_events(item, index))
    steps.append({"type": f"response.{response['status']}", "response": response})
    for number, step in enumerate(steps):
        yield dict(step, sequence_number=number)
