"""Small real stand-ins for tests: a scripted litellm provider and an instant one.

They are registered in litellm's custom provider map exactly like Council's own ``local`` provider.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from litellm import CustomLLM, ModelResponse
from litellm.types.utils import Choices, GenericStreamingChunk, Message

from council.engine.base import TokenLogprob
from council.engine.provider import logprobs_payload, register_provider


@dataclass
class Script:
    """What one scripted model answers: fixed text and per-token probability, or an error."""

    text: str = "scripted answer"
    probability: float | None = 0.9  # None = return no logprobs
    error: str | None = None
    delay: float = 0.0


@dataclass
class ScriptedLLM(CustomLLM):
    """Provider ``scripted``: model ``scripted/<name>`` answers ``scripts[name]`` (or ``respond(name, messages)``)."""

    scripts: dict[str, Script] = field(default_factory=dict)
    respond: Callable[[str, list[dict[str, Any]]], Script] | None = None
    calls: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        CustomLLM.__init__(self)

    def _script(self, model: str, messages: list[dict[str, Any]]) -> Script:
        self.calls.append((model, messages))
        if self.respond is not None:
            return self.respond(model, messages)
        return self.scripts.get(model, self.scripts.get("*", Script()))

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        model_response: ModelResponse = args[3] if len(args) > 3 else kwargs["model_response"]
        script = self._script(model, messages)
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.error:
            raise RuntimeError(script.error)
        tokens = script.text.split(" ") or [""]
        logprobs = None
        if script.probability is not None:
            lp = math.log(max(script.probability, 1e-9))
            logprobs = logprobs_payload([TokenLogprob(t, lp) for t in tokens])
        model_response.choices = [Choices(index=0, finish_reason="stop", logprobs=logprobs,
                                          message=Message(content=script.text, role="assistant"))]
        model_response.model = f"scripted/{model}"
        return model_response

    async def astreaming(self, model: str, messages: list, *args: Any, **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        script = self._script(model, messages)
        if script.error:
            raise RuntimeError(script.error)
        words = script.text.split(" ")
        for i, word in enumerate(words):
            lp = math.log(max(script.probability or 1.0, 1e-9))
            yield GenericStreamingChunk(text=word if i == 0 else " " + word, is_finished=False, finish_reason="",
                                        usage=None, index=0, tool_use=None,
                                        provider_specific_fields={"logprobs": [lp]})
        yield GenericStreamingChunk(text="", is_finished=True, finish_reason="stop", usage=None, index=0,
                                    tool_use=None)


def install_scripted(scripts: dict[str, Script] | None = None, **kwargs: Any) -> ScriptedLLM:
    provider = ScriptedLLM(scripts=scripts or {}, **kwargs)
    register_provider("scripted", provider)
    return provider


class NoChoicesLLM(CustomLLM):
    """Provider ``nochoices``: answers with an empty ``choices`` list, a malformed reply that no check expects."""

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        model_response: ModelResponse = args[3] if len(args) > 3 else kwargs["model_response"]
        model_response.choices = []
        return model_response
