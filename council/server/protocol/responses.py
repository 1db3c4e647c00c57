"""``POST /v1/responses`` typed: the request, ``ResponseCreateRequest``, and the tools and formats it holds.

The request follows the reference (platform.openai.com/docs/api-reference/responses/create), less what Council
cannot do: ``input`` is a string or a list of items (``responses_items.py``); ``tools`` holds function tools
only (a built-in tool's ``type`` is ``unsupported_parameter``); ``tool_choice`` is ``none``/``auto``/
``required`` or a function by name (one of ``tools``); ``text.format`` is ``text``, ``json_object`` or
``json_schema`` (its ``name`` 1-64 of ``[A-Za-z0-9_-]``). Fields Council cannot honour are refused by name
when set (``REFUSED``, ``background: true``, ``truncation: "auto"``, any ``include`` entry, ``top_logprobs``
above 0, ``text.verbosity`` other than ``medium``); hints (``service_tier`` and ``prompt_cache_retention``, one
of the SDK's values; ``prompt_cache_key``, ...) are accepted with no effect; any other key, at any level, is an
``unknown_parameter`` whose ``param`` is its path. The chat API's nested shapes (a tool's or ``tool_choice``'s
``function``, ``text.format.json_schema``) are ``unknown_parameter`` at that key, said so in the message. ``parse(ResponseCreateRequest, raw)`` reads
a body (``council.server.protocol.base``).

The replies (the ``Response``, its stream events, the input-item list) are in ``responses_reply.py`` and
``responses_items.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from council.core.errors import InvalidRequestError
from council.server.protocol.base import OpenAIModel
from council.server.protocol.fields import Metadata, Temperature, TokenLimit, TopLogprobs, TopP, refused
from council.server.protocol.responses_items import InputItem

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
TOOL_CHOICES = ("none", "auto", "required")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")  # the openai SDK's
CACHE_RETENTIONS = ("in_memory", "24h")
CHOICE_SHAPE = '"none", "auto", "required" or {"type": "function", "name": ...}'


def _unsupported(message: str, ok: Callable[[Any], bool] = lambda value: False) -> Any:
    """A field accepted only where ``ok(value)`` (``None`` always is); anything else is unsupported_parameter."""

    def check(value: Any) -> Any:
        if value is not None and not ok(value):
            raise PydanticCustomError("unsupported_parameter", message, {"value": repr(value)})
        return value

    return AfterValidator(check)


def _one_of(*values: str) -> AfterValidator:
    """A string that must be one of ``values`` (``invalid_value`` otherwise)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise PydanticCustomError("invalid_value", "must be one of {values}, got {value}",
                                      {"values": ", ".join(map(repr, values)), "value": repr(value)[:40]})
        return value

    return AfterValidator(check)


def _tool_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        raise PydanticCustomError("invalid_value", "must be 1-64 letters, digits, '_' or '-'")
    return name


class FunctionTool(OpenAIModel):
    type: Literal["function"]
    name: Annotated[str, AfterValidator(_tool_name)]
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="The arguments' JSON Schema.")
    strict: Annotated[bool | None, AfterValidator(lambda v: True if v is None else v)] = Field(
        True, validate_default=True, description="Arguments constrained to the schema; true unless false.")


