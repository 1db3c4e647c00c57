"""An autogen ``ChatCompletionClient`` over ``litellm.acompletion``, so council agents reach every model
(``local/smollm2``, ``openai/...``, ``anthropic/...``, the test provider ``scripted/...``) one way.

It asks for token logprobs (``drop_params=True`` lets providers without them ignore the request) and returns
them in ``CreateResult.logprobs``. An autogen agent passes on only the text of that result, so a client also
lists every result it returned in ``results``; the harvest council gives each agent run a client of its own
and reads that run's logprobs from it, so concurrent runs never see each other's calls. Text only: no tools,
images, JSON mode or structured output. Provider failures and timeouts are raised as ``ModelCallError`` (a
``ModelUnavailableError``) with the model string, never keys.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import openai  # noqa: E402
from autogen_core import CancellationToken  # noqa: E402
from autogen_core.models import (  # noqa: E402
    AssistantMessage,
    ChatCompletionClient,
    ChatCompletionTokenLogprob,
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)

from council.core.errors import ModelUnavailableError  # noqa: E402
from council.engine.sampling import SamplingParams  # noqa: E402

litellm.suppress_debug_info = True
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "function_calls", "function_call": "function_calls",
           "content_filter": "content_filter"}


class ModelCallError(ModelUnavailableError):
    """One model call failed or timed out; the record it was for is retried on a later run."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, str) for part in content):
        return "\n".join(content)
    raise ValueError("LiteLLMChatClient sends text only (no images or function calls)")


def to_litellm_messages(messages: Sequence[LLMMessage]) -> list[dict[str, str]]:
    roles = {SystemMessage: "system", UserMessage: "user", AssistantMessage: "assistant"}
    out = []
    for message in messages:
        role = roles.get(type(message))
        if role is None:
            raise ValueError(f"LiteLLMChatClient cannot send {type(message).__name__} (no tool use)")
        out.append({"role": role, "content": _text(message.content)})
    return out


class LiteLLMChatClient(ChatCompletionClient):
    """``create()`` = one ``litellm.acompletion`` call for ``model`` with the given sampling settings."""

    def __init__(self, model: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 timeout_seconds: float = 120.0, context_window: int = 8192) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_seconds = timeout_seconds
        self.context_window = context_window
        self.results: list[CreateResult] = []  # what this client's create() returned, oldest first
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._actual = RequestUsage(prompt_tokens=0, completion_tokens=0)

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = (), tool_choice: Any = "auto",
                     json_output: Any = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        if tools or json_output:
            raise ValueError("LiteLLMChatClient supports neither tools nor JSON/structured output")
        sampling = SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature)
        args: dict[str, Any] = {**sampling.to_litellm(), "logprobs": True, "drop_params": True,
                                "timeout": self.timeout_seconds}
        args.update(extra_create_args)
        call = asyncio.ensure_future(
            litellm.acompletion(model=self.model, messages=to_litellm_messages(messages), **args))
        if cancellation_token is not None:
            cancellation_token.link_future(call)
        try:
            response = await asyncio.wait_for(call, self.timeout_seconds)
        except (openai.OpenAIError, TimeoutError) as exc:
            raise ModelCallError(f"model {self.model} failed: {type(exc).__name__}: {exc}") from exc
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        used = RequestUsage(prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                            completion_tokens=getattr(usage, "completion_tokens", 0) or 0)
        self._actual = used
        self._total = RequestUsage(self._total.prompt_tokens + used.prompt_tokens,
                                   self._total.completion_tokens + used.completion_tokens)
        result = CreateResult(finish_reason=_FINISH.get(choice.finish_reason or "", "unknown"),
                              content=choice.message.content or "", usage=used, cached=False,
                              logprobs=_logprobs(getattr(choice, "logprobs", None)))
        self.results.append(result)
        return result

    async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        """No token streaming: yields the whole text once, then the CreateResult."""
        result = await self.create(messages, **kwargs)
        yield str(result.content)
        yield result

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._actual

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return litellm.token_counter(model=self.model, messages=to_litellm_messages(messages))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return self.context_window - self.count_tokens(messages)

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(vision=False, function_calling=False, json_output=False, family="unknown",
                         structured_output=False)

    @property
    def capabilities(self) -> Any:  # deprecated by autogen, still abstract
        return self.model_info


def _logprobs(raw: Any) -> list[ChatCompletionTokenLogprob] | None:
    content = raw.get("content") if isinstance(raw, dict) else getattr(raw, "content", None)
    if not content:
        return None
    out = []
    for item in content:
        get = item.get if isinstance(item, dict) else lambda k, i=item: getattr(i, k, None)
        out.append(ChatCompletionTokenLogprob(token=get("token") or "", logprob=float(get("logprob")),
                                              bytes=get("bytes")))
    return out
