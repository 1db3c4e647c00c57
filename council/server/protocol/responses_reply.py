"""What ``/v1/responses`` sends, typed once: the ``Response`` object, its usage, its server-sent events, and the
query string of ``GET /v1/responses/{id}/input_items``.

``Response`` (``object: "response"``) is the reference's (platform.openai.com/docs/api-reference/responses/object)
plus Council's ``council`` field; ``usage`` and ``council`` are left out while unknown (the ``response.created``
and ``response.in_progress`` events), ``user`` when not set (the reference types it a string, never null). Each
event model is one ``type`` of the stream (``response.created``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``, ``response.function_call_arguments.delta``, ...,
``response.completed``), numbered by ``sequence_number``. Everything is sent with ``.dump()``.

``InputItemsQuery`` is read from query-string values (so not strict: ``"20"`` is the integer 20): ``limit`` 1-100
(default 20), ``order`` ``asc`` or ``desc`` (default ``desc``, newest first), ``after`` (an item id: the page
starts after it), ``include`` (any entry is ``unsupported_parameter``: Council adds nothing to the items).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_serializer
from pydantic_core import PydanticCustomError

from council.server.protocol.base import ReplyModel
from council.server.protocol.responses import FunctionChoice, FunctionTool
from council.server.protocol.responses_items import OutputItem, OutputText

OMITTED_WHEN_NONE = ("usage", "council", "user")


class InputTokensDetails(ReplyModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(ReplyModel):
    reasoning_tokens: int = 0


class Usage(ReplyModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, usage: dict[str, int]) -> Usage:
        """The chat-completions usage (``prompt_tokens``, ``completion_tokens``) in the Responses names."""
        given, made = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return cls(input_tokens=given, output_tokens=made, total_tokens=given + made)


class IncompleteDetails(ReplyModel):
    reason: Literal["max_output_tokens", "content_filter"]


class Reasoning(ReplyModel):
    effort: None = None
    summary: None = None


class ResponseText(ReplyModel):
    format: dict[str, Any] = Field(description="The request's text.format, unset fields left out.")
    verbosity: Literal["medium"] = "medium"


class Response(ReplyModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    completed_at: int | None
    background: bool = False
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: Reasoning = Field(default_factory=Reasoning)
    safety_identifier: str | None = None
    service_tier: Literal["default"] = "default"
    store: bool = True
    temperature: float
    text: ResponseText
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)
    top_logprobs: int = 0
    top_p: float = 1.0
    truncation: Literal["disabled"] = "disabled"
    usage: Usage | None = None
    user: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    council: dict[str, Any] | None = Field(None, description="Council's verdict (record id, confidence, ...).")

    @model_serializer(mode="wrap")
    def _omit_unknown(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in OMITTED_WHEN_NONE:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class _Event(ReplyModel):
    sequence_number: int = 0


class ResponseEvent(_Event):
    type: Literal["response.created", "response.in_progress", "response.completed", "response.incomplete"]
    response: Response


class OutputItemEvent(_Event):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ContentPartEvent(_Event):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText


class OutputTextDelta(_Event):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class OutputTextDone(_Event):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class FunctionCallArgumentsDelta(_Event):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    arguments: str


StreamEvent = (ResponseEvent | OutputItemEvent | ContentPartEvent | OutputTextDelta | OutputTextDone
               | FunctionCallArgumentsDelta | FunctionCallArgumentsDone)


def _no_include(value: list[str]) -> list[str]:
    if value:
        raise PydanticCustomError("unsupported_parameter", "{value} is not supported: Council adds nothing to "
                                  "the items", {"value": repr(value[0])})
    return value


class InputItemsQuery(BaseModel):
    """``GET /v1/responses/{id}/input_items``'s query (see the module docstring); unknown keys refused."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=100, description="Items per page, 1-100.")
    order: Literal["asc", "desc"] = Field("desc", description="asc: oldest first; desc: newest first.")
    after: str | None = Field(None, description="An item id: the page starts after it.")
    include: Annotated[list[str], AfterValidator(_no_include)] = Field(default_factory=list)
