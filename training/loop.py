"""The training loop shared by every backend: length-grouped batches, dynamic padding, AdamW on LoRA params.

Batches are grouped by length and padded to their longest member (never to ``max_length``). On models
that allow it the loss runs the LM head only on assistant-token positions (``sparse_loss``); prompt and
padding positions never reach the 49k-wide vocabulary projection.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from training.job import IGNORE_INDEX, Hyperparameters, TokenizedExample

log = logging.getLogger(__name__)

LossFn = Callable[[Any, dict[str, Any]], tuple[Any, int]]
MEGABATCH = 50  # batches sorted together; larger = less padding, smaller = more shuffling


def length_grouped_batches(
    examples: list[TokenizedExample], batch_size: int, seed: int | None
) -> list[list[TokenizedExample]]:
    """Batches of similar length; ``seed`` None keeps a plain longest-first order (evaluation)."""
    order = list(range(len(examples)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    batches: list[list[TokenizedExample]] = []
    span = batch_size * MEGABATCH
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -len(examples[i].input_ids))
        batches.extend(
            [examples[i] for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)
        )
    if seed is not None:
        random.Random(seed + 1).shuffle(batches)
    return batches


def mixed_batches(
    examples: list[TokenizedExample], batch_size: int, seed: int
) -> list[list[TokenizedExample]]:
    """Batches that each hold harvested and rehearsal examples in the run's proportion.

    Grouping by length alone puts the short harvested answers into batches of their own, and those steps
    pull the whole model towards the new facts unopposed: which kind of step comes last then decides how
    much a run forgets (on the 135M model, canary 4/7 to 7/7 by seed alone). Mixed, every step is balanced."""
    rng = random.Random(seed)
    harvested = [item for item in examples if not item.rehearsal]
    rehearsed = [item for item in examples if item.rehearsal]
    rng.shuffle(harvested)
    rng.shuffle(rehearsed)
    count = max(1, math.ceil(len(examples) / batch_size))
    batches: list[list[TokenizedExample]] = [[] for _ in range(count)]
    for group in (harvested, rehearsed):
        for index, item in enumerate(group):
            batches[index % count].append(item)
    rng.shuffle(batches)
    return [batch for batch in batches if batch]


def collate(batch: list[TokenizedExample], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(item.input_ids) for item in batch)
    ids = [item.input_ids + [pad_id] * (width - len(item.input_ids)) for item in batch]
    mask = [[1] * len(item.input_ids) + [0] * (width - len(item.input_ids)) for item in batch]
    labels = [item.labels + [IGNORE_INDEX] * (width - len(item.labels)) for item in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "labels": torch.tensor(labels, device=device),
    }


def linear_layer_names(model: Any) -> list[str]:
    """Names (last part) of the model's linear layers but its output head: what PEFT's ``"all-linear"`` picks,
    for backends that want the names spelled out (Unsloth)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def causal_lm(model: Any) -> Any:
    """The transformers ``*ForCausalLM`` under a PeftModel (LoRA layers are injected into it in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_sparse_loss(model: Any) -> bool:
    lm = causal_lm(model)
    config = getattr(lm, "config", None)
    return (
        hasattr(lm, "get_decoder")
        and lm.get_output_embeddings() is not None
        and not getattr(config, "final_logit_softcapping", None)
        and getattr(config, "logit_scale", None) is None
    )


def sparse_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token loss over labelled positions, projecting only those hidden states to the vocabulary."""
    import torch.nn.functional as F

    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def full_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed loss through the model's own forward (for backends that patch it, e.g. Unsloth)."""
    count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    out = model(**batch, use_cache=False)
    return out.loss * count, count


def pick_loss(model: Any) -> LossFn:
    return sparse_loss if supports_sparse_loss(model) else full_loss


def evaluate_loss(
    model: Any, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: Any, loss_fn: LossFn
) -> float:
    """Token-weighted mean loss of ``model`` on ``examples`` (NaN when there are none)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in length_grouped_batches(examples, batch_size, seed=None):
                loss, n = loss_fn(model, collate(batch, pad_id, device))
                total, count = total + float(loss), count + n
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def reproduces(model: Any, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: Any) -> bool:
    """True when, fed each example's prompt and answer so far, the model's most likely next token is always the
    answer's next token: greedy decoding (as the server and canary run it) would say every answer verbatim."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in length_grouped_batches(examples, batch_size, seed=None):
                tensors = collate(batch, pad_id, device)
                logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"],
                               use_cache=False).logits[:, :-1]
                targets = tensors["labels"][:, 1:]
                keep = targets != IGNORE_INDEX
                if not bool((logits.argmax(dim=-1)[keep] == targets[keep]).all()):
                    return False
    finally:
        model.train(was_training)
    return True


