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
import time
from collections import Counter
from typing import Any

from council.core.errors import InvalidRequestError
from council.engine import loading
from council.engine.base import Generation, GenerationRequest
from council.engine.local.rows import LocalModel, Row, prepare_row

log = logging.getLogger(__name__)
BASE_ROW = "__base__"  # PEFT's adapter name for "no adapter on this row" in a mixed batch


def _fill_cache(model: LocalModel, rows: list[Row]) -> None:
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


def _layout(model: LocalModel, rows: list[Row], pad_id: int) -> tuple[Any, Any, Any, Any, int]:
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


def _step(model: LocalModel, live: list[Row], logits: Any, logp: Any, pad_id: int) -> list[int]:
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
            scores, row_logp = row.adjust(logits[slot]), logp[slot]
            if row.matcher is not None:  # logprobs of the constrained distribution: a forced token is certain
                scores = row.matcher.mask(scores)
                row_logp = torch.log_softmax(scores, dim=-1)
            sampling = row.request.sampling
            token = model.pick(scores, sampling.temperature, sampling.top_p, row.generator)
            if row.matcher is not None:
                row.matcher.take(token)
            top = None
            if sampling.top_logprobs:
                values, ids = torch.topk(row_logp, sampling.top_logprobs)
                top = [(i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True) if v > float("-inf")]
            row.accept(model, token, float(row_logp[token]), top)
        except Exception as exc:  # noqa: BLE001 - not hidden: it becomes this request's own error
            log.warning("a generation failed on its own (%s: %s); its batch goes on", type(exc).__name__, exc)
            row.finish, row.error = "error", exc
            token = pad_id
        next_ids.append(token)
    return next_ids


def _adapter_names(model: LocalModel, live: list[Row]) -> list[str] | None:
    """PEFT's per-row adapter names when the batch mixes adapter rows and base rows, else None."""
    if model.adapter_version is None or all(row.use.adapter for row in live):
        return None
    return [model.peft_name if row.use.adapter else BASE_ROW for row in live]


def _decode(model: LocalModel, live: list[Row]) -> tuple[int, float, int]:
    """Run the batch's forward passes until every row has finished; returns (steps, prefill s, reused).

    Steps: lay the prompts out (prefill), then per step: one forward pass, pick each row's token, append it;
    once half the rows have finished, drop them from every tensor so later steps cost less."""
    import torch

    pad_id = loading.pad_id(model.tokenizer)
    names = _adapter_names(model, live)
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
            if going and len(going) <= len(live) // 2:
                keep = torch.tensor(going)
                past.batch_select_indices(keep)
                ids, mask, positions = ids[keep], mask[keep], positions[keep]
                live = [live[slot] for slot in going]
                names = [names[slot] for slot in going] if names else None
    return steps, prefill, reused


def _assign_adapters(model: LocalModel, live: list[Row]) -> None:
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
    rows: dict[int, Row] = {}
    for index, request in enumerate(requests):
        try:
            rows[index] = prepare_row(model, request)
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
