"""One request's sampling settings: the one form every layer passes, from the HTTP request to the decoder.

Every endpoint's protocol model turns into a ``SamplingParams`` (``council/server/protocol/``); the router hands
it to litellm as keywords (``to_litellm()``: litellm is the seam between the council and its engines); each
engine's litellm provider reads it back (``from_litellm(optional_params)``) and decodes with it. Field names and
meanings are vLLM's ``SamplingParams`` (docs.vllm.ai, "Sampling Parameters") and OpenAI's chat-completions
reference; ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` are the OpenAI shapes,
turned into a grammar by ``constraint()`` (``council/engine/grammar.py``).

    params = SamplingParams(max_tokens=32, temperature=0.7, stop=("\\n\\n",))
    await litellm.acompletion(model="local/smollm2", messages=..., **params.to_litellm())
    SamplingParams.from_litellm(optional_params) == params       # in the provider: the same settings back
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from council.engine.grammar import Constraint, constraint_for
from council.engine.tool_calls import has_calls

GREEDY_BELOW = 1e-5  # a temperature below this is greedy decoding: logits / 1e-40 overflow to inf


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one answer. Unset values are the defaults below, never ``None`` where a number is meant."""

    max_tokens: int | None = None  # tokens to generate at most; None = the engine's model.max_new_tokens
    temperature: float = 0.0  # 0 = greedy; OpenAI range 0-2
    top_p: float = 1.0  # nucleus sampling mass, 0-1
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings (up to 4)
    seed: int | None = None  # the same seed and settings give the same sampled answer
    top_logprobs: int = 0  # alternatives reported per token, 0-20
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit, -100..100
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence of a token in the answer, -2..2
    presence_penalty: float = 0.0  # subtracted once from any token already in the answer, -2..2
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI function tools {"type": "function", "function": {...}}
    tool_choice: str | dict[str, Any] | None = None  # none | auto | required | {"type": "function", ...}
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None  # {"type": "json_object"} or {"type": "json_schema", ...}

    def __post_init__(self) -> None:
        if self.temperature < GREEDY_BELOW:
            object.__setattr__(self, "temperature", 0.0)

    @property
    def may_call_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def limited(self, max_new_tokens: int) -> int:
        """The token limit to decode with: the request's, never above the engine's ``max_new_tokens``."""
        return max_new_tokens if self.max_tokens is None else min(self.max_tokens, max_new_tokens)

    def constraint(self, messages: list[dict[str, Any]] | None = None) -> Constraint | None:
        """The grammar the answer must follow (None: free text). ``messages`` tell whether calls were made."""
        return constraint_for(self.response_format, list(self.tools) or None, self.tool_choice or "auto",
                              self.parallel_tool_calls, history_calls=has_calls(messages or []))

    def to_litellm(self) -> dict[str, Any]:
        """Keywords for ``litellm.acompletion``: only what differs from the defaults, plus temperature."""
        params: dict[str, Any] = {"temperature": self.temperature}
        optional = {"max_tokens": self.max_tokens, "top_p": None if self.top_p == 1.0 else self.top_p,
                    "seed": self.seed, "stop": list(self.stop) or None, "top_logprobs": self.top_logprobs or None,
                    "logit_bias": {str(k): v for k, v in self.logit_bias.items()} or None,
                    "frequency_penalty": self.frequency_penalty or None,
                    "presence_penalty": self.presence_penalty or None,
                    "tools": list(self.tools) or None, "tool_choice": self.tool_choice if self.tools else None,
                    "parallel_tool_calls": False if self.tools and not self.parallel_tool_calls else None,
                    "response_format": self.response_format}
        params.update({name: value for name, value in optional.items() if value is not None})
        return params

    @classmethod
    def from_litellm(cls, optional_params: dict[str, Any]) -> SamplingParams:
        """The settings back from litellm's ``optional_params`` (what a custom provider receives)."""
        get = optional_params.get
        max_tokens = get("max_completion_tokens") or get("max_tokens")
        stop = get("stop")
        return cls(
            max_tokens=int(max_tokens) if max_tokens else None,
            temperature=float(get("temperature") or 0.0),
            top_p=1.0 if get("top_p") is None else float(get("top_p")),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            seed=get("seed"),
            top_logprobs=int(get("top_logprobs") or 0),
            logit_bias={int(token): float(value) for token, value in (get("logit_bias") or {}).items()},
            frequency_penalty=float(get("frequency_penalty") or 0.0),
            presence_penalty=float(get("presence_penalty") or 0.0),
            tools=tuple(get("tools") or ()),
            tool_choice=get("tool_choice"),
            parallel_tool_calls=get("parallel_tool_calls") is not False,
            response_format=get("response_format"),
        )
