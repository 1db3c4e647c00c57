"""Rehearsal: the model's own answers to general prompts, mixed into every training run.

A LoRA adapter trained only on a night's corrections learns them, and forgets much else: on the embedded
135M model twelve epochs on nine product facts broke six of seven canary answers ("capital of France").
Rehearsal (self-distillation replay) counters that: before training, the model that is about to be trained
(the base model, or base + the parent adapter when continuing) answers the prompts of
``prompts/rehearsal.jsonl`` greedily under the server's system prompt, and those exact tokens are trained on
beside the harvest examples. The loss on them pulls the adapter back to today's behaviour everywhere the
corrections do not reach, so the adapter changes what it was taught and little else.

Only right answers are rehearsed: a line's ``accept`` words (one must appear, case-insensitive) filter
out the model's mistakes, which rehearsal would otherwise spread (rehearsing the 135M model's "To add 3
and 5, we can use the concept of comma" turned its correct "2 + 2" answer into the same nonsense).

The file holds one JSON object a line, ``{"prompt": "...", "accept": ["..."], "max_tokens": 16}``
(``accept`` and ``max_tokens`` optional; 16 tokens by default: an answer's first words are where a drifting
adapter shows, and short answers keep rehearsal cheap); blank lines and ``//`` comments are skipped. Keep it disjoint from ``prompts/canary.jsonl``: the canary
must stay a held-out check (``tests/test_rehearsal.py`` enforces this for the bundled files).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from council.core.jsonl import json_objects
from council.engine.base import Engine, GenerationRequest
from council.engine.loading import chat_ids
from council.engine.model_files import BaseModel
from training.errors import TrainingError
from training.job import IGNORE_INDEX, TokenizedExample

log = logging.getLogger(__name__)

REHEARSAL_FILE = "rehearsal.jsonl"
DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class RehearsalPrompt:
    prompt: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    accept: tuple[str, ...] = ()

    def accepts(self, answer: str) -> bool:
        """True when ``answer`` contains one of ``accept`` (always, without any)."""
        text = answer.lower()
        return not self.accept or any(word.lower() in text for word in self.accept)


def load_prompts(path: Path) -> list[RehearsalPrompt]:
    """Parse a rehearsal JSONL file; TrainingError names the line to fix."""
    prompts = []
    for where, data in json_objects(path, TrainingError, "restore it from the repo or pass --rehearsal 0"):
        prompt, max_tokens = data.get("prompt"), data.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(prompt, str) or not prompt.strip():
            raise TrainingError(f"{where}: 'prompt' must be a non-empty string")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 512:
            raise TrainingError(f"{where}: 'max_tokens' must be an integer from 1 to 512")
        accept = data.get("accept", [])
        if not isinstance(accept, list) or not all(isinstance(a, str) and a.strip() for a in accept):
            raise TrainingError(f"{where}: 'accept' must be a list of non-empty strings")
        prompts.append(RehearsalPrompt(prompt.strip(), max_tokens, tuple(accept)))
    return prompts


def local_engine(base: BaseModel, parent_path: str | None) -> Engine:
    """The model about to be trained, as an engine: the base model, with the parent adapter when continuing
    (in-process, on CPU: rehearsal answers are short, so even a GPU night generates them here)."""
    from council.engine.local.model import LocalModel

    engine = LocalModel(base)
    if parent_path:
        engine.use_adapter(parent_path)
    return engine


def generate_examples(
    engine: Engine,
    tokenizer: Any,
    system: str,
    prompts: list[RehearsalPrompt],
    *,
    batch_size: int = 16,
    max_length: int = 512,
) -> list[TokenizedExample]:
    """``engine``'s greedy answers to ``prompts`` that pass their ``accept`` words, as training examples
    (labels on the answer tokens only; ``tokenizer`` must be the engine's model's).

    An answer that ends with the end-of-turn token keeps it, so the adapter also keeps knowing when to stop;
    one cut at its ``max_tokens`` is kept as far as it went. Raises TrainingError when the engine fails."""
    if not prompts:
        return []
    started = time.perf_counter()
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": item.prompt}]
                     for item in prompts]
    examples: list[TokenizedExample] = []
    rejected = 0
    for start in range(0, len(prompts), batch_size):
        requests = [GenerationRequest(messages, prompts[index].max_tokens)  # greedy
                    for index, messages in enumerate(conversations[start:start + batch_size], start)]
        for index, answer in enumerate(engine.generate_batch(requests), start):
            if isinstance(answer, Exception):
                raise TrainingError(f"rehearsal prompt {index + 1} could not be answered: {answer}") from answer
            prompt_ids = chat_ids(tokenizer, conversations[index])
            full = (prompt_ids + answer.token_ids)[:max_length]
            if not answer.token_ids or len(prompt_ids) >= len(full):
                continue
            if not prompts[index].accepts(answer.text):
                rejected += 1
                continue
            labels = [IGNORE_INDEX] * len(prompt_ids) + full[len(prompt_ids):]
            examples.append(TokenizedExample(input_ids=full, labels=labels, record_id=f"rehearsal-{index}",
                                             rehearsal=True))
    log.info("rehearsal: %d right answer(s) of the %s kept, %d wrong one(s) left out, %.1f s", len(examples),
             "parent adapter" if getattr(engine, "adapter_version", None) else "base model", rejected,
             time.perf_counter() - started)
    return examples