class _BuiltInTool(OpenAIModel):
    """Any tool but a function (web_search, file_search, ...): refused by its ``type``, its other keys unread."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Any = Field(description="Required; any value but \"function\" is refused.")

    @field_validator("type")
    @classmethod
    def refuse(cls, kind: Any) -> Any:
        raise PydanticCustomError("unsupported_parameter", "{kind} is not supported: Council runs no built-in "
                                  "tools; send function tools", {"kind": repr(kind)})


def _tool_tag(value: Any) -> str:
    return "function_tool" if isinstance(value, dict) and value.get("type") == "function" else "built_in_tool"


# tags that are no key of a tool, so an error's location never walks into a "function" key the body holds
Tool = Annotated[Annotated[FunctionTool, Tag("function_tool")] | Annotated[_BuiltInTool, Tag("built_in_tool")],
                 Discriminator(_tool_tag)]


def _flat_tools(value: Any) -> Any:
    """Refuse a chat-shaped tool (``{"type": "function", "function": {...}}``) by its ``function`` key."""
    for i, tool in enumerate(value if isinstance(value, list) else []):
        if isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool:
            raise InvalidRequestError(
                f"tools[{i}] has an unknown field 'function': a Responses function tool is flat, "
                "{\"type\": \"function\", \"name\": ..., \"parameters\": ...} (the chat API nests them in "
                "'function')", param=f"tools[{i}].function", code="unknown_parameter")
    return value


class FunctionChoice(OpenAIModel):
    type: Literal["function"]
    name: str


def _tool_choice(value: Any) -> Any:
    if value is None or value in TOOL_CHOICES:
        return value
    if isinstance(value, str):
        raise PydanticCustomError("invalid_value", "must be {shape}, got {value}",
                                  {"shape": CHOICE_SHAPE, "value": repr(value)[:40]})
    if not isinstance(value, dict):
        raise PydanticCustomError("invalid_type", "must be a string or an object: {shape}", {"shape": CHOICE_SHAPE})
    if value.get("type") == "function":
        if "function" in value:
            raise InvalidRequestError(
                "tool_choice has an unknown field 'function': name the tool beside the type, "
                "{\"type\": \"function\", \"name\": ...} (the chat API nests it in 'function')",
                param="tool_choice.function", code="unknown_parameter")
        return value
    if "type" not in value:
        raise PydanticCustomError("missing_field", "is required", {"at": "type"})
    raise PydanticCustomError("unsupported_parameter", "{kind} is not supported: must be {shape}: Council runs no "
                              "built-in tools", {"kind": repr(value["type"])[:40], "shape": CHOICE_SHAPE})


class TextFormat(OpenAIModel):
    type: Literal["text"]


class JSONObjectFormat(OpenAIModel):
    type: Literal["json_object"]


class JSONSchemaFormat(OpenAIModel):
    type: Literal["json_schema"]
    name: Annotated[str, AfterValidator(_tool_name)] = Field(description="1-64 letters, digits, '_' or '-'.")
    schema_: dict[str, Any] = Field(alias="schema", description="The answer's JSON Schema.")
    description: str | None = None
    strict: bool | None = None


Format = Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")]


def _flat_format(value: Any) -> Any:
    """Refuse a chat-shaped ``text.format`` (``{"type": "json_schema", "json_schema": {...}}``) by that key."""
    fmt = value.get("format") if isinstance(value, dict) else None
    if isinstance(fmt, dict) and "json_schema" in fmt:
        raise InvalidRequestError(
            "text.format has an unknown field 'json_schema': a Responses format is flat, {\"type\": "
            "\"json_schema\", \"name\": ..., \"schema\": ...} (the chat API nests them in "
            "'json_schema')", param="text.format.json_schema", code="unknown_parameter")
    return value


class TextConfig(OpenAIModel):
    format: Format | None = None
    verbosity: Annotated[str | None, _unsupported("is not supported: omit it or send \"medium\"",
                                                  lambda value: value == "medium")] = None

    def format_dict(self) -> dict[str, Any]:
        """The format as the Response echoes it (unset fields left out)."""
        fmt = self.format or TextFormat(type="text")
        return fmt.model_dump(by_alias=True, exclude_none=True)


class StreamOptions(OpenAIModel):
    include_obfuscation: bool | None = None


def _input(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("missing_field", "is required")
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("invalid_value", "must not be empty")
    return value


class ResponseCreateRequest(OpenAIModel):
    """A ``POST /v1/responses`` body (see the module docstring)."""

    model: str | None = None
    input: Annotated[Annotated[list[InputItem], Field(min_length=1)] | str, BeforeValidator(_input)] = Field(
        description="A string (one user message) or a list of items.")
    instructions: str | None = Field(None, description="The first (system) message; not replayed by a follow-up.")
    tools: Annotated[list[Tool] | None, BeforeValidator(_flat_tools)] = None
    tool_choice: Annotated[Literal["none", "auto", "required"] | FunctionChoice | None,
                           BeforeValidator(_tool_choice)] = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: TokenLimit | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    text: Annotated[TextConfig | None, BeforeValidator(_flat_format)] = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    metadata: Metadata | None = None
    user: str | None = None
    truncation: Annotated[str | None, _one_of("auto", "disabled"), _unsupported(
        "may only be \"disabled\": Council does not drop conversation items", lambda value: value == "disabled")] = None
    include: Annotated[list[str] | None, _unsupported(
        "{value} is not supported: Council adds nothing to its output", lambda value: not value)] = None
    top_logprobs: Annotated[TopLogprobs | None, _unsupported(
        "is not supported by /v1/responses; use /v1/chat/completions", lambda value: value == 0)] = None
    background: Annotated[bool | None, _unsupported(
        "is not supported: responses are answered while the request waits", lambda value: not value)] = None
    # hints: accepted, no effect
    service_tier: Annotated[str | None, _one_of(*SERVICE_TIERS)] = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    prompt_cache_retention: Annotated[str | None, _one_of(*CACHE_RETENTIONS)] = None
    # refused when set
    reasoning: refused(REFUSED["reasoning"]) = None
    conversation: refused(REFUSED["conversation"]) = None
    prompt: refused(REFUSED["prompt"]) = None
    context_management: refused(REFUSED["context_management"]) = None
    max_tool_calls: refused(REFUSED["max_tool_calls"]) = None
    moderation: refused(REFUSED["moderation"]) = None
    image: refused(REFUSED["image"]) = None
    access_programs: refused(REFUSED["access_programs"]) = None
    prompt_cache_options: refused(REFUSED["prompt_cache_options"]) = None
    background_options: refused(REFUSED["background_options"]) = None

    @model_validator(mode="after")
    def _coherent(self) -> ResponseCreateRequest:
        names = [tool.name for tool in self.function_tools]  # every tool is a function: built-ins are refused
        for i, name in enumerate(names):
            if name in names[:i]:
                raise InvalidRequestError(f"'tools[{i}].name' {name!r} is given twice", param=f"tools[{i}].name",
                                          code="invalid_value")
        if self.tool_choice == "required" and not names:
            raise InvalidRequestError("'tool_choice' \"required\" needs 'tools' to choose from",
                                      param="tool_choice", code="invalid_value")
        if isinstance(self.tool_choice, FunctionChoice) and self.tool_choice.name not in names:
            raise InvalidRequestError(f"'tool_choice' names {self.tool_choice.name!r}, which is not in 'tools'",
                                      param="tool_choice.name", code="invalid_value")
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError("'stream_options' is only allowed when 'stream' is true",
                                      param="stream_options", code="invalid_value")
        return self

    @property
    def function_tools(self) -> list[FunctionTool]:
        return [tool for tool in self.tools or [] if isinstance(tool, FunctionTool)]

    def items(self) -> list[dict[str, Any]]:
        """This request's input as the plain items Council keeps (``responses_items.InputMessage.as_item``)."""
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user", "content": self.input}]
        return [item.as_item() for item in self.input]
