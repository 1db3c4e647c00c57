"""The steps ``training.main`` strings together: pick a backend, prepare examples, train, write the version."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from council.core.paths import StatePaths
from council.engine import loading
from council.engine.model_files import BaseModel, resolve_base_model
from council.memory.unlearning import taint_of
from council.routing.prompts import PromptStore, serving_system_prompt
from training import artifacts, replay
from training.config import TrainConfig
from training.data import (
    HarvestData,
    content_key,
    encode_all,
    record_of,
    split_examples,
    user_message,
)
from training.job import Hyperparameters, TokenizedExample, TrainJob, TrainResult, torch_threads

log = logging.getLogger(__name__)
PARENT_TAINTED = "parent tainted"  # metadata's fresh_because when loras/current learned from erased records


@dataclass
class Prepared:
    base: BaseModel
    parent: Path | None
    hyperparameters: Hyperparameters
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    validation_records: list[dict[str, Any]]
    pad_id: int
    skipped_too_long: int
    rehearsal: int = 0
    replayed: int = 0  # lines of earlier nights trained on again beside the new ones (continuing an adapter)
    train_queries: list[str] = field(default_factory=list)  # the harvested user messages trained on
    train_records: list[str] = field(default_factory=list)  # the record id of each of train_queries
    fresh_because: str | None = None  # why training starts from the base model although an adapter is live
    replay: replay.Replay = field(default_factory=lambda: replay.Replay())  # the held records and state to save


def choose(name: str) -> str:
    """The backend to use for ``--backend name``; ValueError when unsloth is asked for but cannot run here."""
    from training import unsloth_backend

    ok, why = unsloth_backend.available()
    if name == "unsloth" and not ok:
        raise ValueError(f"--backend unsloth cannot run here: {why}; use --backend peft")
    if name == "auto":
        log.info("backend auto: %s", "unsloth" if ok else f"peft ({why})")
        return "unsloth" if ok else "peft"
    return name


def hyperparameters(config: TrainConfig, parent: Path | None) -> Hyperparameters:
    hp = Hyperparameters(
        epochs=config.incremental_epochs if parent else config.epochs,
        learning_rate=config.incremental_learning_rate if parent else config.learning_rate,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        max_length=config.max_length,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules(),
        warmup_ratio=config.warmup_ratio,
        stop_when_learned=config.stop_when_learned,
    )
    if parent is not None:
        lora = json.loads((parent / "adapter_config.json").read_text())
        kept = {
            "lora_r": lora.get("r", hp.lora_r),
            "lora_alpha": lora.get("lora_alpha", hp.lora_alpha),
            "lora_dropout": lora.get("lora_dropout", hp.lora_dropout),
        }
        changed = {k: v for k, v in kept.items() if getattr(hp, k) != v}
        if changed:
            log.warning(
                "continuing %s keeps its LoRA shape %s; use --fresh to change it", parent.name, changed
            )
        hp.lora_r, hp.lora_alpha, hp.lora_dropout = kept["lora_r"], kept["lora_alpha"], kept["lora_dropout"]
        targets = lora.get("target_modules")
        if isinstance(targets, list | tuple | set):
            hp.target_modules = sorted(targets)
    return hp


def prepare(config: TrainConfig, paths: StatePaths, data: HarvestData) -> Prepared:
    """Resolve the base model and parent, split and tokenize the examples."""
    from transformers import AutoTokenizer

    base = resolve_base_model(config.model_source, paths.models)
    parent, fresh_because = choose_parent(config.fresh, paths.current_adapter, base)
    log.info("training %s from %s", "fresh" if parent is None else "incrementally", parent or base.model_id)
    hp = hyperparameters(config, parent)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    prompts = PromptStore(config.prompts_dir)
    # harvest writes a night's lines in the order its concurrent calls finish; ordered by content, the seeded
    # shuffle gives the same batches, and so the same adapter, for the same lines however they were written
    examples = sorted(data.examples, key=content_key)
    # a harvest file is a day's: one that changed after a night consumed it comes back whole. Lines of a
    # record the live adapter already learned (its scope.json names it) are earlier nights' lines, replayed
    # within the bound, not new ones; lines of a superseded correction are not trained at all
    known, superseded = replay.learned_by(parent), replay.superseded(paths)
    learned_before = [e for e in examples if record_of(e) in known and record_of(e) not in superseded]
    examples = [e for e in examples if record_of(e) not in known and record_of(e) not in superseded]
    train_raw, validation_raw = split_examples(
        examples, config.validation_fraction, config.split_min_examples, config.seed
    )
    # a tainted parent's clean replacement learns every line left of earlier nights, from the base model
    again = parent is not None or fresh_because == PARENT_TAINTED
    replayed = replay.replay_examples(paths, data, config.min_quality, config.replay_ratio, len(train_raw),
                                      continuing=parent is not None, learned_before=learned_before,
                                      replaced=superseded) if again else replay.Replay()
    train_raw += replayed.lines
    train, dropped_train = encode_all(tokenizer, train_raw, prompts, hp.max_length)
    validation, dropped_validation = encode_all(tokenizer, validation_raw, prompts, hp.max_length)
    kept_ids = {item.record_id for item in validation}
    trained_ids = {item.record_id for item in train}
    pad_id = loading.pad_id(tokenizer)
    enough = bool(train) and len(train) + len(validation) >= config.min_examples
    rehearsed = rehearsal_examples(config, base, parent, tokenizer, prompts, hp.max_length) if enough else []
    return Prepared(
        base=base,
        parent=parent,
        hyperparameters=hp,
        train=train + rehearsed,
        validation=validation,
        validation_records=[e for e in validation_raw if e["record_id"] in kept_ids],
        pad_id=pad_id,
        skipped_too_long=dropped_train + dropped_validation,
        rehearsal=len(rehearsed),
        replayed=len(replayed.lines),
        replay=replayed,
        train_queries=[user_message(e) for e in train_raw if e["record_id"] in trained_ids],
        train_records=[e["record_id"] for e in train_raw if e["record_id"] in trained_ids],
        fresh_because=fresh_because,
    )


def choose_parent(fresh: bool, current: Path, base: BaseModel) -> tuple[Path | None, str | None]:
    """The adapter training continues (None = the base model) and why it starts fresh when one is live:
    ``--fresh``, or a tainted ``loras/current`` (it learned from erased records, ``council/memory/unlearning.py``;
    continuing it would keep them in the weights)."""
    if fresh:
        return None, "--fresh" if current.is_symlink() else None
    parent = artifacts.find_parent(current, base)
    if parent is not None and taint_of(parent):
        log.warning("current adapter %s learned from erased records; training from the base model", parent.name)
        return None, PARENT_TAINTED
    return parent, None


def rehearsal_examples(config: TrainConfig, base: BaseModel, parent: Path | None, tokenizer: Any,
                       prompts: PromptStore, max_length: int) -> list[TokenizedExample]:
    """The model's own answers to the first ``config.rehearsal`` rehearsal prompts (see training/rehearsal.py)."""
    if not config.rehearsal:
        return []
    from training import rehearsal

    chosen = rehearsal.load_prompts(config.prompts_dir / rehearsal.REHEARSAL_FILE)[: config.rehearsal]
    with torch_threads(config.torch_threads):
        engine = rehearsal.local_engine(base, str(parent) if parent else None)
        return rehearsal.generate_examples(engine, tokenizer, serving_system_prompt(prompts), chosen,
                                           max_length=max_length)


