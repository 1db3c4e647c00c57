"""A ``POST /v1/responses`` body, read into its typed model, and the chat request it becomes.

``parse_responses_request(raw)`` is ``parse(ResponseCreateRequest, raw)`` (``council/server/protocol/
responses.py`` declares every field, what is refused and why; a complaint is an ``InvalidRequestError`` (400)
whose ``param`` is the path of the field to fix). ``ResponsesRequest`` is that model's other name here.

``chat_body(request, history)`` turns the conversation (a previous response's stored items, then this
request's ``request.items()``) into a chat-completions body that ``parse_chat_request`` checks once more:
``instructions`` become the first (system) message, ``function_call`` items an assistant message with
``tool_calls``, ``function_call_output`` items ``tool`` messages, function tools the chat's nested
``{"type": "function", "function": {...}}``, ``text.format`` the chat's ``response_format``,
``max_output_tokens`` its ``max_completion_tokens``. Before that, ``check_calls`` refuses a
``function_call_output`` whose ``call_id`` answers no earlier ``function_call`` (of this input or the stored
history) at ``input[i].call_id``, so no complaint about the chat body's ``messages`` reaches the client.
"""

from __future__ import annotations

from typing import Any

from council.core.errors import InvalidRequestError
from council.server.protocol.base import parse
from council.server.protocol.responses import (
    FunctionChoice,
    JSONObjectFormat,
    JSONSchemaFormat,
    ResponseCreateRequest,
)
from council.server.protocol.responses_items import FunctionCallInput, FunctionCallOutputInput

ResponsesRequest = ResponseCreateRequest


def parse_responses_request(raw: bytes | dict[str, Any]) -> ResponseCreateRequest:
    """Parse and check a ``POST /v1/responses`` body; raises InvalidRequestError saying what to fix."""
    return parse(ResponseCreateRequest, raw)


def check_calls(request: ResponseCreateRequest, history: list[dict[str, Any]]) -> None:
    """Refuse a ``function_call_output`` item that answers no ``function_call`` made before it."""
    called = {item["call_id"] for item in history if item.get("type") == "function_call"}
    for i, item in enumerate(request.input if isinstance(request.input, list) else []):
        if isinstance(item, FunctionCallInput):
            called.add(item.call_id)
        elif isinstance(item, FunctionCallOutputInput) and item.call_id not in called:
            raise InvalidRequestError(
                f"'input[{i}].call_id' {item.call_id!r} answers no function_call item before it (in this input "
                "or the previous response's)", param=f"input[{i}].call_id", code="invalid_value")


def chat_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """The conversation's items as chat messages (see the module docstring)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": item["content"]})
        elif item["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one turn: its text and its calls
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    return messages


def chat_body(request: ResponseCreateRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body for ``history`` (earlier turns' items) followed by this request's items."""
    check_calls(request, history)
    chat: dict[str, Any] = {"model": request.model,
                            "messages": chat_messages([*history, *request.items()], request.instructions),
                            "max_completion_tokens": request.max_output_tokens,
                            "temperature": request.temperature, "top_p": request.top_p, "user": request.user,
                            "metadata": request.metadata,
                            "store": False if request.store is False else None}  # false: nothing recorded
    tools = request.function_tools
    if tools:
        chat["tools"] = [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
                         for tool in tools]
        choice = request.tool_choice
        chat["tool_choice"] = ({"type": "function", "function": {"name": choice.name}}
                               if isinstance(choice, FunctionChoice) else choice)
        chat["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.text.format if request.text else None
    if isinstance(fmt, JSONObjectFormat):
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, JSONSchemaFormat):
        chat["response_format"] = {"type": "json_schema", "json_schema": fmt.model_dump(
            by_alias=True, exclude={"type"}, exclude_none=True)}
    return {k: v for k, v in chat.items() if v is not None}
