"""The engine interface: what every part of Council that generates text calls.

An engine turns chat messages into a ``Generation`` (text, per-token logprobs, finish reason, which adapter
answered). The in-process model (``council/engine/local/``) is one; the server reaches engines through
litellm (``council/engine/provider.py``), and training's rehearsal, the canary and the probes call one
directly::

    engine: Engine = LocalModel.from_settings(base, settings.model)
    answer = engine.generate([{"role": "user", "content": "Hi"}], max_new_tokens=32)
    answers = engine.generate_batch([GenerationRequest(messages, 32), ...])   # Generation or Exception each
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from council.engine.grammar import Constraint


@dataclass
class TokenLogprob:
    """One token of an answer: its text, log-probability (natural log, untempered), raw UTF-8 bytes (a token
    may hold part of a character, whose text is then U+FFFD) and the most likely alternatives, each a
    TokenLogprob without alternatives of its own."""

    token: str
    logprob: float
    bytes: list[int] = field(default_factory=list)
    top: list[TokenLogprob] = field(default_factory=list)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``choices[].logprobs.content[]`` entry."""
        return {"token": self.token, "logprob": self.logprob, "bytes": self.bytes,
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in self.top]}


@dataclass
class Generation:
    """One answer. ``token_ids`` are the generated ids, with the end-of-turn token when the answer ended on
    it (``finish_reason`` "stop" without a stop string); ``seconds`` is wall time from queueing to the end."""

    text: str
    finish_reason: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_tokens: int = 0
    adapter: str | None = None  # the adapter that answered; None = the base model
    seconds: float = 0.0
    scope_similarity: float | None = None  # closeness to the adapter's trained queries, when it is scoped
    token_ids: list[int] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI tool calls, when the answer is calls (text is "")

    @property
    def completion_tokens(self) -> int:
        return len(self.logprobs)


@dataclass
class GenerationRequest:
    """One chat generation's settings; ``Engine.generate`` takes the same keywords."""

    messages: list[dict[str, Any]]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    on_text: Callable[[str, TokenLogprob], None] | None = None
    cancelled: threading.Event | None = None
    top_logprobs: int = 0  # alternatives reported per token (OpenAI top_logprobs, 0-20)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit (OpenAI logit_bias)
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence of a token in the answer
    presence_penalty: float = 0.0  # subtracted once from any token already in the answer
    on_failed: Callable[[Exception], None] | None = None  # told at once when the request cannot even start
    constraint: Constraint | None = None  # the grammar the answer must follow (council/engine/grammar.py)


class Engine(Protocol):
    """What generates text. Calls block; servers run them off the event loop (``ModelWorker``)."""

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, **settings: Any) -> Generation:
        """One answer; ``settings`` are GenerationRequest's fields. Raises CouncilError subclasses."""
        ...

    def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation | Exception]:
        """Several answers decoded together; each entry is its Generation or the error it alone caused."""
        ...


class ServingEngine(Protocol):
    """What the server holds for ``local/*`` models: a litellm provider (``council/engine/provider.py`` in
    process, ``council/engine/vllm/provider.py`` on vLLM) that follows ``loras/current``."""

    adapter_version: str | None  # the live adapter, None = the base model
    adapter_error: str | None  # why the adapter loras/current names was refused, if it was
    adapter_changed_at: float  # Unix time of the last change of the live adapter
    base: Any  # council.engine.model_files.BaseModel once started

    def link_changed(self) -> bool:
        """Cheap, safe on the event loop: does ``loras/current`` name something not yet tried?"""
        ...

    async def sync_adapter(self) -> bool:
        """Serve what ``loras/current`` names now; True if the live adapter changed."""
        ...

    def health(self) -> dict[str, Any]:
        """The engine's part of ``/health`` (its kind, queue or replicas)."""
        ...

    def close(self) -> None: ...
