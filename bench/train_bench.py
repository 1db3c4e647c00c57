"""CPU training throughput: Council's PEFT backend vs a plain transformers.Trainer + PEFT baseline.

Both train the same LoRA (r 16, alpha 32, q/k/v/o_proj) on the same tokenized examples (chat template,
loss on assistant tokens only) for the same epochs and batch size. The baseline pads every example to
``--max-length`` and batches in data order, the way a stock Trainer recipe does; ours groups by length,
pads to each batch's longest and runs the LM head only on assistant tokens. Throughput counts real
(non-padding) tokens per second of training, excluding model loading, so the ratio is a time ratio.

    PYTHONPATH=. .venv/bin/python bench/train_bench.py [--examples 32] [--epochs 1] [--max-length 512]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from council.engine.model_files import resolve_base_model
from council.routing.prompts import PromptStore
from training import peft_backend
from training.data import encode_all
from training.job import Hyperparameters, TrainJob

REPO = Path(__file__).resolve().parent.parent
SUBJECTS = ["apples", "books", "coins", "marbles", "pencils", "stamps", "tickets", "shells"]


def make_examples(count: int, seed: int) -> list[dict]:
    """Harvest-like word problems whose reasoning length varies (1 to 6 sentences)."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        thing, a, b = rng.choice(SUBJECTS), rng.randint(2, 90), rng.randint(2, 90)
        steps = [f"Start with {a} {thing}.", f"Then {b} more {thing} are added."]
        steps += [
            f"Check: {a} plus {b} is {a + b}, counted once more to be sure." for _ in range(rng.randint(0, 4))
        ]
        examples.append(
            {
                "instruction": f"Sam has {a} {thing} and finds {b} more. How many {thing} does Sam have now?",
                "input": "" if i % 3 else f"Count carefully; the {thing} are all the same size.",
                "output": f"Sam has {a + b} {thing}.",
                "reasoning": " ".join(steps),
                "quality_score": 0.9,
                "record_id": f"bench_{i}",
            }
        )
    return examples


def baseline(base_path: str, encoded, hp: Hyperparameters, pad_id: int, seed: int) -> float:
    """Seconds for transformers.Trainer + PEFT on max_length-padded examples."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    rows = []
    for item in encoded:
        pad = hp.max_length - len(item.input_ids)
        rows.append(
            {
                "input_ids": item.input_ids + [pad_id] * pad,
                "attention_mask": [1] * len(item.input_ids) + [0] * pad,
                "labels": item.labels + [-100] * pad,
            }
        )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=hp.batch_size,
            gradient_accumulation_steps=hp.grad_accum,
            num_train_epochs=hp.epochs,
            learning_rate=hp.learning_rate,
            max_grad_norm=hp.max_grad_norm,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=seed,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def ours(base_path: str, encoded, hp: Hyperparameters, pad_id: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        job = TrainJob(
            base_path, out, hp, encoded, [], pad_id, seed=seed, device="cpu", log_every_seconds=1e9
        )
        return peft_backend.train(job).train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", default="/tmp/council-test-cache", help="where the embedded model is converted"
    )
    args = parser.parse_args()

    from transformers import AutoTokenizer

    base = resolve_base_model("", Path(args.cache))
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    encoded, _ = encode_all(
        tokenizer, make_examples(args.examples, args.seed), PromptStore(REPO / "prompts"), args.max_length
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    hp = Hyperparameters(
        epochs=args.epochs,
        learning_rate=2e-4,
        batch_size=args.batch_size,
        grad_accum=1,
        max_length=args.max_length,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        stop_when_learned=False,  # the same number of epochs as the Trainer baseline
    )
    lengths = [len(e.input_ids) for e in encoded]
    tokens = sum(lengths) * args.epochs
    print(
        f"{len(encoded)} examples, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"{args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}, "
        f"torch threads {torch.get_num_threads()}"
    )
    ours_s = ours(base.path, encoded, hp, pad_id, args.seed)
    base_s = baseline(base.path, encoded, hp, pad_id, args.seed)
    print(f"{'':32}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'council peft backend':32}{ours_s:>10.1f}{tokens / ours_s:>12.1f}")
    print(f"{'transformers.Trainer + PEFT':32}{base_s:>10.1f}{tokens / base_s:>12.1f}")
    print(f"ratio (ours / baseline tokens/s): {base_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
