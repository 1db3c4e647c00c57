"""``TrainConfig``: every option of ``council train``, with its help text and its checks.

``training.main`` turns its fields into command-line flags (``council.core.cliargs.add_config_arguments``)
and ``training.pipeline`` reads them; both import it from here, so neither imports the other back. Build one
with ``TrainConfig.from_settings(settings, epochs=3, ...)``; a bad value raises ValueError saying how to fix it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council.core.config import REPO_PROMPTS, Settings
from training.data import ASSISTANT_TEMPLATE
from training.job import ALL_LINEAR
from training.rehearsal import REHEARSAL_FILE

BACKENDS = ("auto", "unsloth", "peft")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    home: Path = field(default=Path("~/.council"), metadata={"help": "State directory (settings.home)."})
    model_source: str = field(
        default="", metadata={"help": "Base model folder or hub id; empty = embedded SmolLM2."}
    )
    prompts_dir: Path = field(default=REPO_PROMPTS, metadata={"help": "Folder holding train_assistant.j2."})
    embedder_runtime: str = field(default="onnx-int8", metadata={
        "help": "memory.embedder_runtime: the runtime that embeds the adapter's scope, as the server will."})
    backend: str = field(default="auto", metadata={
        "help": "Training backend: auto (unsloth if CUDA and Unsloth are present, else peft), unsloth (QLoRA on "
                "a CUDA GPU, in a child process) or peft (LoRA in this process, CPU or GPU)."})
    device: str = field(
        default="auto", metadata={"help": "peft backend device: auto (CUDA if present), cpu or cuda."}
    )
    fresh: bool = field(
        default=False, metadata={"help": "Train from the base model instead of continuing loras/current."}
    )
    data: list[str] = field(
        default_factory=list, metadata={"help": "Harvest JSONL files to use; empty = unconsumed files."}
    )
    min_examples: int = field(
        default=5, metadata={"help": "Fewer usable examples than this exits 3 (nothing to do)."}
    )
    min_quality: float = field(
        default=0.7, metadata={"help": "Lowest quality_score a harvest line needs to be used."}
    )
    validation_fraction: float = field(
        default=0.15, metadata={"help": "Share of examples held out for validation (0..0.5)."}
    )
    split_min_examples: int = field(
        default=10, metadata={"help": "Hold out a validation set only from this many examples."}
    )
    epochs: int = field(default=12, metadata={"help": (
        "Most epochs when training from the base model (it stops once every harvested answer is reproduced; "
        "the 135M model needs ~5-8 to learn a new fact from its paraphrases).")})
    learning_rate: float = field(default=3e-3, metadata={"help": (
        "AdamW learning rate from the base model. 2e-4 (a common LoRA default) moved the 135M model's loss "
        "1.02 -> 0.85 in 3 epochs and taught it no fact; 3e-3 learns them, rehearsal and the adapter scope keep "
        "the rest.")})
    incremental_epochs: int = field(
        default=12, metadata={"help": "Most epochs when continuing the current adapter."}
    )
    incremental_learning_rate: float = field(default=1e-3, metadata={"help": (
        "Learning rate when continuing the current adapter (earlier nights' lines are replayed beside the new).")})
    replay_ratio: float = field(default=0.5, metadata={"help": (
        "Most earlier nights' lines replayed when continuing, as a share of the night's own training lines "
        "(forgotten records first, then those replayed longest ago: training/replay.py); 0 = every line. From "
        "the base model every line is replayed. 0.5 keeps a night within ~1.5x night 1's lines (issue 28).")})
    batch_size: int = field(default=8, metadata={"help": "Examples per batch (padded to the batch's longest)."})
    grad_accum: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example; longer answers are cut."})
    lora_r: int = field(
        default=16, metadata={"help": "LoRA rank (ignored when continuing: the parent's is kept)."}
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (ignored when continuing)."})
    lora_target_modules: str = field(default=ALL_LINEAR, metadata={"help": (
        "Layers that get LoRA weights (ignored when continuing): all-linear (every linear layer but the output "
        "head; PEFT's option) or a comma list such as q_proj,v_proj. On the 135M model attention-only LoRA "
        "answered 7/9 of the demo's rewordings after the night, all-linear 9/9 (the facts live in the MLPs; "
        "QLoRA, Dettmers et al. 2023, needs every linear layer to match full fine-tuning).")})
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA input (ignored when continuing)."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of optimizer steps with linear warm-up."}
    )
    stop_when_learned: bool = field(default=True, metadata={
        "help": "End before --epochs once greedy decoding reproduces every harvested training answer."})
    rehearsal: int = field(default=32, metadata={
        "help": "Prompts of <prompts_dir>/rehearsal.jsonl the model answers itself and is trained on too, so "
                "the adapter keeps its general answers (training/rehearsal.py); 0 = none."})
    torch_threads: int = field(
        default=0, metadata={"help": "torch.set_num_threads while training on CPU; 0 = torch's default."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the split, shuffling and LoRA initialisation."})
    log_every_seconds: float = field(
        default=10.0, metadata={"help": "Progress log interval when stderr is no TTY."}
    )

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        self.prompts_dir = Path(self.prompts_dir).expanduser()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0 (0 = torch's default), got {self.torch_threads}")
        for name in (
            "min_examples",
            "epochs",
            "incremental_epochs",
            "batch_size",
            "grad_accum",
            "lora_r",
            "lora_alpha",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not re.fullmatch(r"all-linear|[A-Za-z0-9_.]+(,[A-Za-z0-9_.]+)*", self.lora_target_modules.replace(" ", "")):
            raise ValueError(f"lora_target_modules must be all-linear or a comma list of module names such as "
                             f"q_proj,v_proj; got {self.lora_target_modules!r}")
        if self.rehearsal < 0:
            raise ValueError(f"rehearsal must be >= 0 (0 = no rehearsal prompts), got {self.rehearsal}")
        if self.rehearsal and not (self.prompts_dir / REHEARSAL_FILE).is_file():
            raise ValueError(
                f"{self.prompts_dir / REHEARSAL_FILE} is missing; restore it from the repo or pass --rehearsal 0"
            )
        if not math.isfinite(self.replay_ratio) or self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0 (e.g. 0.5; 0 = replay every earlier line), got {self.replay_ratio}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be >= 16 tokens, got {self.max_length}")
        for name in ("learning_rate", "incremental_learning_rate"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), e.g. 2e-4; got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("lora_dropout and warmup_ratio must be in [0, 1)")
        if not 0 <= self.validation_fraction <= 0.5:
            raise ValueError(
                f"validation_fraction must be in [0, 0.5] (e.g. 0.15), got {self.validation_fraction}"
            )
        if not math.isfinite(self.min_quality):
            raise ValueError("min_quality must be a number, e.g. 0.7")
        if self.embedder_runtime not in ("onnx-int8", "onnx", "torch"):
            raise ValueError("embedder_runtime must be onnx-int8, onnx or torch (memory.embedder_runtime)")
        if not (self.prompts_dir / ASSISTANT_TEMPLATE).is_file():
            raise ValueError(
                f"{self.prompts_dir / ASSISTANT_TEMPLATE} is missing; set prompts_dir in council.toml"
            )
        missing = [p for p in self.data if not Path(p).is_file()]
        if missing:
            raise ValueError(f"--data file(s) not found: {', '.join(missing)}")

    def target_modules(self) -> list[str] | str:
        """``lora_target_modules`` as PEFT takes it: ``"all-linear"`` or a list of names."""
        names = self.lora_target_modules.replace(" ", "")
        return names if names == ALL_LINEAR else names.split(",")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """A config for ``settings``' state directory and base model; ``overrides`` set any other field."""
        fields = {
            "home": settings.home,
            "model_source": settings.model.source,
            "prompts_dir": settings.prompts_dir,
            "embedder_runtime": settings.memory.embedder_runtime,
        }
        return cls(**{**fields, **overrides})
