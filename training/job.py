"""What a training backend is given (``TrainJob``) and what it hands back (``TrainResult``).

Both are plain data that round-trip through JSON, so a backend can run in its own process
(``python -m training.unsloth_backend job.json``) and see exactly what the in-process backend sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ALL_LINEAR = "all-linear"  # PEFT's name for every linear layer but the output head
IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    """One chat-formatted example; ``labels`` is -100 on prompt tokens (loss on assistant tokens only)."""

    input_ids: list[int]
    labels: list[int]
    record_id: str = ""
    rehearsal: bool = False  # the model's own answer (training/rehearsal.py), not a harvested one

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class Hyperparameters:
    epochs: int
    learning_rate: float
    batch_size: int
    grad_accum: int
    max_length: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str] | str = ALL_LINEAR  # module names, or ALL_LINEAR
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    stop_when_learned: bool = True  # end before ``epochs`` once greedy decoding reproduces every harvested answer


@dataclass
class TrainJob:
    base_path: str
    output_dir: str
    hyperparameters: Hyperparameters
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    pad_id: int
    parent_path: str | None = None
    seed: int = 0
    device: str = "cpu"
    log_every_seconds: float = 10.0
    torch_threads: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainJob:
        data: dict[str, Any] = json.loads(text)
        data["hyperparameters"] = Hyperparameters(**data["hyperparameters"])
        data["train"] = [TokenizedExample(**item) for item in data["train"]]
        data["validation"] = [TokenizedExample(**item) for item in data["validation"]]
        return cls(**data)


@dataclass
class TrainResult:
    train_loss: list[float]
    validation_loss: list[float]
    step_loss: list[float]
    tokens: int
    target_tokens: int
    steps: int
    train_seconds: float
    trainable_parameters: int
    device: str
    learned_at_epoch: int | None = None  # first epoch after which every harvested answer was reproduced

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        data = {k: v for k, v in data.items() if k != "tokens_per_second"}
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the block (0 = leave torch's setting), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
