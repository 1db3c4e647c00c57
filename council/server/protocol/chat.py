"""``POST /v1/chat/completions``: the request as a typed protocol model, and the internal request it becomes.

``ChatCompletionRequest`` follows OpenAI's ``CreateChatCompletionRequest`` (openai-openapi ``openapi.yaml``):
strict types, unknown keys refused at every level, ``null`` meaning "not set". ``max_completion_tokens`` wins
over the deprecated ``max_tokens`` (both are checked). Parameters Council cannot honour (audio, predicted output,
n > 1, reasoning options, web search) are refused by name when set, never ignored; hints (``metadata``,
``service_tier``, ...) are accepted with no effect on the answer; ``store: false`` answers without recording
the exchange (OpenAI's ``store`` says whether the output is kept for evals and distillation: here, for memory
and the nightly loop). ``to_request()`` gives the
``ChatRequest`` the council answers (``council/server/validation.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from council.core.errors import InvalidRequestError
from council.engine import grammar
from council.engine.sampling import SamplingParams
from council.server.protocol.base import OpenAIModel
from council.server.protocol.chat_messages import Message, as_dict
from council.server.protocol.chat_tools import ResponseFormat, Tool, ToolChoice, format_dict
from council.server.protocol.fields import (
    LogitBias,
    Metadata,
    Penalty,
    Seed,
    Stop,
    Temperature,
    TokenLimit,
    TopLogprobs,
    TopP,
    refused,
)

COUNCIL_MODEL = "council"


def _one(n: int) -> int:
    if n != 1:
        raise PydanticCustomError("unsupported_parameter", "n above 1 is not supported: Council answers each "
                                  "request once")
    return n


def _text_only(modalities: list[str]) -> list[str]:
    if set(modalities) - {"text"}:
        raise PydanticCustomError("unsupported_parameter", "modalities may only be [\"text\"]: audio output is "
                                  "not supported")
    return modalities


class StreamOptions(OpenAIModel):
    include_usage: bool | None = Field(None, description="Send a last chunk with the usage.")
    include_obfuscation: bool | None = Field(None, description="Accepted; Council sends no obfuscation.")


class ChatCompletionRequest(OpenAIModel):
    """The body of ``POST /v1/chat/completions``."""

    model: Annotated[str, Field(min_length=1)] | None = Field(None, description="council (default) or a head.")
    messages: Annotated[list[Message], Field(min_length=1, description="The conversation, oldest first.")]
    stream: bool | None = Field(None, description="Send the answer as server-sent events.")
    stream_options: StreamOptions | None = None
    max_tokens: TokenLimit | None = Field(None, description="Deprecated: max_completion_tokens wins.")
    max_completion_tokens: TokenLimit | None = None
    temperature: Temperature | None = Field(None, description="0-2; unset: the server's council.temperature.")
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    n: Annotated[int, Field(ge=1, le=128), AfterValidator(_one)] | None = Field(None, description="1 only.")
    logprobs: bool | None = Field(None, description="Return each token's log-probability.")
    top_logprobs: TopLogprobs | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    response_format: ResponseFormat | None = None
    modalities: Annotated[list[str], AfterValidator(_text_only)] | None = Field(
        None, description='Only ["text"]: audio output is refused.')
    tools: list[Tool] | None = Field(None, description="Function tools the model may call.")
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: Metadata | None = None
    store: bool | None = Field(None, description="false: answered but not recorded (no memory, no harvest, no "
                                                "feedback); true or unset: recorded, as every exchange is.")
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = Field(None, description="Accepted; no effect.")
    prompt_cache_options: dict[str, Any] | None = Field(None, description="Accepted; no effect.")
    safety_identifier: str | None = None
    user: str | None = Field(None, description="Whose memory this request reads and writes (as x-council-user).")
    functions: Annotated[list[Any], AfterValidator(lambda v: v if not v else _refuse(
        "use 'tools' instead of the deprecated 'functions'"))] | None = Field(
        None, description="Refused when set: use 'tools' instead of the deprecated 'functions'.")
    function_call: refused("use 'tool_choice' instead of the deprecated 'function_call'") = None
    audio: refused("audio output is not supported") = None
    prediction: refused("predicted outputs are not supported") = None
    web_search_options: refused("web search is not supported") = None
    reasoning_effort: refused("the models behind Council are not reasoning models") = None
    verbosity: refused("verbosity is not supported") = None
    moderation: refused("moderation is not supported") = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise _bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        if self.top_logprobs and not self.logprobs:
            raise _bad("'logprobs' must be true when 'top_logprobs' is used", "top_logprobs")
        names = [tool.function.name for tool in self.tools or []]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _bad(f"'tools[{i}].function.name' {name!r} is given twice", f"tools[{i}].function.name")
        choice = self.tool_choice
        if choice is not None and not names and choice != "none":
            raise _bad("'tool_choice' is only allowed when 'tools' are given", "tool_choice")
        if choice is not None and not isinstance(choice, str) and choice.function.name not in names:
            raise _bad(f"'tool_choice.function.name' must name one of the tools ({', '.join(names)})",
                       "tool_choice.function.name")
        self._check_tool_results()
        return self

    def _check_tool_results(self) -> None:
        called: set[str] = set()
        for i, message in enumerate(self.messages):  # a tool's result answers a call made before it, as OpenAI says
            called.update(call.id for call in getattr(message, "tool_calls", None) or [])
            if message.role == "tool" and message.tool_call_id not in called:
                raise _bad(f"messages[{i}].tool_call_id {message.tool_call_id!r} answers no tool call of an earlier "
                           "assistant message", f"messages[{i}].tool_call_id")

    def tool_dicts(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": tool.function.model_dump(exclude_none=True)}
                for tool in self.tools or []]

    def sampling(self) -> SamplingParams:
        """The sampling settings; an unset temperature is 0 here (``ChatRequest`` keeps it unset)."""
        tools = self.tool_dicts()
        choice = self.tool_choice if isinstance(self.tool_choice, str) or self.tool_choice is None \
            else self.tool_choice.model_dump()
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens, temperature=self.temperature or 0.0,
            top_p=1.0 if self.top_p is None else self.top_p, stop=tuple(self.stop or ()), seed=self.seed,
            top_logprobs=self.top_logprobs or 0, logit_bias=dict(self.logit_bias or {}),
            frequency_penalty=self.frequency_penalty or 0.0, presence_penalty=self.presence_penalty or 0.0,
            tools=tuple(tools), tool_choice=None if choice == "none" and not tools else choice,
            parallel_tool_calls=self.parallel_tool_calls is not False, response_format=format_dict(self.response_format))

    def check_grammars(self, settings: SamplingParams) -> None:
        """Refuse, before any answer starts, a schema or tool set the grammar library cannot enforce."""
        param = "tools"
        try:
            if settings.tools:
                grammar.check(grammar.constraint_for(None, list(settings.tools), settings.tool_choice or "auto",
                                                     settings.parallel_tool_calls), param)
            param = "response_format"
            grammar.check(grammar.constraint_for(settings.response_format, None), param)
        except RecursionError:
            raise InvalidRequestError(f"'{param}' holds a schema nested too deeply for Council to enforce",
                                      param=param, code="invalid_schema") from None

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        return [as_dict(message) for message in self.messages]


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, code="invalid_value", param=param)


def _refuse(why: str) -> Any:
    raise PydanticCustomError("unsupported_parameter", why)


Role = Literal["system", "developer", "user", "assistant", "tool"]
