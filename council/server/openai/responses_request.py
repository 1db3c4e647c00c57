"""A ``POST /v1/responses`` body, checked field by field, and the chat request it becomes.

``parse_responses_request(raw)`` returns a ``ResponsesRequest`` or raises ``InvalidRequestError`` (400) naming
the field. ``input`` is a string (one user message) or a list of items: ``message`` items (the ``type`` may be
left out; role user, system, developer or assistant; content a string or ``input_text``/``output_text``/
``refusal`` parts), ``function_call`` items (``call_id``, ``name``, ``arguments``) and ``function_call_output``
items (``call_id``, ``output``). ``tools`` holds function tools only; a built-in tool (``web_search``,
``file_search``, ...) is refused by its type. Fields Council cannot honour (``reasoning``, ``conversation``,
``prompt``, ``background``, ``include`` entries, ``truncation: "auto"``, ...) are refused by name when set,
and any field the reference does not have is an ``unknown_parameter``.

``chat_body(request, history)`` turns the conversation (a previous response's stored items, then this
request's) into a chat-completions body that ``parse_chat_request`` checks once more: ``instructions`` become
the first (system) message, ``function_call`` items an assistant message with ``tool_calls``,
``function_call_output`` items ``tool`` messages, function tools the chat's nested ``{"type": "function",
"function": {...}}``, ``text.format`` the chat's ``response_format``, ``max_output_tokens`` its
``max_completion_tokens``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from council.core.errors import InvalidRequestError
from council.server.openai.body import load_body
from council.server.openai.chat_tools import only_known
from council.server.validation import boolean

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HANDLED = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
           "temperature", "top_p", "text", "previous_response_id", "store", "stream", "stream_options", "metadata",
           "user", "truncation", "include", "top_logprobs", "background")
HINTS = ("service_tier", "prompt_cache_key", "safety_identifier", "prompt_cache_retention")  # no effect
REFUSED = {
    "reasoning": "the models behind Council are not reasoning models",
    "conversation": "conversations are not supported; chain responses with previous_response_id",
    "prompt": "stored prompt templates are not supported; send instructions and input",
    "context_management": "context management is not supported",
    "max_tool_calls": "max_tool_calls is not supported",
    "moderation": "moderation is not supported",
    "image": "image options are not supported",
    "access_programs": "access programs are not supported",
    "prompt_cache_options": "prompt cache options are not supported",
    "background_options": "background responses are not supported",
}
KNOWN = frozenset(HANDLED) | frozenset(HINTS) | frozenset(REFUSED)


@dataclass
class ResponsesRequest:
    body: dict[str, Any]  # as sent, for the fields the Response echoes
    items: list[dict[str, Any]]  # this request's input as items
    tools: list[dict[str, Any]] = field(default_factory=list)  # Responses shape: {type, name, ...}
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    store: bool = True
    stream: bool = False

    @property
    def previous_response_id(self) -> str | None:
        return self.body.get("previous_response_id")


def bad(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, code=code, param=param)


def _string(value: Any, where: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad(f"'{where}' must be a string", where, "missing_field" if value is None else "invalid_type")
    return value


def _text(content: Any, where: str) -> str:
    """A message's content (a string or a list of text parts) as one string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"'{where}' must be a string or a list of text parts", where, "invalid_type")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise bad(f"'{where}[{j}]': only text parts (input_text, output_text) are supported, got {kind!r}",
                      f"{where}[{j}]", "unsupported_content")
        texts.append(_string(part.get(TEXT_PARTS[kind]), f"{where}[{j}].{TEXT_PARTS[kind]}"))
    return "".join(texts)


ITEM_FIELDS = {  # the keys each input item may hold (the reference's, less what Council cannot take); others refused
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
}
PART_FIELDS = {"type", "text", "annotations", "logprobs"}


