"""Several generations decoded together: one forward pass per token step serves every row of the batch.

On a CPU a 135M-parameter model is bound by memory bandwidth, not arithmetic: a step that decodes eight
sequences costs little more than a step that decodes one. The harvest council (three members asking at
once, several records at a time) and concurrent chat requests therefore finish several times sooner when
their generations share steps (``bench/batch_bench.py`` measures it).

Rows are left-padded to a common prompt length, after the part of each prompt whose keys and values are
already cached (``council/engine/local/prefix_cache.py``). Each row keeps its own sampling settings, seed, stop strings,
token limit, streaming callback and cancellation, and is answered by the live adapter or by the base model,
as the adapter's scope decides (``council/engine/adapter_scope.py``). Once half of the rows have finished they
leave the batch; the others go on, so one long answer costs the short ones little. Batches are formed from
requests that arrive together and are capped at ``model.max_batch``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from council.engine.adapter_scope import AdapterUse
from council.core.errors import InvalidRequestError

if TYPE_CHECKING:
    from council.engine.local.model import Generation, LocalModel, TokenLogprob

log = logging.getLogger(__name__)
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
    top_logprobs: int = 0  # alternatives reported per token (OpenAI top_logprobs, 0-20)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit (OpenAI logit_bias)
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence of a token in the answer
    presence_penalty: float = 0.0  # subtracted once from any token already in the answer
    on_failed: Callable[[Exception], None] | None = None  # told at once when the request cannot even start


@dataclass
class _Row:
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

    def adjust(self, logits: Any) -> Any:
        """The row's logits with its logit bias and frequency/presence penalties applied (OpenAI's
        definitions: ``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``)."""
        import torch

        request = self.request
        if not (request.logit_bias or request.frequency_penalty or request.presence_penalty):
            return logits
        logits = logits.clone()
        if request.logit_bias:
            ids = torch.tensor(list(request.logit_bias))
            logits[ids] += torch.tensor(list(request.logit_bias.values()), dtype=logits.dtype)
        if self.out_ids and (request.frequency_penalty or request.presence_penalty):
            counts = torch.bincount(torch.tensor(self.out_ids), minlength=logits.shape[0])[: logits.shape[0]]
            logits -= counts * request.frequency_penalty + (counts > 0) * request.presence_penalty
        return logits

    def accept(self, model: LocalModel, token: int, logprob: float,
               top: list[tuple[int, float]] | None = None) -> None:
        """Take the sampled ``token`` (``top``: the most likely (id, logprob) pairs): update text, stop strings,
        streaming and the finish reason."""
        from council.engine.local.model import TokenLogprob

        if token in model.eos_ids:
            self.finish = "stop"
            return
        self.out_ids.append(token)
        self.logprobs.append(TokenLogprob(model.tokenizer.decode([token]), logprob, model.token_bytes(token),
                                          [model.alternative(i, lp) for i, lp in top or []]))
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

    def result(self, model: LocalModel) -> Generation | Exception:
        from council.engine.local.model import Generation, TokenLogprob

        if self.error is not None:
            return self.error
        on_text = self.request.on_text
        if on_text is not None and len(self.text) > self.emitted:
            on_text(self.text[self.emitted:], self.logprobs[-1] if self.logprobs else TokenLogprob("", 0.0))
        return Generation(text=self.text, finish_reason=self.finish or "length", logprobs=self.logprobs,
                          prompt_tokens=len(self.prompt_ids),
                          adapter=self.use.adapter, seconds=time.perf_counter() - self.started,
                          scope_similarity=self.use.similarity)


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
    vocab = model.model.get_output_embeddings().weight.shape[0]
    if request.logit_bias and max(request.logit_bias) >= vocab:
        raise InvalidRequestError(f"logit_bias names token {max(request.logit_bias)}; this model's tokens are "
                                  f"0-{vocab - 1}", code="invalid_value", param="logit_bias")
    # torch seeds are unsigned 64-bit; OpenAI's are signed, so map them one to one
    generator = torch.Generator().manual_seed(request.seed % 2**64) if request.seed is not None else None
    return _Row(request, prompt_ids, generator, [s for s in (request.stop or []) if s], time.perf_counter(),
                history=model.encode_history(request.messages, prompt_ids) if model.prefix_cache.max_entries else [])


def _fill_cache(model: LocalModel, rows: list[_Row]) -> None:
    """Compute and cache the histories that repeat (see council/engine/local/prefix_cache.py), each once."""
    import torch

    cache = model.prefix_cache
    counts = Counter((row.use.adapter, tuple(row.history)) for row in rows)
    for (adapter, history), count in counts.items():
        if not cache.wants(adapter, list(history), count > 1):
            continue
        base_row = {"adapter_names": [BASE_ROW]} if adapter is None and model.adapter_version else {}
        output = model.active(input_ids=torch.tensor([history]), use_cache=True, logits_to_keep=1, **base_row)
        cache.store(adapter, list(history),
                    [(layer.keys[0], layer.values[0]) for layer in output.past_key_values.layers])


def _layout(model: LocalModel, rows: list[_Row], pad_id: int) -> tuple[Any, Any, Any, Any, int]:
    """Prefill inputs: (ids, mask, positions, past, reused tokens).

    A row whose history is cached (council/engine/local/prefix_cache.py) brings its keys and values in ``past``, left-
    padded to the longest cached history; only the rest of each prompt, left-padded to the longest rest, is
    computed. The padding inside a row is masked and positions count its real tokens only."""
    import torch
    from transformers import DynamicCache

    cache = model.prefix_cache
    if cache.max_entries:
        _fill_cache(model, rows)
    hits = [cache.lookup(row.use.adapter, row.prompt_ids) if cache.max_entries else None for row in rows]
    cached = [hit.tokens if hit else 0 for hit in hits]
    rests = [len(row.prompt_ids) - n for row, n in zip(rows, cached, strict=True)]
    history, rest = max(cached), max(rests)
    ids = torch.tensor([[pad_id] * (rest - r) + row.prompt_ids[n:] for row, n, r in zip(rows, cached, rests, strict=True)])
    mask = torch.tensor([[0] * (history - n) + [1] * n + [0] * (rest - r) + [1] * r
                         for n, r in zip(cached, rests, strict=True)])
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, history:]
    if not history:
        return ids, mask, positions, None, 0
    reference = next(hit for hit in hits if hit is not None)
    layers = []
    for layer, (ref_keys, _) in enumerate(reference.layers):
        shape = (len(rows), ref_keys.shape[0], history, ref_keys.shape[2])
        keys, values = ref_keys.new_zeros(shape), ref_keys.new_zeros(shape)
        for slot, (hit, n) in enumerate(zip(hits, cached, strict=True)):
            if hit is not None:
                keys[slot, :, history - n:] = hit.layers[layer][0]
                values[slot, :, history - n:] = hit.layers[layer][1]
        layers.append((keys, values))
    for n in cached:
        if n:
            cache.note_hit(n)
    return ids, mask, positions, DynamicCache(ddp_cache_data=layers), sum(cached)


def _step(model: LocalModel, live: list[_Row], logits: Any, logp: Any, pad_id: int) -> list[int]:
    """Pick each row's next token; a row whose sampling fails finishes with its own error."""
    import torch

    next_ids, finite = [], torch.isfinite(logits).all(dim=-1).tolist()
    for slot, row in enumerate(live):
        if row.finish is None and row.request.cancelled is not None and row.request.cancelled.is_set():
            row.finish = "cancelled"
        if row.finish is not None:
            next_ids.append(pad_id)
            continue
        try:
            if not finite[slot]:
                raise ValueError("the model's scores for this request are NaN or infinite")
            token = model.pick(row.adjust(logits[slot]), row.request.temperature, row.request.top_p, row.generator)
            top = None
            if row.request.top_logprobs:
                values, ids = torch.topk(logp[slot], row.request.top_logprobs)
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
            row.accept(model, token, float(logp[slot, token]), top)
        except Exception as exc:  # noqa: BLE001 - not hidden: it becomes this request's own error
            log.warning("a generation failed on its own (%s: %s); its batch goes on", type(exc).__name__, exc)
            row.finish, row.error = "error", exc
            token = pad_id
        next_ids.append(token)
    return next_ids


