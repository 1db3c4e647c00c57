"""The Responses API's items, typed: what ``input`` may hold, and the items Council sends back.

Input (``OpenAIModel``: strict, unknown keys refused at every level): a ``message`` item (``type`` may be left
out; role ``user``, ``system``, ``developer`` or ``assistant``; content a string or a list of ``input_text``,
``output_text`` and ``refusal`` parts), a ``function_call`` item (``call_id``, ``name``, ``arguments``) and a
``function_call_output`` item (``call_id``, ``output`` as a string or text parts). Any other item type
(``reasoning``, ``item_reference``, a built-in tool's call, ...) is ``unsupported_parameter`` at its ``type``;
any other content part (``input_image``, ``input_file``, ...) is ``unsupported_content`` at the part. Each input
item's ``as_item()`` is the plain dict Council keeps (``council/memory/responses.py``): a message's content
joined into one string, the client's ``id`` kept when it sent one.

Output (``ReplyModel``): ``OutputMessage`` (one ``output_text`` part) and ``FunctionCall``, the ``Response``'s
``output``; ``InputMessageItem`` and ``FunctionCallOutputItem`` too, for ``GET /v1/responses/{id}/input_items``,
whose every item carries an ``id`` (``msg_``, ``fc_``, ``fco_``) and a ``status``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from council.server.protocol.base import OpenAIModel, ReplyModel

Status = Literal["in_progress", "completed", "incomplete"]
ITEM_TYPES = ("message", "function_call", "function_call_output")


# ---- content parts ----------------------------------------------------------------------------------------

class _TextPart(OpenAIModel):
    text: str = Field(description="The text.")
    annotations: list[Any] | None = Field(None, description="Accepted (an earlier output's), not used.")
    logprobs: list[Any] | None = Field(None, description="Accepted (an earlier output's), not used.")


class InputTextPart(_TextPart):
    type: Literal["input_text"]


class OutputTextPart(_TextPart):
    type: Literal["output_text"]


class RefusalPart(OpenAIModel):
    type: Literal["refusal"]
    refusal: str = Field(description="An earlier answer's refusal, replayed as its text.")


class _OtherPart(OpenAIModel):
    """Any other part (images, files, audio): Council's models read text only."""

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="before")
    @classmethod
    def refuse(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError("invalid_type", "must be an object, a text part: {\"type\": \"input_text\", "
                                      "\"text\": ...}")
        if "type" not in value or value["type"] is None:
            raise PydanticCustomError("missing_field", "is required", {"at": "type"})
        kind = value["type"]
        if not isinstance(kind, str):
            raise PydanticCustomError("invalid_type", "must be a string", {"at": "type"})
        if kind == "text":  # the chat API's part
            raise PydanticCustomError("invalid_value", "'text' is a chat part type: a Responses text part is "
                                      "'input_text' (or 'output_text' for an earlier answer)", {"at": "type"})
        raise PydanticCustomError("unsupported_content", "only text parts (input_text, output_text) are "
                                  "supported, got {kind}", {"kind": repr(kind)[:40]})


def _part_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if kind in ("input_text", "output_text", "refusal") else "other"


ContentPart = Annotated[Annotated[InputTextPart, Tag("input_text")] | Annotated[OutputTextPart, Tag("output_text")]
                        | Annotated[RefusalPart, Tag("refusal")] | Annotated[_OtherPart, Tag("other")],
                        Discriminator(_part_tag)]
Content = Annotated[list[ContentPart] | str, Field(description="A string, or a list of text parts.")]


def text_of(content: list[Any] | str) -> str:
    """A content (a string or text parts) as one string."""
    if isinstance(content, str):
        return content
    return "".join(part.refusal if isinstance(part, RefusalPart) else part.text for part in content)


# ---- input items ------------------------------------------------------------------------------------------

class _Item(OpenAIModel):
    id: str | None = Field(None, description="The item's id (an earlier output's), kept in the stored items.")
    status: Status | None = Field(None, description="Accepted, not used.")

    def _kept(self, **fields: Any) -> dict[str, Any]:
        return {**fields, **({"id": self.id} if self.id is not None else {})}


class InputMessage(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Content

    @field_validator("content")
    @classmethod
    def _not_empty(cls, content: list[Any] | str) -> list[Any] | str:
        if isinstance(content, list) and not content:  # as chat: a message says something
            raise PydanticCustomError("invalid_value", "must not be an empty list")
        return content

    def as_item(self) -> dict[str, Any]:
        return self._kept(type="message", role=self.role, content=text_of(self.content))


class FunctionCallInput(_Item):
    type: Literal["function_call"]
    call_id: str = Field(description="The call's id, which its function_call_output names.")
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")

    def as_item(self) -> dict[str, Any]:
        return self._kept(type="function_call", call_id=self.call_id, name=self.name, arguments=self.arguments)


class FunctionCallOutputInput(_Item):
    type: Literal["function_call_output"]
    call_id: str
    output: Content

    def as_item(self) -> dict[str, Any]:
        return self._kept(type="function_call_output", call_id=self.call_id, output=text_of(self.output))


class _OtherItem(OpenAIModel):
    """Any other item type: refused by its ``type`` (its other keys are not looked at)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Any = Field(None, validate_default=True)

    @field_validator("type")
    @classmethod
    def refuse(cls, kind: Any) -> Any:
        raise PydanticCustomError("unsupported_parameter", "{kind} is not supported: send message, function_call "
                                  "or function_call_output items", {"kind": repr(kind)})


def _item_tag(value: Any) -> str:
    if not isinstance(value, dict):
        return "message"  # then refused as "not an object"
    kind = value.get("type", "message")
    return kind if kind in ITEM_TYPES else "other"


InputItem = Annotated[Annotated[InputMessage, Tag("message")] | Annotated[FunctionCallInput, Tag("function_call")]
                      | Annotated[FunctionCallOutputInput, Tag("function_call_output")]
                      | Annotated[_OtherItem, Tag("other")], Discriminator(_item_tag)]


# ---- items Council sends ----------------------------------------------------------------------------------

class OutputText(ReplyModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class InputText(ReplyModel):
    type: Literal["input_text"] = "input_text"
    text: str


class OutputMessage(ReplyModel):
    id: str
    type: Literal["message"] = "message"
    status: Status
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class FunctionCall(ReplyModel):
    id: str
    type: Literal["function_call"] = "function_call"
    status: Status = "completed"
    call_id: str
    name: str
    arguments: str


class InputMessageItem(ReplyModel):
    id: str
    type: Literal["message"] = "message"
    status: Status = "completed"
    role: Literal["user", "system", "developer"]
    content: list[InputText]


class FunctionCallOutputItem(ReplyModel):
    id: str
    type: Literal["function_call_output"] = "function_call_output"
    status: Status = "completed"
    call_id: str
    output: str


OutputItem = Annotated[OutputMessage | FunctionCall, Field(discriminator="type")]
ListedItem = InputMessageItem | OutputMessage | FunctionCall | FunctionCallOutputItem


def listed(item: dict[str, Any]) -> ListedItem:
    """A stored conversation item (``InputMessage.as_item()``'s shape, with its ``id``) as the reference lists it."""
    if item["type"] == "function_call":
        return FunctionCall(id=item["id"], call_id=item["call_id"], name=item["name"], arguments=item["arguments"])
    if item["type"] == "function_call_output":
        return FunctionCallOutputItem(id=item["id"], call_id=item["call_id"], output=item["output"])
    if item["role"] == "assistant":
        return OutputMessage(id=item["id"], status="completed", content=[OutputText(text=item["content"])])
    return InputMessageItem(id=item["id"], role=item["role"], content=[InputText(text=item["content"])])


class ResponseItemList(ReplyModel):
    """``GET /v1/responses/{id}/input_items``: one page of the items the response was made from."""

    object: Literal["list"] = "list"
    data: list[ListedItem]
    first_id: str | None
    last_id: str | None
    has_more: bool
