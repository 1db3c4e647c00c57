"""The GPU backend: Unsloth QLoRA (4-bit base, LoRA on q/k/v/o_proj) in a process of its own.

Unsloth patches transformers globally when imported, so the parent never imports it: ``train(job)`` writes
the job to JSON and runs ``python -m training.unsloth_backend <job.json>``, which trains with the shared
loop, saves the adapter into ``job.output_dir`` and writes ``<job.json>.result.json``. Install it with
``pip install 'council[unsloth]'`` on a machine with a CUDA GPU.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from training.errors import TrainingError
from training.job import ALL_LINEAR, TrainJob, TrainResult

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def available() -> tuple[bool, str]:
    """Whether this machine can run the backend, and why not (without importing Unsloth)."""
    import torch

    if not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU"
    if importlib.util.find_spec("unsloth") is None:
        return False, "unsloth is not installed (pip install 'council[unsloth]')"
    return True, ""


def train(job: TrainJob) -> TrainResult:
    """Run the job in a child process; raise TrainingError when it fails."""
    with tempfile.TemporaryDirectory(prefix="council-unsloth-") as folder:
        job_path = Path(folder) / "job.json"
        job_path.write_text(job.to_json())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "training.unsloth_backend", str(job_path)]
        log.info("unsloth backend: starting %s", " ".join(command))
        # Unsloth prints banners on stdout; keep ours for the one summary line.
        completed = subprocess.run(command, env=env, check=False, stdout=2)  # fd 2 = our stderr
        result_path = job_path.with_suffix(".result.json")
        if completed.returncode != 0 or not result_path.is_file():
            raise TrainingError(
                f"the unsloth training process failed with exit code {completed.returncode}; see its log above"
            )
        return TrainResult.from_dict(json.loads(result_path.read_text()))


def _child(job_path: Path) -> int:
    import unsloth  # noqa: F401  (must come before transformers and peft)
    from unsloth import FastLanguageModel

    from training.loop import full_loss, linear_layer_names, run_loop

    job = TrainJob.from_json(job_path.read_text())
    hp = job.hyperparameters
    model, _tokenizer = FastLanguageModel.from_pretrained(
        model_name=job.base_path, max_seq_length=hp.max_length, load_in_4bit=True, dtype=None
    )
    if job.parent_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, job.parent_path, is_trainable=True)
    else:
        model = FastLanguageModel.get_peft_model(
            model,
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=linear_layer_names(model) if hp.target_modules == ALL_LINEAR else hp.target_modules,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=job.seed,
            max_seq_length=hp.max_length,
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = run_loop(
        model,
        job.train,
        job.validation,
        hp,
        pad_id=job.pad_id,
        device="cuda",
        seed=job.seed,
        loss_fn=full_loss,
        log_every_seconds=job.log_every_seconds,
    )
    model.save_pretrained(job.output_dir)
    result = TrainResult(trainable_parameters=trainable, device="cuda", **out)
    result.save(job_path.with_suffix(".result.json"))
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m training.unsloth_backend JOB.json\n")
        sys.exit(2)
    sys.exit(_child(Path(sys.argv[1])))