def run(backend: str, prepared: Prepared, output: Path, config: TrainConfig) -> TrainResult:
    job = TrainJob(
        base_path=prepared.base.path,
        output_dir=str(output),
        hyperparameters=prepared.hyperparameters,
        train=prepared.train,
        validation=prepared.validation,
        pad_id=prepared.pad_id,
        parent_path=str(prepared.parent) if prepared.parent else None,
        seed=config.seed,
        device=config.device,
        log_every_seconds=config.log_every_seconds,
        torch_threads=config.torch_threads,
    )
    if backend == "unsloth":
        from training import unsloth_backend

        return unsloth_backend.train(job)
    from training import peft_backend

    return peft_backend.train(job)


def metadata(
    version: str,
    config: TrainConfig,
    backend: str,
    prepared: Prepared,
    data: HarvestData,
    result: TrainResult,
    duration: float,
) -> dict[str, Any]:
    return {
        "version": version,
        "base_model_id": prepared.base.model_id,
        "base_model_fingerprint": prepared.base.fingerprint,
        "backend": backend,
        "device": result.device,
        "hyperparameters": asdict(prepared.hyperparameters),
        "seed": config.seed,
        "datasets": [asdict(item) for item in data.files],
        "examples": {
            "train": len(prepared.train) - prepared.rehearsal - prepared.replayed,
            "replayed": prepared.replayed,
            "rehearsal": prepared.rehearsal,
            "validation": len(prepared.validation),
            "skipped_malformed": data.skipped_malformed,
            "skipped_low_quality": data.skipped_low_quality,
            "skipped_duplicate": data.skipped_duplicate,
            "skipped_too_long": prepared.skipped_too_long,
        },
        "loss": {"train": result.train_loss, "validation": result.validation_loss, "steps": result.step_loss},
        "tokens": result.tokens,
        "target_tokens": result.target_tokens,
        "optimizer_steps": result.steps,
        "epochs_run": len(result.train_loss),
        "learned_at_epoch": result.learned_at_epoch,
        "trainable_parameters": result.trainable_parameters,
        "train_seconds": round(result.train_seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "duration_seconds": round(duration, 3),
        "parent": prepared.parent.name if prepared.parent else None,
        "fresh_because": prepared.fresh_because,
        "created_at": datetime.now(UTC).isoformat(),
        # what this version was taught: each harvested question with the answer it learned (extra wordings
        # harvest wrote for a correction are counted, not listed)
        "learned": [{"question": user_message(example), "answer": example.get("output", ""),
                     "record_id": example["record_id"]} for example in data.examples if not example.get("kind")],
        "augmented": {kind: sum(1 for e in data.examples if e.get("kind") == kind)
                      for kind in ("paraphrase", "statement", "reverse")},
    }


def write_version(tmp: Path, config: TrainConfig, meta: dict[str, Any], prepared: Prepared) -> None:
    """Everything but the adapter itself (the backend saved that) into the unfinished version folder."""
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's boilerplate model card; metadata.json says it all
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    training_config = {
        "config": settings,
        "backend": meta["backend"],
        "hyperparameters": meta["hyperparameters"],
        "parent": meta["parent"],
        "base_model_path": prepared.base.path,
    }
    (tmp / "training_config.json").write_text(json.dumps(training_config, indent=2))
    meta["scope_queries"] = write_scope(tmp, config, prepared)
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
    artifacts.write_validation(tmp / "validation.jsonl", prepared.validation_records)
    loss = meta["loss"]
    artifacts.plot_loss(
        tmp / "loss.png",
        loss["train"],
        loss["validation"],
        loss["steps"],
        f"council adapter {meta['version']}",
    )


def write_scope(tmp: Path, config: TrainConfig, prepared: Prepared) -> int:
    """``scope.npy``: embeddings of the queries trained on, the parent's included (council/engine/adapter_scope.py)."""
    from council.engine import adapter_scope
    from council.memory.embedder import Embedder

    with torch_threads(config.torch_threads):
        embed = Embedder(runtime=config.embedder_runtime).embed
        return adapter_scope.write_scope(tmp, prepared.train_queries, embed, prepared.parent,
                                         records=prepared.train_records)


def summary_line(version: str, meta: dict[str, Any]) -> str:
    """The one line ``council train`` prints on success."""
    ex, loss = meta["examples"], meta["loss"]
    val = f"{loss['validation'][-1]:.4f}" if loss["validation"] else "n/a"
    return (
        f"trained {version}: {ex['train'] + ex['validation']} examples (train {ex['train']}, validation "
        f"{ex['validation']}, + {ex['rehearsal']} rehearsed, skipped {ex['skipped_malformed']} malformed, {ex['skipped_low_quality']} low quality), "
        f"{meta['epochs_run']}/{meta['hyperparameters']['epochs']} epoch(s), train loss {loss['train'][0]:.4f} -> {loss['train'][-1]:.4f}, "
        f"validation loss {val}, {meta['tokens_per_second']:.0f} tokens/s, {meta['duration_seconds']:.1f} s, "
        f"backend {meta['backend']}, parent {meta['parent'] or 'none'}"
    )