def _item(item: Any, where: str) -> dict[str, Any]:
    """One input item, normalised to the fields Council keeps; unknown keys are refused by name, at every level."""
    if not isinstance(item, dict):
        raise bad(f"'{where}' must be an object", where, "invalid_type")
    kind = item.get("type", "message")
    only_known(item, ITEM_FIELDS.get(kind, set(item)), where)
    for j, part in enumerate(item.get("content") if isinstance(item.get("content"), list) else []):
        if isinstance(part, dict) and part.get("type") in TEXT_PARTS:  # other kinds are refused by type below
            only_known(part, PART_FIELDS, f"{where}.content[{j}]")
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise bad(f"'{where}.role' {role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
        return {"type": "message", "role": role, "content": _text(item.get("content"), f"{where}.content")}
    if kind == "function_call":
        return {"type": "function_call", "call_id": _string(item.get("call_id"), f"{where}.call_id"),
                "name": _string(item.get("name"), f"{where}.name"),
                "arguments": _string(item.get("arguments"), f"{where}.arguments")}
    if kind == "function_call_output":
        output = item.get("output")
        return {"type": "function_call_output", "call_id": _string(item.get("call_id"), f"{where}.call_id"),
                "output": output if isinstance(output, str) else _text(output, f"{where}.output")}
    raise bad(f"'{where}.type' {kind!r} is not supported: send message, function_call or function_call_output "
              "items", f"{where}.type", "unsupported_parameter")


def _items(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise bad("'input' is required", "input", "missing_field")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise bad("'input' must be a string or a list of items", "input", "invalid_type")
    if not value:
        raise bad("'input' must not be an empty list", "input")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad("'tools' must be a list", "tools", "invalid_type")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad(f"'{where}.type' {kind!r} is not supported: Council runs no built-in tools; send function "
                      "tools", f"{where}.type", "unsupported_parameter")
        name = _string(tool.get("name"), f"{where}.name")
        if not TOOL_NAME.match(name):
            raise bad(f"'{where}.name' must be 1-64 letters, digits, '_' or '-'", f"{where}.name")
        parameters, strict = tool.get("parameters"), tool.get("strict")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad(f"'{where}.parameters' must be a JSON Schema object", f"{where}.parameters", "invalid_type")
        if strict is not None and not isinstance(strict, bool):
            raise bad(f"'{where}.strict' must be true or false", f"{where}.strict", "invalid_type")
        unknown = sorted(set(tool) - {"type", "name", "description", "parameters", "strict"})
        if unknown:
            raise bad(f"'{where}.{unknown[0]}' is not a function tool field", f"{where}.{unknown[0]}",
                      "unknown_parameter")
        tools.append({"type": "function", "name": name,
                      "description": _string(tool.get("description"), f"{where}.description", required=False),
                      "parameters": parameters, "strict": True if strict is None else strict})
    if len({t["name"] for t in tools}) < len(tools):
        raise bad("'tools' holds two tools of the same name", "tools")
    return tools


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> None:
    if value is None or value in ("none", "auto", "required"):
        return
    if not isinstance(value, dict) or value.get("type") != "function":
        raise bad("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": "
                  "...}: Council runs no built-in tools", "tool_choice", "unsupported_parameter")
    name = _string(value.get("name"), "tool_choice.name")
    if name not in {t["name"] for t in tools}:
        raise bad(f"'tool_choice' names {name!r}, which is not in 'tools'", "tool_choice.name")


def _text_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "text"}
    if not isinstance(value, dict) or set(value) - {"format", "verbosity"}:
        raise bad("'text' must be an object with 'format' (and 'verbosity')", "text", "invalid_type")
    if value.get("verbosity") not in (None, "medium"):
        raise bad("'text.verbosity' is not supported: omit it or send \"medium\"", "text.verbosity",
                  "unsupported_parameter")
    fmt = value.get("format") or {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        raise bad("'text.format.type' must be text, json_object or json_schema", "text.format.type")
    if not isinstance(fmt.get("schema"), dict):
        raise bad("'text.format.schema' (a JSON Schema object) is required", "text.format.schema", "missing_field")
    strict = fmt.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise bad("'text.format.strict' must be true or false", "text.format.strict", "invalid_type")
    return {"type": "json_schema", "name": _string(fmt.get("name"), "text.format.name"), "schema": fmt["schema"],
            "description": _string(fmt.get("description"), "text.format.description", required=False),
            "strict": strict}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in REFUSED.items():
        if body.get(name) is not None:
            raise bad(f"'{name}' is not supported: {why}", name, "unsupported_parameter")
    if boolean(body, "background", False):
        raise bad("'background' is not supported: responses are answered while the request waits", "background",
                  "unsupported_parameter")
    if body.get("truncation") not in (None, "disabled"):
        raise bad("'truncation' may only be \"disabled\": Council does not drop conversation items", "truncation",
                  "unsupported_parameter")
    include = body.get("include")
    if include is not None and not isinstance(include, list):
        raise bad("'include' must be a list", "include", "invalid_type")
    if include:
        raise bad(f"'include' value {include[0]!r} is not supported: Council adds nothing to its output",
                  "include", "unsupported_parameter")
    if body.get("top_logprobs") not in (None, 0):
        raise bad("'top_logprobs' is not supported by /v1/responses; use /v1/chat/completions", "top_logprobs",
                  "unsupported_parameter")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_obfuscation"}):
        raise bad("'stream_options' may only hold 'include_obfuscation'", "stream_options", "invalid_type")
    value = body.get("max_output_tokens")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise bad("'max_output_tokens' must be an integer of at least 1", "max_output_tokens")
    for name in ("instructions", "previous_response_id", "user", *HINTS):
        _string(body.get(name), name, required=False)


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """Parse and check a ``POST /v1/responses`` body; raises InvalidRequestError saying what to fix."""
    body = load_body(raw, KNOWN)
    _refuse_unsupported(body)
    tools = _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"), tools)
    stream = boolean(body, "stream", False)
    if body.get("stream_options") is not None and not stream:
        raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return ResponsesRequest(body=body, items=_items(body.get("input")), tools=tools,
                            text_format=_text_format(body.get("text")), store=boolean(body, "store", True),
                            stream=stream)


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


def chat_body(request: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body for ``history`` (earlier turns' items) followed by this request's items."""
    body = request.body
    chat: dict[str, Any] = {"model": body.get("model"),
                            "messages": chat_messages([*history, *request.items], body.get("instructions")),
                            "max_completion_tokens": body.get("max_output_tokens"),
                            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                            "user": body.get("user"), "metadata": body.get("metadata")}
    if request.tools:
        chat["tools"] = [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"
                                                           and v is not None}} for tool in request.tools]
        choice = body.get("tool_choice")
        chat["tool_choice"] = ({"type": "function", "function": {"name": choice["name"]}}
                               if isinstance(choice, dict) else choice)
        chat["parallel_tool_calls"] = body.get("parallel_tool_calls")
    fmt = request.text_format
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: v for k, v in fmt.items() if k != "type" and v is not None}}
    return {k: v for k, v in chat.items() if v is not None}
