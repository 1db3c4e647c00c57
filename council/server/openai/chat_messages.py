"""Chat messages on the wire: each role's fields checked by name and type, unknown keys refused, at every level.

Parsed messages are plain dicts: ``role`` ("developer" becomes "system") and ``content`` (text parts joined), plus
``tool_calls`` on an assistant message that called tools and ``tool_call_id`` on a tool message. The shapes are
OpenAI's ``ChatCompletionRequestMessage`` (openai-openapi, ``openapi.yaml``).
"""

from __future__ import annotations

from typing import Any

from council.core.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")
FIELDS = {  # the keys each role may hold; anything else is refused by name
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"},
    "tool": {"role", "content", "tool_call_id"},
}
UNSUPPORTED = {"audio": "audio is not supported", "function_call": "use 'tool_calls' instead of 'function_call'"}


def bad(message: str, param: str | None = None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, code=code, param=param)


def _content(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if content is None:
        if message["role"] == "assistant":
            return ""
        raise bad(f"{where} is required for role {message['role']!r}", where, "missing_field")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where} must be a string or a list of text parts", where, "invalid_type")
    if not content:
        raise bad(f"{where} must not be an empty list", where, "invalid_value")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = "refusal" if kind == "refusal" else "text"
        if kind not in ("text", "refusal"):
            raise bad(f"{where}[{j}]: only text parts are supported (got type {kind!r})", f"{where}[{j}]",
                      "unsupported_content")
        extra = sorted(set(part) - {"type", key})
        if extra:
            raise bad(f"{where}[{j}] has an unknown field {extra[0]!r}", f"{where}[{j}].{extra[0]}",
                      "unknown_parameter")
        if not isinstance(part.get(key), str):
            raise bad(f"{where}[{j}].{key} must be a string", f"{where}[{j}].{key}", "invalid_type")
        parts.append(part[key])
    return "".join(parts)


def _string(value: Any, where: str, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise bad(f"{where} must be a string", where, "missing_field" if value is None else "invalid_type")


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list) or not calls:
        raise bad(f"{where} must be a non-empty list of tool calls", where, "invalid_type")
    parsed = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise bad(f"{at} must be an object", at, "invalid_type")
        extra = sorted(set(call) - {"id", "type", "function"})
        if extra:
            raise bad(f"{at} has an unknown field {extra[0]!r}", f"{at}.{extra[0]}", "unknown_parameter")
        _string(call.get("id"), f"{at}.id")
        if call.get("type") != "function":
            raise bad(f"{at}.type must be 'function'", f"{at}.type", "invalid_value")
        function = call.get("function")
        if not isinstance(function, dict):
            raise bad(f"{at}.function must be an object with 'name' and 'arguments'", f"{at}.function",
                      "invalid_type")
        extra = sorted(set(function) - {"name", "arguments"})
        if extra:
            raise bad(f"{at}.function has an unknown field {extra[0]!r}", f"{at}.function.{extra[0]}",
                      "unknown_parameter")
        _string(function.get("name"), f"{at}.function.name")
        _string(function.get("arguments"), f"{at}.function.arguments")
        parsed.append({"id": call["id"], "type": "function",
                       "function": {"name": function["name"], "arguments": function["arguments"]}})
    return parsed


def parse_message(message: Any, i: int) -> dict[str, Any]:
    """One message of ``messages``, checked and normalized (see the module docstring)."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise bad(f"{where} must be an object", where, "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise bad(f"{where}.role {role!r} is not one of {', '.join(ROLES)}", f"{where}.role", "invalid_value")
    extra = sorted(set(message) - FIELDS[role])
    if extra:
        raise bad(f"{where} (role {role!r}) has an unknown field {extra[0]!r}", f"{where}.{extra[0]}",
                  "unknown_parameter")
    for name, why in UNSUPPORTED.items():
        if message.get(name) is not None:
            raise bad(f"{where}.{name} is not supported: {why}", f"{where}.{name}", "unsupported_parameter")
    _string(message.get("name"), f"{where}.name", required=False)
    _string(message.get("refusal"), f"{where}.refusal", required=False)
    parsed: dict[str, Any] = {"role": "system" if role == "developer" else role}
    if role == "assistant" and message.get("tool_calls") is not None:
        parsed["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
    if role == "tool":
        _string(message.get("tool_call_id"), f"{where}.tool_call_id")
        parsed["tool_call_id"] = message["tool_call_id"]
    parsed["content"] = _content(message, f"{where}.content")
    return parsed


def parse_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise bad("'messages' is required", "messages", "missing_field")
    if not isinstance(messages, list):
        raise bad("'messages' must be a list", "messages", "invalid_type")
    if not messages:
        raise bad("'messages' must not be empty", "messages", "invalid_value")
    parsed = [parse_message(message, i) for i, message in enumerate(messages)]
    called: set[str] = set()
    for i, message in enumerate(parsed):  # a tool's result answers a call made before it, as OpenAI requires
        called.update(call["id"] for call in message.get("tool_calls") or [])
        if message["role"] == "tool" and message["tool_call_id"] not in called:
            raise bad(f"messages[{i}].tool_call_id {message['tool_call_id']!r} answers no tool call of an earlier "
                      "assistant message", f"messages[{i}].tool_call_id", "invalid_value")
    return parsed
