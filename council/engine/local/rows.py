"""One request's state while the batched decoder works on it (``council/engine/local/batched.py``).

``prepare_row`` checks and tokenizes a request (context length, logit bias, seed); ``Row.adjust`` applies its
logit bias and penalties to a step's logits, ``Row.accept`` takes the sampled token (text, stop strings,
streaming, finish reason) and ``Row.result`` makes the finished row a ``Generation``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from council.core.errors import InvalidRequestError
from council.engine.adapter_scope import AdapterUse
from council.engine.base import Generation, GenerationRequest, TokenLogprob
from council.engine.grammar import Matcher
from council.engine.tool_calls import parse_tool_calls, repeated_call


class LocalModel(Protocol):
    """What the decoder needs of ``council.engine.local.model.LocalModel`` (named here so that module can
    import this one and not the other way round)."""

    model: Any  # the transformers model
    tokenizer: Any
    prefix_cache: Any  # council.engine.local.prefix_cache.PrefixCache
    eos_ids: set[int]
    adapter_version: str | None
    peft_name: str

    @property
    def active(self) -> Any: ...  # the module to call: the PEFT model with an adapter live, else the base
    def token_bytes(self, token_id: int) -> list[int]: ...
    def alternative(self, token_id: int, logprob: float) -> TokenLogprob: ...
    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]: ...
    def encode_history(self, messages: list[dict[str, str]], prompt_ids: list[int]) -> list[int]: ...
    def adapter_uses(self, requests: list[list[dict[str, str]]]) -> list[AdapterUse]: ...
    def pick(self, logits: Any, temperature: float, top_p: float, generator: Any) -> int: ...


@dataclass
class Row:
    request: GenerationRequest
    prompt_ids: list[int]
    generator: Any
    stop: list[str]
    started: float
    use: AdapterUse = field(default_factory=AdapterUse)  # who answers this row
    history: list[int] = field(default_factory=list)  # prompt tokens before the last message
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish: str | None = None
    error: Exception | None = None  # what this row alone failed with; its batch-mates go on
    eos: int | None = None  # the end-of-turn token that finished the row
    matcher: Matcher | None = None  # the answer's grammar, when the request has a constraint

    def adjust(self, logits: Any) -> Any:
        """The row's logits with its logit bias and frequency/presence penalties applied (OpenAI's
        definitions: ``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``)."""
        import torch

        sampling = self.request.sampling
        if not (sampling.logit_bias or sampling.frequency_penalty or sampling.presence_penalty):
            return logits
        logits = logits.clone()
        if sampling.logit_bias:
            ids = torch.tensor(list(sampling.logit_bias))
            logits[ids] += torch.tensor(list(sampling.logit_bias.values()), dtype=logits.dtype)
        if self.out_ids and (sampling.frequency_penalty or sampling.presence_penalty):
            counts = torch.bincount(torch.tensor(self.out_ids), minlength=logits.shape[0])[: logits.shape[0]]
            logits -= counts * sampling.frequency_penalty + (counts > 0) * sampling.presence_penalty
        return logits

    def accept(self, model: LocalModel, token: int, logprob: float,
               top: list[tuple[int, float]] | None = None) -> None:
        """Take the sampled ``token`` (``top``: the most likely (id, logprob) pairs): update text, stop strings,
        streaming and the finish reason."""
        if token in model.eos_ids:
            self.finish, self.eos = "stop", token
            return
        self.out_ids.append(token)
        self.logprobs.append(TokenLogprob(model.tokenizer.decode([token]), logprob, model.token_bytes(token),
                                          [model.alternative(i, lp) for i, lp in top or []]))
        self.text = model.tokenizer.decode(self.out_ids, skip_special_tokens=True)
        hit = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if hit >= 0:
            self.text, self.finish = self.text[:hit], "stop"
        if self.matcher is not None and self.request.constraint.kind == "tools":
            cut = repeated_call(self.text)
            if cut is not None:  # the same call again: the answer is the calls before it
                self.text, self.finish = self.text[:cut], "stop"
        on_text = self.request.on_text
        if on_text is not None and not self.text.endswith("\ufffd"):
            hold = max((len(s) - 1 for s in self.stop), default=0) if self.finish != "stop" else 0
            visible = len(self.text) - hold
            if visible > self.emitted:
                on_text(self.text[self.emitted:visible], self.logprobs[-1])
                self.emitted = visible
        if self.finish is None and len(self.out_ids) >= self.request.max_new_tokens:
            self.finish = "length"

    def result(self, model: LocalModel) -> Generation | Exception:
        if self.error is not None:
            return self.error
        on_text = self.request.on_text
        if on_text is not None and len(self.text) > self.emitted:
            on_text(self.text[self.emitted:], self.logprobs[-1] if self.logprobs else TokenLogprob("", 0.0))
        text, finish, calls = self.text, self.finish or "length", None
        constraint = self.request.constraint
        if constraint is not None and constraint.kind == "tools" and finish in ("stop", "length"):
            calls = parse_tool_calls(text)  # whole calls only: one cut by the token limit is dropped, as
            if calls:  # vLLM's tool parsers do; the markup never reaches the client as text
                text, finish = "", "tool_calls"
            elif text.startswith("<"):  # the start of a call and not one whole call: an empty answer, "length"
                text = ""  # (text in words never opens with "<": council/engine/grammar.py TEXT_RULE)
        return Generation(text=text, finish_reason=finish, logprobs=self.logprobs, tool_calls=calls,
                          prompt_tokens=len(self.prompt_ids),
                          adapter=self.use.adapter, seconds=time.perf_counter() - self.started,
                          scope_similarity=self.use.similarity,
                          token_ids=self.out_ids + ([self.eos] if self.eos is not None else []))


def prepare_row(model: LocalModel, request: GenerationRequest) -> Row:
    import torch

    prompt_ids = model.encode_chat(request.messages)
    limit = model.model.config.max_position_embeddings
    if len(prompt_ids) + request.max_new_tokens > limit:
        raise InvalidRequestError(
            f"prompt is {len(prompt_ids)} tokens; with max_tokens={request.max_new_tokens} it exceeds the "
            f"model's context of {limit} tokens",
            code="context_length_exceeded",
        )
    sampling = request.sampling
    vocab = model.model.get_output_embeddings().weight.shape[0]
    if sampling.logit_bias and max(sampling.logit_bias) >= vocab:
        raise InvalidRequestError(f"logit_bias names token {max(sampling.logit_bias)}; this model's tokens are "
                                  f"0-{vocab - 1}", code="invalid_value", param="logit_bias")
    # torch seeds are unsigned 64-bit; OpenAI's are signed, so map them one to one
    generator = torch.Generator().manual_seed(sampling.seed % 2**64) if sampling.seed is not None else None
    # a stop string must not cut a constrained answer short of its grammar: it is not applied there
    stop = [s for s in sampling.stop if s] if request.constraint is None else []
    matcher = model.grammars.matcher(request.constraint) if request.constraint is not None else None
    return Row(request, prompt_ids, generator, stop, time.perf_counter(), matcher=matcher,
               history=model.encode_history(request.messages, prompt_ids) if model.prefix_cache.max_entries else [])
