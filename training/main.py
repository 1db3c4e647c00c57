"""``council train``: fine-tune a LoRA adapter on harvested council answers and publish it as a new version.

It reads the harvest files not yet trained on (``<home>/training_data/harvest_*.jsonl`` minus those listed
with their current hash in ``consumed.json``) or the ``--data`` files, keeps lines whose ``quality_score``
reaches ``--min-quality``, formats them with the base model's chat template (assistant turn from
``prompts/train_assistant.j2``, loss on assistant tokens only), splits off a validation set, and trains:

* ``--backend peft`` (CPU default): transformers + PEFT LoRA in this process, our own training loop;
* ``--backend unsloth``: Unsloth QLoRA on a CUDA GPU, in a child process; ``auto`` picks it when possible.

By default it continues from the adapter ``loras/current`` points at (one epoch, lower learning rate);
``--fresh`` starts from the base model. The result is ``loras/<version>/`` (adapter, metadata.json,
training_config.json, validation.jsonl, loss.png), renamed into place only when complete.

Run it as ``council train [flags]`` or, without the ``council`` command, ``python -m training.main
[--config FILE] [--home DIR] [flags]`` (settings from council.core.config.load_settings()).
Exit codes: 0 new adapter, 1 failure, 2 bad arguments, 3 not enough new data (normal under cron).
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council.core import exitcodes
from council.core.config import REPO_PROMPTS, Settings, StatePaths, load_settings
from council.core.errors import CouncilError
from training import artifacts, pipeline
from training.data import ASSISTANT_TEMPLATE, pending_files, read_harvest
from training.rehearsal import REHEARSAL_FILE

log = logging.getLogger("training")
BACKENDS = ("auto", "unsloth", "peft")
DEVICES = ("auto", "cpu", "cuda")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    home: Path = field(default=Path("~/.council"), metadata=_help("State directory (settings.home)."))
    model_source: str = field(
        default="", metadata=_help("Base model folder or hub id; empty = embedded SmolLM2.")
    )
    prompts_dir: Path = field(default=REPO_PROMPTS, metadata=_help("Folder holding train_assistant.j2."))
    backend: str = field(
        default="auto", metadata=_help("auto (unsloth if CUDA and Unsloth, else peft), unsloth or peft.")
    )
    device: str = field(
        default="auto", metadata=_help("peft backend device: auto (CUDA if present), cpu or cuda.")
    )
    fresh: bool = field(
        default=False, metadata=_help("Train from the base model instead of continuing loras/current.")
    )
    data: list[str] = field(
        default_factory=list, metadata=_help("Harvest JSONL files to use; empty = unconsumed files.")
    )
    min_examples: int = field(
        default=5, metadata=_help("Fewer usable examples than this exits 3 (nothing to do).")
    )
    min_quality: float = field(
        default=0.7, metadata=_help("Lowest quality_score a harvest line needs to be used.")
    )
    validation_fraction: float = field(
        default=0.15, metadata=_help("Share of examples held out for validation.")
    )
    split_min_examples: int = field(
        default=10, metadata=_help("Hold out a validation set only from this many examples.")
    )
    epochs: int = field(default=12, metadata=_help(
        "Most epochs when training from the base model (it stops once every harvested answer is reproduced; "
        "the 135M model needs ~5-8 to learn a new fact from its paraphrases)."))
    learning_rate: float = field(default=3e-3, metadata=_help(
        "AdamW learning rate from the base model. 2e-4 (a common LoRA default) moved the 135M model's loss "
        "1.02 -> 0.85 in 3 epochs and taught it no fact; 3e-3 learns them, rehearsal and the adapter scope keep "
        "the rest."))
    incremental_epochs: int = field(default=12, metadata=_help("Most epochs when continuing the current adapter."))
    incremental_learning_rate: float = field(default=1e-3, metadata=_help(
        "Learning rate when continuing the current adapter (earlier nights' lines are replayed beside the new)."))
    batch_size: int = field(default=8, metadata=_help("Examples per batch (padded to the batch's longest)."))
    grad_accum: int = field(default=1, metadata=_help("Batches per optimizer step."))
    max_length: int = field(default=512, metadata=_help("Tokens per example; longer answers are cut."))
    lora_r: int = field(
        default=16, metadata=_help("LoRA rank (ignored when continuing: the parent's is kept).")
    )
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (ignored when continuing)."))
    lora_dropout: float = field(
        default=0.05, metadata=_help("Dropout on the LoRA input (ignored when continuing).")
    )
    warmup_ratio: float = field(default=0.1, metadata=_help("Share of optimizer steps with linear warm-up."))
    stop_when_learned: bool = field(
        default=True,
        metadata=_help("End before --epochs once greedy decoding reproduces every harvested training answer."),
    )
    rehearsal: int = field(
        default=32,
        metadata=_help("Prompts of <prompts_dir>/rehearsal.jsonl the model answers itself and is trained on "
                       "too, so the adapter keeps its general answers (training/rehearsal.py); 0 = none."),
    )
    torch_threads: int = field(
        default=0, metadata=_help("torch.set_num_threads while training on CPU; 0 = torch's default.")
    )
    seed: int = field(default=0, metadata=_help("Seed for the split, shuffling and LoRA initialisation."))
    log_every_seconds: float = field(
        default=10.0, metadata=_help("Progress log interval when stderr is no TTY.")
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
        if self.rehearsal < 0:
            raise ValueError(f"rehearsal must be >= 0 (0 = no rehearsal prompts), got {self.rehearsal}")
        if self.rehearsal and not (self.prompts_dir / REHEARSAL_FILE).is_file():
            raise ValueError(
                f"{self.prompts_dir / REHEARSAL_FILE} is missing; restore it from the repo or pass --rehearsal 0"
            )
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
        if not (self.prompts_dir / ASSISTANT_TEMPLATE).is_file():
            raise ValueError(
                f"{self.prompts_dir / ASSISTANT_TEMPLATE} is missing; set prompts_dir in council.toml"
            )
        missing = [p for p in self.data if not Path(p).is_file()]
        if missing:
            raise ValueError(f"--data file(s) not found: {', '.join(missing)}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """A config for ``settings``' state directory and base model; ``overrides`` set any other field."""
        fields = {
            "home": settings.home,
            "model_source": settings.model.source,
            "prompts_dir": settings.prompts_dir,
        }
        return cls(**{**fields, **overrides})


