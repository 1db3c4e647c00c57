"""``POST /v1/completions``: the request and the replies as typed protocol models.

``CompletionRequest`` follows OpenAI's ``CreateCompletionRequest`` (openai-openapi ``openapi.yaml``), as much of
it as the council can honour: ``prompt`` is a string or a list holding ONE string (token-id prompts are
``unsupported_input``, several prompts ``unsupported_parameter``); ``max_tokens``, ``temperature``, ``top_p``,
``stop``, ``seed``, ``n`` (1 only), the penalties, ``logit_bias``, ``user``, ``stream`` and ``stream_options``
have the chat request's types and ranges; ``echo``, ``suffix``, ``best_of`` and ``logprobs`` are refused
(``unsupported_parameter``) when set to anything but their defaults (``false``, ``""``, 1, 0). ``to_chat()`` turns it into the chat
request the council answers (the prompt as one user message), checked by the chat parser, so the sampling
settings become ``SamplingParams`` in one place.

``Completion`` is the reply, ``CompletionChunk`` each chunk of a streamed one (``object: "text_completion"``
for both); ``council`` is Council's own field (``CouncilInfo``, shared with chat), present on a
reply and on a stream's last chunk.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from council.server.protocol.base import OpenAIModel, ReplyModel
from council.server.protocol.chat import StreamOptions
from council.server.protocol.chat_reply import CouncilInfo, Usage
from council.server.protocol.embeddings import texts_only
from council.server.protocol.fields import LogitBias, Penalty, Seed, Stop, Temperature, TokenLimit, TopP
from council.server.validation import ChatRequest, parse_chat_request

PASSED = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "stream_options", "user",
          "frequency_penalty", "presence_penalty", "logit_bias")  # given to the chat parser as they are


def _one_prompt(value: str | list[str]) -> str:
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("invalid_value", "must not be an empty list")
        if len(value) != 1:
            raise PydanticCustomError("unsupported_parameter", "holds {n} prompts; Council answers one prompt per "
                                      "request", {"n": len(value)})
        value = value[0]
    if not value.strip():
        raise PydanticCustomError("invalid_value", "must not be empty")
    return value


def _default_only(*defaults: Any, why: str) -> AfterValidator:
    """A field Council cannot honour: accepted at one of its ``defaults`` (or null), refused otherwise."""

    def check(value: Any) -> Any:
        if not any(value == default and type(value) is type(default) for default in defaults):
            raise PydanticCustomError("unsupported_parameter", "not supported: {why}", {"why": why})
        return value

    return AfterValidator(check)


def _one(n: int) -> int:
    if n != 1:
        raise PydanticCustomError("unsupported_parameter", "n above 1 is not supported: Council answers each "
                                  "request once")
    return n


class CompletionRequest(OpenAIModel):
    """The body of ``POST /v1/completions``."""

    prompt: Annotated[str | list[str], texts_only("prompt", "a string (or a list of one string)"),
                      AfterValidator(_one_prompt),
                      Field(description="The text to answer: a string, or a list holding one string.")]
    model: Annotated[str, Field(min_length=1)] | None = Field(None, description="council (default) or a head.")
    max_tokens: TokenLimit | None = Field(None, description="Unset: the server's model.max_new_tokens (not 16).")
    temperature: Temperature | None = Field(None, description="0-2; unset: the server's council.temperature.")
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    n: Annotated[int, Field(ge=1, le=128), AfterValidator(_one)] | None = Field(None, description="1 only.")
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    user: str | None = Field(None, description="Whose memory this request reads and writes (as x-council-user).")
    stream: bool | None = Field(None, description="Send the answer as server-sent text_completion chunks.")
    stream_options: StreamOptions | None = Field(None, description="Only with stream: true.")
    echo: Annotated[bool, _default_only(False, why="echoing the prompt: the council answers it as a chat "
                                        "message")] | None = None
    suffix: Annotated[str, _default_only("", why="insertion after a suffix")] | None = None
    best_of: Annotated[int, _default_only(1, why="best_of: the council answers each request once")] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5), _default_only(
        0, why="logprobs on /v1/completions; use /v1/chat/completions")] | None = Field(
        None, description="0-5; only 0 (none, as unset) is accepted.")

    @property
    def text(self) -> str:
        """The one prompt (``prompt`` is normalised to it by validation)."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def to_chat(self) -> ChatRequest:
        """The chat request the council answers: the prompt as one user message, the settings as given."""
        chat: dict[str, Any] = {}
        for name in PASSED:
            value = getattr(self, name)
            if isinstance(value, StreamOptions):
                value = value.model_dump(exclude_none=True)
            if value is not None:
                chat[name] = value
        chat["messages"] = [{"role": "user", "content": self.text}]
        return parse_chat_request(json.dumps(chat).encode())


FinishReason = Annotated[str | None, Field(description="stop, length or content_filter; null until the last "
                                                       "chunk of a stream.")]


class CompletionChoice(ReplyModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: FinishReason = None


class Completion(ReplyModel):
    """The reply of ``POST /v1/completions``."""

    id: str = Field(description="cmpl-<record id>")
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    council: CouncilInfo | None = None


class CompletionChunk(Completion):
    """One chunk of a streamed ``POST /v1/completions`` (built by ``council/server/streaming.py`` ``Sse``), shaped
    as the whole reply (OpenAI streams ``text_completion`` objects): ``usage`` is there only when
    ``stream_options.include_usage`` asks (null but on the last chunk, whose ``choices`` are empty), ``council``
    only on the chunk with the finish reason."""
