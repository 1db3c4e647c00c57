"""The engine interface: what every part of Council that generates text calls.

An engine turns chat messages into a ``Generation`` (text, per-token logprobs, finish reason, which adapter
answered). The in-process model (``council/engine/local/``) is one; the server reaches engines through
litellm (``council/engine/provider.py``), and training's rehearsal, the canary and the probes call one
directly::

    engine: Engine = LocalModel.from_settings(base, settings.model)
    answer = engine.generate([{"role": "user", "content": "Hi"}], max_new_tokens=32)       # greedy
    answers = engine.generate_batch([GenerationRequest(messages, 32, SamplingParams(temperature=0.7)), ...])
    # each entry a Generation, or the Exception that request alone caused
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from council.engine.grammar import Constraint
from council.engine.sampling import SamplingParams


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
    """One chat generation: the messages, how to sample (``SamplingParams``, the one form of those settings),
    the resolved token limit (``sampling.limited(settings.model.max_new_tokens)``), the grammar and callbacks."""

    messages: list[dict[str, Any]]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    constraint: Constraint | None = None  # the grammar the answer must follow (council/engine/grammar.py)
    on_text: Callable[[str, TokenLogprob], None] | None = None
    cancelled: threading.Event | None = None
    on_failed: Callable[[Exception], None] | None = None  # told at once when the request cannot even start


class Engine(Protocol):
    """What generates text. Calls block; servers run them off the event loop (``ModelWorker``)."""

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int,
                 sampling: SamplingParams | None = None) -> Generation:
        """One answer (``sampling`` None: greedy). Raises CouncilError subclasses."""
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
