"""The one internal request every endpoint becomes, and reading a chat-completions body into it.

``parse_chat_request(raw)`` validates the body against the typed protocol model
(``council/server/protocol/chat.py``: OpenAI's ``CreateChatCompletionRequest``, strict, unknown keys refused at
every level, a validation error's location as the error's ``param``) and returns a ``ChatRequest``, or raises
``InvalidRequestError`` (HTTP 400) naming the field to fix. ``/v1/completions`` and ``/v1/responses`` build a
chat body from their own protocol models and read it here too, so the council, streaming and recording see one
shape: the conversation as plain dicts, the output options, and one ``SamplingParams``
(``council/engine/sampling.py``) that goes unchanged to the router, litellm and the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from council.engine.sampling import SamplingParams
from council.server.protocol.base import check_text, parse
from council.server.protocol.chat import COUNCIL_MODEL, ChatCompletionRequest

__all__ = ["COUNCIL_MODEL", "ChatRequest", "check_text", "parse_chat_request"]


@dataclass
class ChatRequest:
    """What the council answers: ``messages`` as ``{"role", "content"}`` dicts (plus ``tool_calls`` on an
    assistant message that called tools and ``tool_call_id`` on a tool message), how to send the answer, and
    the sampling settings; ``temperature`` None means the server's ``council.temperature``."""

    model: str
    messages: list[dict[str, Any]]
    settings: SamplingParams = field(default_factory=SamplingParams)
    temperature: float | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    user: str | None = None
    store: bool = True  # False: answered, not recorded (not in memory, never harvested or trained on)

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.settings.tools)

    @property
    def tool_choice(self) -> str | dict[str, Any] | None:
        return self.settings.tool_choice

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.settings.response_format

    @property
    def top_logprobs(self) -> int:
        return self.settings.top_logprobs

    @property
    def may_call_tools(self) -> bool:
        """Whether the answer may be tool calls: such a stream is sent decided (calls are whole), not live."""
        return self.settings.may_call_tools

    @property
    def query(self) -> str:
        """What the council answers and remembers: the last user message (the last message when none is)."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]

    def sampling(self, default_temperature: float) -> SamplingParams:
        """The settings to decode with; the server's ``council.temperature`` when the request sets none."""
        return replace(self.settings, temperature=default_temperature if self.temperature is None
                       else self.temperature)


def from_protocol(body: ChatCompletionRequest) -> ChatRequest:
    settings = body.sampling()
    body.check_grammars(settings)
    options = body.stream_options
    return ChatRequest(model=body.model or COUNCIL_MODEL, messages=body.messages_as_dicts(), settings=settings,
                       temperature=body.temperature, stream=bool(body.stream),
                       include_usage=bool(options and options.include_usage), logprobs=bool(body.logprobs),
                       user=body.user, store=body.store is not False)


def parse_chat_request(raw: bytes | dict[str, Any]) -> ChatRequest:
    """Parse and validate a request body (bytes, or a dict already read); raises InvalidRequestError."""
    return from_protocol(parse(ChatCompletionRequest, raw))
