"""Mean validation loss of a model (with or without an adapter) on harvest-format examples.

Deploy uses it to check that a candidate adapter does no worse than the current one::

    from training.data import load_examples
    from training.evaluate import validation_loss
    examples = load_examples(Path("loras/<version>/validation.jsonl"))
    loss = validation_loss(local_model.active, local_model.tokenizer, examples, PromptStore(settings.prompts_dir))

Examples are formatted exactly as in training (chat template, ``prompts/train_assistant.j2``) and the loss
is the token-weighted mean next-token cross-entropy over the assistant turn only.
"""

from __future__ import annotations

from typing import Any

from council.engine.loading import pad_id
from council.routing.prompts import PromptStore
from training.data import encode_all
from training.loop import evaluate_loss, pick_loss


def validation_loss(
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    prompts: PromptStore,
    max_length: int = 512,
    batch_size: int = 8,
) -> float:
    """Token-weighted mean loss on the assistant turns of ``examples``; NaN when none fits ``max_length``."""
    encoded, _ = encode_all(tokenizer, examples, prompts, max_length)
    device = next(model.parameters()).device
    return evaluate_loss(model, encoded, batch_size, pad_id(tokenizer), device, pick_loss(model))
