"""Several generations decoded together: one forward pass per token step serves every row of the batch.

On a CPU a 135M-parameter model is bound by memory bandwidth, not arithmetic: a step that decodes eight
sequences costs little more than a step that decodes one. The harvest council (three members asking at
once, several records at a time) and concurrent chat requests therefore finish several times sooner when
their generations share steps (``bench/batch_bench.py`` measures it).

Rows are left-padded to a common prompt length; each row keeps its own sampling settings, seed, stop
strings, token limit, streaming callback and cancellation, and is answered by the live adapter or by the
base model, as the adapter's scope decides (``council/adapter_scope.py``). A finished row rides along until the whole
batch is done (its tokens are ignored), so one long answer holds the batch's short ones back: batches are
formed from requests that arrive together and are capped at ``model.max_batch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from council.errors import InvalidRequestError

if TYPE_CHECKING:
    from council.local_model import AdapterUse, Generation, LocalModel, TokenLogprob

BASE_ROW = "__base__"  # PEFT's adapter name for "no adapter on this row" in a mixed batch


@dataclass
class GenerationRequest:
    """One chat generation's settings; ``LocalModel.generate`` takes the same keywords."""

    messages: list[dict[str, str]]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    on_text: Callable[[str, TokenLogprob], None] | None = None
    cancelled: threading.Event | None = None


@dataclass
class _Row:
    request: GenerationRequest
    prompt_ids: list[int]
    generator: Any
    stop: list[str]
    started: float
    use: AdapterUse | None = None
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish: str | None = None

    def accept(self, model: LocalModel, token: int, logprob: float) -> None:
        """Take the sampled ``token``: update text, stop strings, streaming and the finish reason."""
        from council.local_model import TokenLogprob

        if token in model.eos_ids:
            self.finish = "stop"
            return
        self.out_ids.append(token)
        self.logprobs.append(TokenLogprob(model.tokenizer.decode([token]), logprob))
        self.text = model.tokenizer.decode(self.out_ids, skip_special_tokens=True)
        hit = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if hit >= 0:
            self.text, self.finish = self.text[:hit], "stop"
        on_text = self.request.on_text
        if on_text is not None and not self.text.endswith("\ufffd"):
            hold = max((len(s) - 1 for s in self.stop), default=0) if self.finish != "stop" else 0
            visible = len(self.text) - hold
            if visible > self.emitted:
                on_text(self.text[self.emitted:visible], self.logprobs[-1])
                self.emitted = visible
        if self.finish is None and len(self.out_ids) >= self.request.max_new_tokens:
            self.finish = "length"

    def result(self, model: LocalModel) -> Generation:
        from council.local_model import Generation, TokenLogprob

        on_text = self.request.on_text
        if on_text is not None and len(self.text) > self.emitted:
            on_text(self.text[self.emitted:], self.logprobs[-1] if self.logprobs else TokenLogprob("", 0.0))
        return Generation(text=self.text, finish_reason=self.finish or "length", logprobs=self.logprobs,
                          prompt_tokens=len(self.prompt_ids),
                          adapter=model.adapter_version if self.use is not None and self.use.applied else None,
                          seconds=time.perf_counter() - self.started,
                          scope_similarity=self.use.similarity if self.use is not None else None)


def _row(model: LocalModel, request: GenerationRequest) -> _Row:
    import torch

    prompt_ids = model.encode_chat(request.messages)
    limit = model.model.config.max_position_embeddings
    if len(prompt_ids) + request.max_new_tokens > limit:
        raise InvalidRequestError(
            f"prompt is {len(prompt_ids)} tokens; with max_tokens={request.max_new_tokens} it exceeds the "
            f"model's context of {limit} tokens",
            code="context_length_exceeded",
        )
    generator = torch.Generator().manual_seed(request.seed) if request.seed is not None else None
    return _Row(request, prompt_ids, generator, [s for s in (request.stop or []) if s], time.perf_counter())


def generate_batch(model: LocalModel, requests: list[GenerationRequest]) -> list[Generation | Exception]:
    """Decode ``requests`` together; each entry is its Generation, or the error that request alone caused."""
    import torch

    results: list[Generation | Exception | None] = [None] * len(requests)
    rows: dict[int, _Row] = {}
    for index, request in enumerate(requests):
        try:
            rows[index] = _row(model, request)
        except InvalidRequestError as exc:
            results[index] = exc
        else:
            if request.max_new_tokens <= 0:
                rows[index].finish = "length"
    order = list(rows)
    width = max((len(rows[i].prompt_ids) for i in order), default=0)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad_id] * (width - len(rows[i].prompt_ids)) + rows[i].prompt_ids for i in order])
    mask = torch.tensor([[0] * (width - len(rows[i].prompt_ids)) + [1] * len(rows[i].prompt_ids) for i in order])
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    past, active, scoped = None, model.active, {}
    for index, use in zip(order, model.adapter_uses([rows[i].request.messages for i in order]), strict=True):
        rows[index].use = use
    if model.adapter_version is not None and not all(rows[i].use.applied for i in order):
        scoped = {"adapter_names": [model.adapter_version if rows[i].use.applied else BASE_ROW for i in order]}
    with torch.inference_mode():
        while order and any(rows[i].finish is None for i in order):
            output = active(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                            use_cache=True, **scoped)
            past = output.past_key_values
            logits = output.logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            next_ids = []
            for slot, index in enumerate(order):
                row = rows[index]
                if row.finish is None and row.request.cancelled is not None and row.request.cancelled.is_set():
                    row.finish = "cancelled"
                if row.finish is not None:
                    next_ids.append(pad_id)
                    continue
                token = model.pick(logits[slot], row.request.temperature, row.request.top_p, row.generator)
                row.accept(model, token, float(logp[slot, token]))
                next_ids.append(token)
            ids = torch.tensor(next_ids).unsqueeze(1)
            mask = torch.cat([mask, torch.ones(len(order), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
    for index in order:
        results[index] = rows[index].result(model)
    return [r for r in results if r is not None]
