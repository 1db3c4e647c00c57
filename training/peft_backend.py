"""The default backend: transformers + PEFT LoRA in this process, trained by ``training.loop``.

Runs on CPU (float32); with ``device="cuda"`` it uses the GPU in bfloat16 instead.
"""

from __future__ import annotations

import logging
from typing import Any

from council.engine.loading import load_model
from training.job import TrainJob, TrainResult, torch_threads
from training.loop import pick_loss, run_loop

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    return name


def load_trainable(job: TrainJob, device: str) -> Any:
    """The base model with a trainable LoRA: the parent adapter when the job has one, else a fresh one."""
    import torch
    from peft import LoraConfig, get_peft_model

    hp = job.hyperparameters
    torch.manual_seed(job.seed)
    model, _ = load_model(job.base_path, device=device, adapter=job.parent_path, trainable=True,
                          with_tokenizer=False)
    model.config.use_cache = False
    if not job.parent_path:
        config = LoraConfig(
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=hp.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model.to(device)


def train(job: TrainJob) -> TrainResult:
    """Train per ``job`` and save the adapter (PEFT ``save_pretrained``) into ``job.output_dir``."""
    with torch_threads(job.torch_threads):
        return _train(job)


def _train(job: TrainJob) -> TrainResult:
    device = resolve_device(job.device)
    model = load_trainable(job, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("peft backend: %d trainable parameters on %s", trainable, device)
    out = run_loop(
        model,
        job.train,
        job.validation,
        job.hyperparameters,
        pad_id=job.pad_id,
        device=device,
        seed=job.seed,
        loss_fn=pick_loss(model),
        log_every_seconds=job.log_every_seconds,
    )
    model.save_pretrained(job.output_dir)
    return TrainResult(trainable_parameters=trainable, device=device, **out)
