"""A litellm provider that answers instantly (no model): isolates Council's own overhead in benchmarks."""

from __future__ import annotations

import math
from typing import Any

from litellm import CustomLLM, ModelResponse
from litellm.types.utils import Choices, Message

ANSWER = "The answer is forty-two."
LOGPROBS = {"content": [{"token": t, "logprob": math.log(0.95), "bytes": None, "top_logprobs": []}
                        for t in ("The", " answer", " is", " forty", "-two", ".")]}


class InstantLLM(CustomLLM):
    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: ModelResponse, *args: Any, **kwargs: Any) -> ModelResponse:
        model_response.choices = [Choices(index=0, finish_reason="stop", logprobs=LOGPROBS,
                                          message=Message(content=ANSWER, role="assistant"))]
        model_response.model = f"instant/{model}"
        return model_response
