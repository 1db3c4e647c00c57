"""What ``POST /v1/chat/completions`` sends: ``chat.completion`` and ``chat.completion.chunk``, typed.

Shapes are OpenAI's ``CreateChatCompletionResponse`` and ``CreateChatCompletionStreamResponse`` (openai-openapi
``openapi.yaml``; ``tests/test_openapi_conformance.py`` holds every reply to them). A reply is built through
these models and sent with ``dump()``: a key that was not given is left out (a chunk's ``delta`` holds only what
changed; ``usage`` appears on chunks only when ``stream_options.include_usage`` asks), a key given as ``None`` is
sent as ``null`` (``refusal``, ``logprobs``, ``finish_reason`` are required even when empty). ``council`` is
Council's own field: the record id, confidence, route and adapter behind the answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class Reply(BaseModel):
    """A reply part; ``dump()`` leaves out what was not set (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class TopLogprob(Reply):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Reply):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None


class FunctionCall(Reply):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(Reply):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(Reply):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(Reply):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CouncilInfo(Reply):
    """Council's own field on a reply: which record holds this exchange and how the council decided."""

    record_id: str
    confidence: float = Field(description="0-1, from the answer's token log-probabilities.")
    success: bool
    route: list[str] = Field(description="The heads asked, in order.")
    adapter: str | None
    model: str
    context_ids: list[str] = Field(description="Records recalled from memory into the prompt.")
    skipped: dict[str, str] = Field(description="Heads that could not answer, with why.")
    stored: bool = Field(True, description="False for a request with store: false: record_id names no record.")


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    council: CouncilInfo | None = None


class ToolCallDelta(Reply):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None  # {"name", "arguments"} at the head, {"arguments"} after


class Delta(Reply):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Reply):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None


class ChatCompletionChunk(Reply):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    council: CouncilInfo | None = None
