"""Chat messages on the wire, typed: one model per role, unknown keys refused at every level.

Shapes are OpenAI's ``ChatCompletionRequestMessage`` (openai-openapi ``openapi.yaml``): ``content`` is a string
or a non-empty list of text parts (``refusal`` parts too, on assistant messages); an assistant message may hold
``tool_calls`` instead of content; a ``tool`` message answers one call by ``tool_call_id``. Parts Council cannot
read (images, audio, files) are refused as ``unsupported_content``; ``audio`` and ``function_call`` on an
assistant message as ``unsupported_parameter``. ``as_dict()`` gives what the council reads: ``role``
("developer" becomes "system"), ``content`` (parts joined), plus ``tool_calls`` / ``tool_call_id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from council.server.protocol.base import OpenAIModel
from council.server.protocol.fields import refused

PART_TYPES = ("text", "refusal")
PART_TAGS = {"text": "TextPart", "refusal": "RefusalPart"}  # tags are not keys: error paths skip them


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class RefusalPart(OpenAIModel):
    type: Literal["refusal"]
    refusal: str


def _readable(kinds: tuple[str, ...]) -> Any:
    """A part's ``type`` checked before its fields: missing, not a string, not one Council reads, or not one
    this role may hold (``refusal`` parts belong to assistant messages)."""

    def check(part: Any) -> Any:
        if not isinstance(part, dict):
            raise PydanticCustomError("invalid_type", "each content part must be an object with a 'type'")
        kind = part.get("type")
        if kind is None:
            raise PydanticCustomError("missing_field", "a content part needs a 'type'", {"at": "type"})
        if not isinstance(kind, str):
            raise PydanticCustomError("invalid_type", "a content part's 'type' must be a string", {"at": "type"})
        if kind not in PART_TYPES:
            raise PydanticCustomError("unsupported_content", "only text parts are supported (got type {kind})",
                                      {"kind": repr(kind)})
        if kind not in kinds:
            raise PydanticCustomError("invalid_value", "{kind} parts belong to assistant messages only",
                                      {"kind": kind, "at": "type"})
        return part

    return check


Part = Annotated[Annotated[Annotated[TextPart, Tag("TextPart")] | Annotated[RefusalPart, Tag("RefusalPart")],
                           Discriminator(lambda v: PART_TAGS.get(v.get("type")) if isinstance(v, dict) else None)],
                 BeforeValidator(_readable(PART_TYPES))]  # an assistant's: text or refusal
TextOnly = Annotated[TextPart, BeforeValidator(_readable(("text",)))]  # everyone else's


def _text_or(parts: Any) -> Any:
    """``str`` or a non-empty list of ``parts``, chosen by the JSON type (one error, not one per member)."""
    return Annotated[Annotated[str, Tag("str")] | Annotated[Annotated[list[parts], Field(min_length=1)],
                                                            Tag("parts")],
                     Discriminator(lambda v: "str" if isinstance(v, str) or v is None else "parts")]


def _joined(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text if isinstance(p, TextPart) else p.refusal for p in content)


class SystemMessage(OpenAIModel):
    role: Literal["system"]
    content: _text_or(TextOnly)
    name: str | None = None


class DeveloperMessage(SystemMessage):
    role: Literal["developer"]  # type: ignore[assignment]


class UserMessage(SystemMessage):
    role: Literal["user"]  # type: ignore[assignment]


class FunctionCall(OpenAIModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(OpenAIModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(OpenAIModel):
    role: Literal["assistant"]
    content: _text_or(Part) | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None
    audio: refused("audio is not supported") = None
    function_call: refused("use 'tool_calls' instead of 'function_call'") = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.refusal is None:  # as OpenAI: content unless
            # the message calls tools (or holds the model's refusal)
            raise PydanticCustomError("missing_field", "an assistant message needs 'content' or 'tool_calls'",
                                      {"at": "content"})
        return self


class ToolMessage(OpenAIModel):
    role: Literal["tool"]
    content: _text_or(TextOnly)
    tool_call_id: str


Message = Annotated[SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
                    Field(discriminator="role")]


def as_dict(message: Any) -> dict[str, Any]:
    """What the council reads of one message (see the module docstring)."""
    parsed: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role}
    if isinstance(message, AssistantMessage) and message.tool_calls:
        parsed["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        parsed["tool_call_id"] = message.tool_call_id
    parsed["content"] = _joined(message.content)
    return parsed
