"""Tool calls as the model writes them (``<tool_call>`` blocks, ``council/engine/grammar.py``) and as OpenAI sends
them (``tool_calls``): parsing an answer into calls, writing calls and tool results back into a prompt, and
checking that a correction is an answer of the kind its request asked for.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from council.core.errors import InvalidRequestError
from council.engine.grammar import ANY_OBJECT, CALL_CLOSE, CALL_OPEN

_CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """The OpenAI ``tool_calls`` an answer holds (each ``{"id", "type": "function", "function": {"name",
    "arguments"}}``, arguments as a JSON string), or None when it is text."""
    calls = []
    if not text.startswith(CALL_OPEN):
        return None
    for block in _CALL.findall(text):
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}})
    return calls or None


def repeated_call(text: str) -> int | None:
    """Where to cut an answer whose last complete call repeats an earlier one (a small model, free to add calls,
    tends to write the same call until its token limit): the end of the calls before it, else None."""
    if not text.endswith(CALL_CLOSE):
        return None
    blocks = list(_CALL.finditer(text))
    if len(blocks) > 1 and blocks[-1].group(1) in {b.group(1) for b in blocks[:-1]}:
        return blocks[-2].end()
    return None


def _call_key(call: dict[str, Any]) -> tuple[str, str]:
    function = call.get("function", {})
    try:
        arguments = json.dumps(json.loads(function.get("arguments") or "{}"), sort_keys=True)
    except json.JSONDecodeError:
        arguments = function.get("arguments") or ""
    return function.get("name") or "", arguments


def only_repeats(tool_calls: list[dict[str, Any]], messages: list[dict[str, Any]]) -> bool:
    """Whether every call was already made, with the same arguments, earlier in the conversation (and so
    answered): a small model given a tool's result tends to call it again instead of answering."""
    made = {_call_key(c) for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []}
    return bool(made) and all(_call_key(call) in made for call in tool_calls)


def call_text(tool_calls: list[dict[str, Any]]) -> str:
    """Tool calls written back as the model writes them (for an assistant message in a later prompt)."""
    blocks = []
    for call in tool_calls:
        function = call.get("function", {})
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = function.get("arguments")
        blocks.append(CALL_OPEN + json.dumps({"name": function.get("name"), "arguments": arguments}) + CALL_CLOSE)
    return "\n".join(blocks)


def as_text_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages with tool calls and tool results written as text, for a model without a tool template:
    an assistant's calls as ``<tool_call>`` blocks, a tool's result as a user turn "Result of NAME: ..." (in
    plain words: the 135M model echoed a ``<tool_response>`` tag back instead of answering)."""
    out, names = [], {}
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            names.update((c["id"], c["function"]["name"]) for c in message["tool_calls"])
            text = "\n".join(part for part in (message.get("content") or "", call_text(message["tool_calls"])) if part)
            out.append({"role": "assistant", "content": text})
        elif message["role"] == "tool":
            name = names.get(message.get("tool_call_id"), "the function")
            out.append({"role": "user", "content": f"Result of {name}: {message['content']}"})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out


def has_calls(messages: list[dict[str, Any]] | None) -> bool:
    """Whether a conversation holds tool calls or tool results (its answer is then held to words or calls)."""
    return any(m.get("tool_calls") or m.get("role") == "tool" for m in messages or [])


def is_call_text(text: str | None) -> bool:
    """Whether an answer (or a correction) is written as tool calls."""
    return bool(text) and text.lstrip().startswith(CALL_OPEN.strip())


def check_correction(correction: str, response_format: dict[str, Any] | None,
                     tools: list[dict[str, Any]] | None) -> None:
    """Raise InvalidRequestError (param ``correction``) when a correction is not an answer of the kind its
    request asked for: JSON valid against the ``response_format`` schema; for a tool request, either calls of
    its tools (``<tool_call>`` blocks, arguments valid against the function's parameters) or, where words were
    allowed, text. A correction is taught as the answer (``harvest``, ``training``), so a wrong kind would teach
    the wrong format."""
    import jsonschema

    def bad(why: str) -> InvalidRequestError:
        return InvalidRequestError(f"'correction' {why}", param="correction", code="invalid_value")

    functions = {t["function"]["name"]: t["function"] for t in tools or [] if t.get("type") == "function"}
    if functions and is_call_text(correction):
        calls = parse_tool_calls(correction.strip())
        if calls is None:
            raise bad('must be whole calls: <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>')
        for call in calls:
            function = functions.get(call["function"]["name"])
            if function is None:
                raise bad(f"calls {call['function']['name']!r}, which is not one of the request's tools "
                          f"({', '.join(functions)})")
            try:
                jsonschema.validate(json.loads(call["function"]["arguments"]), function.get("parameters") or {})
            except jsonschema.ValidationError as exc:
                raise bad(f"calls {function['name']} with arguments its parameters refuse: {exc.message}") from exc
        return
    kind = (response_format or {}).get("type")
    if kind not in ("json_object", "json_schema"):
        return
    try:
        value = json.loads(correction)
    except json.JSONDecodeError as exc:
        raise bad(f"must be JSON, as the request's response_format asked ({exc.msg})") from exc
    schema = response_format["json_schema"].get("schema") if kind == "json_schema" else ANY_OBJECT
    try:
        jsonschema.validate(value, schema or ANY_OBJECT)
    except jsonschema.ValidationError as exc:
        raise bad(f"does not validate against the request's schema: {exc.message}") from exc
    except jsonschema.SchemaError as exc:
        raise bad(f"cannot be checked against the request's schema: {exc.message}") from exc