def _decode(model: LocalModel, live: list[_Row]) -> tuple[int, float, int]:
    """Run the batch's forward passes until every row has finished; returns (steps, prefill s, reused)."""
    import torch

    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    names = None
    if model.adapter_version is not None and not all(row.use.adapter for row in live):
        names = [model.peft_name if row.use.adapter else BASE_ROW for row in live]
    started, prefill, steps = time.perf_counter(), 0.0, 0
    with torch.inference_mode():
        ids, mask, positions, past, reused = _layout(model, live, pad_id)
        while any(row.finish is None for row in live):
            steps += 1
            output = model.active(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                                  use_cache=True, logits_to_keep=1, **({"adapter_names": names} if names else {}))
            past = output.past_key_values
            logits = output.logits[:, -1].float()
            next_ids = _step(model, live, logits, torch.log_softmax(logits, dim=-1), pad_id)
            if steps == 1:
                prefill = time.perf_counter() - started
            ids = torch.tensor(next_ids).unsqueeze(1)
            mask = torch.cat([mask, torch.ones(len(live), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            going = [slot for slot, row in enumerate(live) if row.finish is None]
            if going and len(going) <= len(live) // 2:  # drop finished rows: later steps cost less
                keep = torch.tensor(going)
                past.batch_select_indices(keep)
                ids, mask, positions = ids[keep], mask[keep], positions[keep]
                live = [live[slot] for slot in going]
                names = [names[slot] for slot in going] if names else None
    return steps, prefill, reused


def _assign_adapters(model: LocalModel, live: list[_Row]) -> None:
    """Decide who answers each row; when the queries cannot be embedded together, each row is tried alone
    and only the one that breaks the embedder fails."""
    try:
        uses = model.adapter_uses([row.request.messages for row in live])
    except Exception as exc:  # noqa: BLE001 - not hidden: it becomes the failing request's own error
        if len(live) == 1:
            live[0].finish, live[0].error = "error", exc
            return
        for row in live:
            _assign_adapters(model, [row])
        return
    for row, use in zip(live, uses, strict=True):
        row.use = use


def generate_batch(model: LocalModel, requests: list[GenerationRequest]) -> list[Generation | Exception]:
    """Decode ``requests`` together; each entry is its Generation, or the error that request alone caused.

    Isolation: a request that cannot be prepared (too long, bad logit bias, text the tokenizer or embedder
    rejects) or sampled fails alone. If a forward pass of the whole batch fails, the requests that have not
    yet produced a token are decoded again one by one, so only the one that breaks the model fails."""
    results: list[Generation | Exception | None] = [None] * len(requests)
    rows: dict[int, _Row] = {}
    for index, request in enumerate(requests):
        try:
            rows[index] = _row(model, request)
        except InvalidRequestError as exc:
            results[index] = exc
        except Exception as exc:  # noqa: BLE001 - the tokenizer refused this request's text: its error alone
            results[index] = _invalid(exc)
        else:
            if request.max_new_tokens <= 0:
                rows[index].finish = "length"
    if rows:
        _assign_adapters(model, list(rows.values()))
    for index, request in enumerate(requests):  # refused before decoding: their callers need not wait
        failed = results[index] if index not in rows else rows[index].error
        if failed is not None and request.on_failed is not None:
            request.on_failed(failed)
    live = [row for row in rows.values() if row.error is None]
    started = time.perf_counter()
    try:
        steps, prefill, reused = _decode(model, live) if live else (0, 0.0, 0)
    except Exception as exc:  # noqa: BLE001 - isolated below; a lone request gets it as its own error
        if len(live) == 1:
            live[0].finish, live[0].error = "error", exc
        else:
            log.warning("a batch of %d failed (%s: %s); decoding its requests one by one", len(live),
                        type(exc).__name__, exc)
        for index, row in rows.items():
            if row.error is None:
                (results[index],) = generate_batch(model, [row.request]) if not row.out_ids else (exc,)
            else:
                results[index] = row.error
        return [r for r in results if r is not None]
    log.debug("batch of %d: %d prompt tokens, %d of them reused, prefill %.2f s, %d steps in %.2f s, "
              "%d tokens kept", len(rows), sum(len(row.prompt_ids) for row in rows.values()), reused, prefill, steps,
              time.perf_counter() - started, sum(len(row.out_ids) for row in rows.values()))
    for index, row in rows.items():
        results[index] = row.result(model)
    return [r for r in results if r is not None]


def _invalid(exc: Exception) -> InvalidRequestError:
    """A request the tokenizer or embedder could not take, as the client's error (HTTP 400)."""
    error = InvalidRequestError(f"the request's text could not be processed ({type(exc).__name__}: {exc})",
                                code="unprocessable_text", param="messages")
    error.__cause__ = exc
    return error