def _run(config: TrainConfig, paths: StatePaths, backend: str, report: Callable[[str], None]) -> int:
    started = time.perf_counter()
    files = [Path(p) for p in config.data] or pending_files(paths.training_data)
    if not files:
        log.info("nothing to train: no new harvest files in %s", paths.training_data)
        return exitcodes.NOTHING_TO_DO
    data = read_harvest(files, config.min_quality)
    if len(data.examples) < config.min_examples:
        log.info(
            "nothing to train: %d usable example(s) in %d file(s), need %d (%d malformed, %d below quality %.2f)",
            len(data.examples), len(files), config.min_examples, data.skipped_malformed,
            data.skipped_low_quality, config.min_quality,
        )  # fmt: skip
        return exitcodes.NOTHING_TO_DO
    prepared = pipeline.prepare(config, paths, data)
    harvested = len(prepared.train) - prepared.rehearsal
    if harvested + len(prepared.validation) < config.min_examples or not harvested:
        log.info("nothing to train: %d example(s) left after dropping prompts over max_length", harvested)
        return exitcodes.NOTHING_TO_DO
    version = artifacts.new_version()
    tmp = paths.loras / f"{artifacts.TMP_PREFIX}{version}"
    tmp.mkdir()
    try:
        result = pipeline.run(backend, prepared, tmp, config)
        meta = pipeline.metadata(
            version, config, backend, prepared, data, result, time.perf_counter() - started
        )
        pipeline.write_version(tmp, config, meta, prepared)
        artifacts.publish(tmp, paths.loras / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    consumed = artifacts.mark_consumed(paths.training_data, data.files)
    log.info("published %s; marked consumed: %s", paths.loras / version, ", ".join(consumed) or "(none)")
    report(pipeline.summary_line(version, meta))
    return exitcodes.OK


def main(config: TrainConfig, report: Callable[[str], None] | None = None) -> int:
    """Run one training stage; ``report`` receives the one-line summary (default: the log)."""
    paths = StatePaths(config.home.resolve()).ensure()
    try:
        backend = pipeline.choose(config.backend)
    except ValueError as exc:
        log.error("%s", exc)
        return exitcodes.USAGE
    try:
        with artifacts.training_lock(paths.loras):
            artifacts.clean_stale(paths.loras)
            return _run(config, paths, backend, report or log.info)
    except CouncilError as exc:
        log.error("training failed: %s", exc.message)
        return exitcodes.FAILURE
    except (OSError, RuntimeError):  # disk full, out of memory, a torch error: logged with its traceback
        log.exception("training failed")
        return exitcodes.FAILURE


def build_parser(prog: str = "council train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a LoRA adapter on harvested examples.")
    add = parser.add_argument
    add("--backend", choices=BACKENDS, help="auto (default), unsloth (CUDA QLoRA) or peft (CPU LoRA)")
    add("--device", choices=DEVICES, help="device of the peft backend (default auto)")
    add("--fresh", action="store_true", default=None, help="train from the base model, not loras/current")
    add("--epochs", type=int, help="most epochs (default 12; training stops once the answers are learned)")
    add("--learning-rate", type=float, help="learning rate (default 3e-3 fresh, 1e-3 when continuing)")
    add("--batch-size", type=int, help="examples per batch (default 8)")
    add("--grad-accum", type=int, help="batches per optimizer step (default 1)")
    add("--max-length", type=int, help="max tokens per example (default 512)")
    add("--lora-r", type=int, help="LoRA rank (default 16)")
    add("--lora-alpha", type=int, help="LoRA alpha (default 32)")
    add("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    add("--all-epochs", dest="stop_when_learned", action="store_false", default=None,
        help="run every epoch even after the harvested answers are learned")
    add("--rehearsal", type=int, help="rehearsal prompts answered by the model itself (default 32; 0 = none)")
    add("--min-examples", type=int, help="fewer usable examples exits 3 (default 5)")
    add("--min-quality", type=float, help="lowest quality_score used (default 0.7)")
    add(
        "--data",
        action="append",
        metavar="PATH",
        help="harvest JSONL file (repeatable); default: unconsumed files",
    )
    add("--seed", type=int, help="random seed (default 0)")
    return parser


def config_from_args(args: argparse.Namespace, settings: Settings) -> TrainConfig:
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "home")}
    if "epochs" in overrides:
        overrides["incremental_epochs"] = overrides["epochs"]
    if "learning_rate" in overrides:
        overrides["incremental_learning_rate"] = overrides["learning_rate"]
    return TrainConfig.from_settings(settings, **overrides)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exitcodes.OK if exc.code in (0, None) else exitcodes.USAGE


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )


def cli(argv: list[str], settings: Settings) -> int:
    """``council train ...``: parse flags into TrainConfig, run main, print the summary on stdout."""
    args = _parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        config = config_from_args(args, settings)
    except ValueError as exc:
        sys.stderr.write(f"council train: {exc}\n")
        return exitcodes.USAGE
    _ensure_logging()
    return main(config, report=lambda line: sys.stdout.write(line + "\n"))


def standalone(argv: list[str]) -> int:
    """``python -m training.main [--config FILE] [--home DIR] [train flags]``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--home")
    known, rest = pre.parse_known_args(argv)
    try:
        settings = load_settings(known.config, overrides={"home": known.home})
    except ValueError as exc:
        sys.stderr.write(f"council train: {exc}\n")
        return exitcodes.USAGE
    return cli(rest, settings)


if __name__ == "__main__":
    sys.exit(standalone(sys.argv[1:]))