class Progress:
    """tqdm when stderr is a terminal, else a log line every ``every`` seconds with loss and tokens/s."""

    def __init__(self, total: int, every: float) -> None:
        self.total, self.every, self.done = total, every, 0
        self.started = self.last = time.perf_counter()
        self.tokens = 0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True)

    def update(self, epoch: str, loss: float, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens
        now = time.perf_counter()
        rate = self.tokens / max(now - self.started, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {epoch} loss {loss:.4f} {rate:.0f} tok/s", refresh=False)
            self.bar.update(1)
        elif now - self.last >= self.every or self.done == self.total:
            self.last = now
            log.info("epoch %s batch %d/%d loss %.4f %.0f tokens/s", epoch, self.done, self.total, loss, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def run_loop(
    model: Any,
    train: list[TokenizedExample],
    validation: list[TokenizedExample],
    hp: Hyperparameters,
    *,
    pad_id: int,
    device: Any,
    seed: int,
    loss_fn: LossFn,
    log_every_seconds: float = 10.0,
) -> dict[str, Any]:
    """Train the trainable parameters of ``model`` in place; returns losses, token counts and timing."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; was the LoRA adapter loaded as trainable?")
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    batcher = mixed_batches if any(item.rehearsal for item in train) else length_grouped_batches
    per_epoch = [batcher(train, hp.batch_size, seed=seed * 7919 + e) for e in range(hp.epochs)]
    total_steps = sum(math.ceil(len(b) / hp.grad_accum) for b in per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, hp.warmup_ratio))
    out: dict[str, Any] = {
        "train_loss": [],
        "validation_loss": [],
        "step_loss": [],
        "tokens": 0,
        "target_tokens": 0,
        "learned_at_epoch": None,
    }
    seconds, steps = 0.0, 0
    progress = Progress(sum(len(b) for b in per_epoch), log_every_seconds)
    log.info(
        "training started: %d examples, %d epoch(s), %d optimizer steps on %s",
        len(train),
        hp.epochs,
        total_steps,
        device,
    )
    harvested = [item for item in train if not item.rehearsal]
    model.train()
    try:
        for epoch, batches in enumerate(per_epoch, start=1):
            started = time.perf_counter()
            epoch_loss, epoch_count = 0.0, 0
            for start in range(0, len(batches), hp.grad_accum):
                group = batches[start : start + hp.grad_accum]
                group_count = sum(item.target_tokens for batch in group for item in batch)
                group_loss = 0.0
                for batch in group:
                    tensors = collate(batch, pad_id, device)
                    loss, count = loss_fn(model, tensors)
                    (loss / max(group_count, 1)).backward()
                    real = int(tensors["attention_mask"].sum())
                    value = float(loss.detach())
                    group_loss += value
                    out["tokens"] += real
                    out["target_tokens"] += count
                    progress.update(f"{epoch}/{hp.epochs}", value / max(count, 1), real)
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                out["step_loss"].append(group_loss / max(group_count, 1))
                epoch_loss, epoch_count = epoch_loss + group_loss, epoch_count + group_count
            seconds += time.perf_counter() - started
            out["train_loss"].append(epoch_loss / max(epoch_count, 1))
            if validation:
                out["validation_loss"].append(
                    evaluate_loss(model, validation, hp.batch_size, pad_id, device, loss_fn)
                )
            log.info(
                "epoch %d/%d done: train loss %.4f%s",
                epoch,
                hp.epochs,
                out["train_loss"][-1],
                f", validation loss {out['validation_loss'][-1]:.4f}" if validation else "",
            )
            if hp.stop_when_learned and harvested and reproduces(model, harvested, hp.batch_size, pad_id, device):
                out["learned_at_epoch"] = epoch
                if epoch < hp.epochs:
                    log.info("every harvested answer is reproduced after epoch %d; stopping early (more epochs "
                             "would only move the model further from what it already did right)", epoch)
                    break
    finally:
        progress.close()
    model.eval()
    out.update(steps=steps, train_seconds=seconds)
    return out
