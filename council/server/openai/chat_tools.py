"""``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` of a chat request, checked.

Shapes as OpenAI's ``ChatCompletionTool``, ``ChatCompletionToolChoiceOption`` and ``ResponseFormat*``
(openai-openapi ``openapi.yaml``); unknown keys are refused by name at every level. A schema the grammar library
cannot enforce is refused here, before any answer starts (``council/engine/grammar.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from council.engine import grammar
from council.server.openai.chat_messages import bad

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function and schema names
CHOICES = ("none", "auto", "required")


@dataclass
class ToolSettings:
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None


def only_known(value: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse the first key of ``value`` not in ``allowed``, naming its path (``where.key``) in ``param``."""
    extra = sorted(set(value) - allowed)
    if extra:
        raise bad(f"{where} has an unknown field {extra[0]!r}", f"{where}.{extra[0]}", "unknown_parameter")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"'{where}' must be an object", where, "invalid_type")
    return value


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad("'tools' must be a list of function tools", "tools", "invalid_type")
    tools, names = [], set()
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if _object(tool, where).get("type") != "function":
            raise bad(f"{where}.type {tool.get('type')!r} is not served: Council serves function tools only",
                      f"{where}.type", "invalid_value")
        only_known(tool, {"type", "function"}, where)
        function = _object(tool.get("function"), f"{where}.function")
        only_known(function, {"name", "description", "parameters", "strict"}, f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise bad(f"{where}.function.name must be 1-64 letters, digits, _ or -", f"{where}.function.name",
                      "invalid_value")
        if name in names:
            raise bad(f"{where}.function.name {name!r} is given twice", f"{where}.function.name", "invalid_value")
        names.add(name)
        if function.get("description") is not None and not isinstance(function["description"], str):
            raise bad(f"{where}.function.description must be a string", f"{where}.function.description",
                      "invalid_type")
        if function.get("parameters") is not None:
            parameters = _object(function["parameters"], f"{where}.function.parameters")
            if parameters.get("type", "object") != "object":  # arguments are a JSON object, as OpenAI requires
                raise bad(f"{where}.function.parameters must describe an object (type 'object')",
                          f"{where}.function.parameters.type", "invalid_value")
        if function.get("strict") is not None and not isinstance(function["strict"], bool):
            raise bad(f"{where}.function.strict must be true or false", f"{where}.function.strict", "invalid_type")
        tools.append({"type": "function", "function": {k: v for k, v in function.items() if v is not None}})
    return tools


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if value is None or (value == "none" and not tools):  # "no tool calls" without tools: nothing to refuse
        return None
    if not tools:
        raise bad("'tool_choice' is only allowed when 'tools' are given", "tool_choice", "invalid_value")
    if isinstance(value, str):
        if value not in CHOICES:
            raise bad(f"'tool_choice' must be one of {', '.join(CHOICES)} or a named function", "tool_choice",
                      "invalid_value")
        return value
    if _object(value, "tool_choice").get("type") != "function":
        raise bad(f"'tool_choice' of type {value.get('type')!r} is not served: use none, auto, required or "
                  "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice.type", "invalid_value")
    only_known(value, {"type", "function"}, "tool_choice")
    function = _object(value.get("function"), "tool_choice.function")
    only_known(function, {"name"}, "tool_choice.function")
    names = [t["function"]["name"] for t in tools]
    if value.get("type") != "function" or function.get("name") not in names:
        raise bad(f"'tool_choice' must name one of the tools ({', '.join(names)})", "tool_choice", "invalid_value")
    return {"type": "function", "function": {"name": function["name"]}}


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    fmt = _object(value, "response_format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        only_known(fmt, {"type"}, "response_format")
        return None if kind == "text" else {"type": "json_object"}
    if kind != "json_schema":
        raise bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format.type",
                  "invalid_value")
    only_known(fmt, {"type", "json_schema"}, "response_format")
    spec = _object(fmt.get("json_schema"), "response_format.json_schema")
    only_known(spec, {"name", "description", "schema", "strict"}, "response_format.json_schema")
    if not isinstance(spec.get("name"), str) or not NAME.match(spec["name"]):
        raise bad("'response_format.json_schema.name' is required: 1-64 letters, digits, _ or -",
                  "response_format.json_schema.name", "invalid_value")
    if spec.get("schema") is not None:
        _object(spec["schema"], "response_format.json_schema.schema")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise bad("'response_format.json_schema.strict' must be true or false", "response_format.json_schema.strict",
                  "invalid_type")
    return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


def parse_tool_settings(body: dict[str, Any]) -> ToolSettings:
    """The request's tools and output format; raises InvalidRequestError naming the field to fix."""
    tools = _tools(body["tools"]) if body.get("tools") is not None else []
    choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls", "invalid_type")
    response_format = _response_format(body.get("response_format"))
    settings = ToolSettings(tools, choice, parallel is not False, response_format)
    if tools:
        grammar.check(grammar.constraint_for(None, tools, choice or "auto", settings.parallel_tool_calls), "tools")
    grammar.check(grammar.constraint_for(response_format, None), "response_format")
    return settings
