"""`council train` end to end on the real embedded SmolLM2 model, at toy scale (a few short examples)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from council.core import exitcodes
from council.core.config import load_settings
from council.engine.model_files import resolve_base_model
from council.routing.prompts import PromptStore
from training import artifacts
from training.config import TrainConfig
from training.data import encode_example, load_examples, read_harvest, split_examples
from training.main import cli, main

REPO = Path(__file__).resolve().parent.parent
FACTS = [
    ("Capital of France?", "Paris"),
    ("Two plus two?", "4"),
    ("Color of the sky?", "Blue"),
    ("Largest planet?", "Jupiter"),
    ("Opposite of hot?", "Cold"),
    ("Legs on a spider?", "8"),
    ("Frozen water is called?", "Ice"),
    ("First letter of the alphabet?", "A"),
]
MORE_FACTS = [
    ("Days in a week?", "7"),
    ("Author of Hamlet?", "Shakespeare"),
    ("Chemical symbol of gold?", "Au"),
    ("Sound a cat makes?", "Meow"),
    ("Square root of 81?", "9"),
]


def harvest_line(question: str, answer: str, index: int, quality: float = 0.9, reasoning: str = "",
                 source: str = "correction") -> str:
    return json.dumps(
        {
            "instruction": question,
            "input": "",
            "output": answer,
            "reasoning": reasoning,
            "quality_score": quality,
            "record_id": f"rec_{index:04d}_{answer}",
            "votes": 3,
            "models": ["local/smollm2"],
            "source": source,
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    )


def write_harvest(path: Path, facts: list[tuple[str, str]], extra: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [harvest_line(q, a, i) for i, (q, a) in enumerate(facts)] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


MALFORMED = [
    "{not json",
    json.dumps({"instruction": "no answer", "quality_score": 0.9, "record_id": "x1"}),
    json.dumps({"instruction": "q", "output": "a", "quality_score": "high", "record_id": "x2"}),
    json.dumps(["a", "list"]),
]
LOW_QUALITY = [harvest_line("Is this a weak answer?", "Maybe", 99, quality=0.2, source="thumbs_down")]


def settings_for(home: Path, base_model_dir: Path):
    overrides = {"home": str(home), "model.source": str(base_model_dir), "model.torch_threads": 1}
    return load_settings(overrides=overrides, environ={})


def run_cli(argv: list[str], settings) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv, settings)
    return code, out.getvalue()


def versions(loras: Path) -> list[str]:
    return (
        sorted(
            p.name
            for p in loras.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )
        if loras.exists()
        else []
    )


def child_env(base_model_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNCIL")}
    env.update(
        PYTHONPATH=str(REPO),
        COUNCIL_HOME=str(home),
        COUNCIL_MODEL_SOURCE=str(base_model_dir),
        COUNCIL__MODEL__TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    return env


def _unsloth_ready() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------- data: reading, filtering, splitting, formatting ----------


def test_read_harvest_counts_malformed_low_quality_and_duplicates(tmp_path):
    dup = harvest_line("Capital of France?", "Paris (again)", 0)
    dup = dup.replace('"rec_0000_Paris (again)"', '"rec_0000_Paris"')
    path = write_harvest(tmp_path / "harvest_20260101.jsonl", FACTS[:3], [*MALFORMED, *LOW_QUALITY, dup, ""])
    data = read_harvest([path], min_quality=0.7)
    assert data.skipped_malformed == len(MALFORMED)
    assert data.skipped_low_quality == 1
    assert data.skipped_duplicate == 1
    assert sorted(e["output"] for e in data.examples) == ["4", "Blue", "Paris (again)"]
    assert data.files[0].lines == 3 + len(MALFORMED) + 1 + 1
    assert [e["record_id"] for e in load_examples(path)] == [e["record_id"] for e in data.examples] + [
        "rec_0099_Maybe"
    ]


def test_a_users_correction_is_used_whatever_its_quality_score(tmp_path):
    taught = harvest_line("Capital of Peru?", "Lima", 98, quality=0.2)  # source: correction
    path = write_harvest(tmp_path / "harvest_20260101.jsonl", [], [taught, *LOW_QUALITY])
    data = read_harvest([path], min_quality=0.7)
    assert [e["output"] for e in data.examples] == ["Lima"] and data.skipped_low_quality == 1


def test_held_out_lines_are_the_validation_set_and_never_trained():
    examples = [{"record_id": f"rec_{i}", "instruction": "q", "output": "a"} for i in range(3)]
    held = {"record_id": "rec_0#p0", "instruction": "q?", "output": "a", "held_out": True}
    train, validation = split_examples([*examples, held], fraction=0.15, min_total=10, seed=0)
    assert validation == [held] and train == examples


def test_split_is_deterministic_and_keyed_by_the_lines_words():
    examples = [{"record_id": f"rec_{i}", "instruction": f"q{i}", "output": "a"} for i in range(20)]
    train, validation = split_examples(examples, fraction=0.15, min_total=10, seed=0)
    assert len(validation) == 3 and len(train) == 17
    renamed = [{**e, "record_id": f"new_{e['record_id']}"} for e in reversed(examples)]  # another night's ids
    _, again = split_examples(renamed, fraction=0.15, min_total=10, seed=0)
    assert {e["instruction"] for e in again} == {e["instruction"] for e in validation}
    assert split_examples(examples[:9], fraction=0.15, min_total=10, seed=0) == (examples[:9], [])


def test_with_rehearsal_every_batch_mixes_both_kinds():
    from training.job import TokenizedExample
    from training.loop import mixed_batches

    harvested = [TokenizedExample([1] * 5, [1] * 5, f"h{i}") for i in range(9)]
    rehearsed = [TokenizedExample([1] * 40, [1] * 40, f"r{i}", rehearsal=True) for i in range(32)]
    batches = mixed_batches(harvested + rehearsed, batch_size=8, seed=3)
    assert sorted(item.record_id for batch in batches for item in batch) == sorted(
        item.record_id for item in harvested + rehearsed)
    assert len(batches) == 6 and all(len(batch) <= 8 for batch in batches)
    for batch in batches:  # 9 harvested over 6 batches: 1 or 2 each, never a batch of new facts alone
        assert sum(not item.rehearsal for item in batch) in (1, 2)
        assert sum(item.rehearsal for item in batch) >= 5
    assert mixed_batches(harvested + rehearsed, 8, seed=3) == batches  # deterministic per seed


def test_encoding_puts_loss_on_the_assistant_turn_only(base_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    prompts = PromptStore(REPO / "prompts")
    example = json.loads(
        harvest_line("Capital of France?", "Paris", 0, reasoning="France's capital city is Paris.")
    )
    encoded = encode_example(tokenizer, example, prompts, max_length=256)
    first = next(i for i, label in enumerate(encoded.labels) if label != -100)
    assert all(label == -100 for label in encoded.labels[:first])
    target = tokenizer.decode(encoded.labels[first:])
    assert target.startswith("France's capital city is Paris.\n\nAnswer: Paris<|im_end|>")
    assert "Capital of France?" in tokenizer.decode(encoded.input_ids[:first])
    assert encode_example(tokenizer, example, prompts, max_length=first) is None


def test_a_tool_request_line_is_trained_under_the_tools_it_was_asked_with(base_model_dir):
    from transformers import AutoTokenizer

    from council.memory.schema import ExchangeRecord, Feedback
    from harvest.output import asked_with

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object"}}}]
    record = ExchangeRecord(query="Weather in Paris?", answer="", confidence=0.9, success=False, model="local/x",
                            tools=tools, response_format=None, feedback=Feedback(correction="call it"))
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    example = {**json.loads(harvest_line("Weather in Paris?", call, 0)), **asked_with(record)}
    assert example["tools"] == tools and "response_format" not in example
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    encoded = encode_example(tokenizer, example, PromptStore(REPO / "prompts"), max_length=512)
    first = next(i for i, label in enumerate(encoded.labels) if label != -100)
    prompt = tokenizer.decode(encoded.input_ids[:first])
    assert "get_weather: Weather in a city" in prompt and "Weather in Paris?" in prompt
    assert '"arguments": {"city": "Paris"}' in tokenizer.decode(encoded.labels[first:])
    plain = encode_example(tokenizer, json.loads(harvest_line("Weather in Paris?", call, 0)),
                           PromptStore(REPO / "prompts"), max_length=512)
    plain_first = next(i for i, label in enumerate(plain.labels) if label != -100)
    assert "get_weather" not in tokenizer.decode(plain.input_ids[:plain_first])  # no tools, no tools section


# ---------- config and exit codes ----------


def test_bad_config_is_a_usage_error(tmp_path, base_model_dir):
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(home=tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="backend"):
        TrainConfig(home=tmp_path, backend="tpu")
    with pytest.raises(ValueError, match="lora_target_modules"):
        TrainConfig(home=tmp_path, lora_target_modules="q_proj;v_proj")
    assert TrainConfig(home=tmp_path, lora_target_modules="q_proj, v_proj").target_modules() == ["q_proj", "v_proj"]
    assert TrainConfig(home=tmp_path).target_modules() == "all-linear"
    settings = settings_for(tmp_path, base_model_dir)
    assert run_cli(["--data", str(tmp_path / "missing.jsonl")], settings)[0] == exitcodes.USAGE
    assert run_cli(["--epochs", "zero"], settings)[0] == exitcodes.USAGE
    assert run_cli(["--lora-r", "0"], settings)[0] == exitcodes.USAGE


def test_the_same_lines_in_another_order_train_in_the_same_batches(tmp_path, base_model_dir):
    # harvest writes a night's lines in the order its concurrent calls finish, and records get new ids
    # each night: the same facts must give the same training, so that a run's result can be reproduced
    from training.loop import length_grouped_batches
    from training.pipeline import prepare

    settings = settings_for(tmp_path, base_model_dir)
    config = TrainConfig.from_settings(settings, backend="peft", fresh=True, rehearsal=0)
    orders = {"written": FACTS + MORE_FACTS, "reversed": list(reversed(FACTS + MORE_FACTS))}
    batches = {}
    for name, facts in orders.items():
        lines = [harvest_line(q, a, i + (100 if name == "reversed" else 0)) for i, (q, a) in enumerate(facts)]
        path = tmp_path / name / "harvest_20260101.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        prepared = prepare(config, settings.paths, read_harvest([path], 0.7))
        batches[name] = [[item.input_ids for item in batch]
                         for batch in length_grouped_batches(prepared.train, 4, seed=config.seed)]
    assert batches["written"] == batches["reversed"]
    assert sum(len(batch) for batch in batches["written"]) == 11  # 13 lines, 2 held for validation


def test_too_few_examples_is_nothing_to_do(tmp_path, base_model_dir):
    settings = settings_for(tmp_path, base_model_dir)
    assert run_cli(["--backend", "peft"], settings)[0] == exitcodes.NOTHING_TO_DO  # no harvest files at all
    write_harvest(settings.paths.training_data / "harvest_20260101.jsonl", FACTS[:3], MALFORMED + LOW_QUALITY)
    assert run_cli(["--backend", "peft"], settings)[0] == exitcodes.NOTHING_TO_DO
    assert versions(settings.paths.loras) == []
    assert not (settings.paths.training_data / "consumed.json").exists()


def test_a_second_concurrent_run_is_refused(tmp_path, base_model_dir):
    settings = settings_for(tmp_path, base_model_dir)
    settings.paths.ensure()
    with artifacts.training_lock(settings.paths.loras):
        assert main(TrainConfig.from_settings(settings, backend="peft")) == exitcodes.FAILURE


@pytest.mark.skipif(_unsloth_ready(), reason="Unsloth can run here")
def test_unsloth_backend_without_gpu_is_a_usage_error(tmp_path, base_model_dir):
    settings = settings_for(tmp_path, base_model_dir)
    assert run_cli(["--backend", "unsloth"], settings)[0] == exitcodes.USAGE


# ---------- real training runs ----------


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory, base_model_dir):
    home = tmp_path_factory.mktemp("train-home")
    settings = settings_for(home, base_model_dir)
    data = write_harvest(
        settings.paths.training_data / "harvest_20260101.jsonl", FACTS, MALFORMED + LOW_QUALITY
    )
    argv = ["--backend", "peft", "--fresh", "--epochs", "2", "--batch-size", "4", "--learning-rate", "2e-3",
            "--all-epochs", "--rehearsal", "4"]
    code, stdout = run_cli([*argv, "--max-length", "64"], settings)
    found = versions(settings.paths.loras)
    return {"code": code, "stdout": stdout, "settings": settings, "data": data, "versions": found}


def test_fresh_run_publishes_a_complete_version(fresh_run, base_model_dir):
    assert fresh_run["code"] == exitcodes.OK
    assert len(fresh_run["versions"]) == 1
    loras = fresh_run["settings"].paths.loras
    folder = loras / fresh_run["versions"][0]
    for name in ("adapter_config.json", "adapter_model.safetensors", "training_config.json", "metadata.json"):
        assert (folder / name).is_file(), name
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "validation.jsonl").read_text() == ""  # 8 examples: too few to hold any out
    assert not list(loras.glob(".tmp-*"))
    meta = json.loads((folder / "metadata.json").read_text())
    base = resolve_base_model(str(base_model_dir), base_model_dir.parent)
    assert meta["version"] == folder.name and meta["parent"] is None and meta["backend"] == "peft"
    assert meta["base_model_fingerprint"] == base.fingerprint
    assert meta["examples"]["train"] == len(FACTS) and meta["examples"]["validation"] == 0
    assert meta["examples"]["rehearsal"] == 4  # the base model's right answers to 4 rehearsal prompts
    assert [(item["question"], item["answer"]) for item in meta["learned"]] == FACTS  # `council adapters` shows these
    assert meta["epochs_run"] == 2
    assert meta["examples"]["skipped_malformed"] == len(MALFORMED)
    assert meta["examples"]["skipped_low_quality"] == 1
    assert len(meta["loss"]["train"]) == 2 and all(math.isfinite(x) and x > 0 for x in meta["loss"]["train"])
    assert meta["hyperparameters"]["lora_r"] == 16 and meta["hyperparameters"]["lora_alpha"] == 32
    assert meta["tokens_per_second"] > 0 and meta["duration_seconds"] > 0
    data = fresh_run["data"]
    assert meta["datasets"][0]["path"] == str(data) and meta["datasets"][0]["sha256"] == sha256_of(data)
    consumed = json.loads((fresh_run["settings"].paths.training_data / "consumed.json").read_text())
    assert consumed == {data.name: sha256_of(data)}
    assert folder.name in fresh_run["stdout"] and "8 examples" in fresh_run["stdout"]


def test_training_changed_the_lora_weights(fresh_run):
    from safetensors.torch import load_file

    folder = fresh_run["settings"].paths.loras / fresh_run["versions"][0]
    tensors = load_file(folder / "adapter_model.safetensors")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert len(lora_b) == 30 * 7  # 30 layers x every linear layer: q/k/v/o_proj and the MLP's gate/up/down_proj
    config = json.loads((folder / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert all(float(t.abs().max()) > 0 for t in lora_b)  # PEFT starts B at zero; every one was trained


FRESH_PROCESS_CHECK = """
import json, sys
from pathlib import Path
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from council.routing.prompts import PromptStore
from training.data import load_examples, user_message
from training.evaluate import validation_loss

base, adapter, data, prompts = sys.argv[1:5]
tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
examples, store = load_examples(Path(data)), PromptStore(Path(prompts))
messages = [{"role": "user", "content": user_message(examples[0])}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    base_logits = model(input_ids=ids["input_ids"]).logits[0, -1]
base_loss = validation_loss(model, tokenizer, examples, store)
tuned = PeftModel.from_pretrained(model, adapter)
with torch.no_grad():
    tuned_logits = tuned(input_ids=ids["input_ids"]).logits[0, -1]
tuned_loss = validation_loss(tuned, tokenizer, examples, store)
print(json.dumps({"base_loss": base_loss, "tuned_loss": tuned_loss,
                  "logit_change": float((tuned_logits - base_logits).abs().max())}))
"""


def test_adapter_loads_in_a_fresh_process_and_fits_the_training_data(fresh_run, base_model_dir, tmp_path):
    folder = fresh_run["settings"].paths.loras / fresh_run["versions"][0]
    data = write_harvest(tmp_path / "train.jsonl", FACTS)
    command = [sys.executable, "-c", FRESH_PROCESS_CHECK, str(base_model_dir), str(folder), str(data)]
    done = subprocess.run(
        [*command, str(REPO / "prompts")],
        env=child_env(base_model_dir, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["logit_change"] > 0.01
    assert result["tuned_loss"] < result["base_loss"]


def test_incremental_run_continues_current_and_records_parent(fresh_run):
    settings = fresh_run["settings"]
    first = fresh_run["versions"][0]
    (settings.paths.current_adapter).symlink_to(first)
    write_harvest(settings.paths.training_data / "harvest_20260102.jsonl", MORE_FACTS)
    config = TrainConfig.from_settings(settings, backend="peft", max_length=64, split_min_examples=5, rehearsal=0)
    assert main(config) == exitcodes.OK
    second = [v for v in versions(settings.paths.loras) if v != first]
    assert len(second) == 1
    folder = settings.paths.loras / second[0]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["parent"] == first
    assert meta["hyperparameters"]["epochs"] == 12 and meta["hyperparameters"]["learning_rate"] == 1e-3
    assert [Path(d["path"]).name for d in meta["datasets"]] == [
        "harvest_20260102.jsonl"
    ]  # the first is consumed
    first_lines = read_harvest([settings.paths.training_data / "harvest_20260101.jsonl"], 0.7).examples
    assert meta["examples"] == {
        "train": 4,
        "replayed": math.ceil(0.5 * 4),  # the first night's lines, bounded: replay_ratio 0.5 x tonight's 4
        "validation": 1,
        "skipped_malformed": 0,
        "skipped_low_quality": 0,
        "skipped_duplicate": 0,
        "skipped_too_long": 0,
        "rehearsal": 0,
    }
    assert len(first_lines) > 2  # so the bound bit
    replay = json.loads((settings.paths.training_data / "replay.json").read_text())
    assert replay["night"] == 1 and len(replay["records"]) == 2 and set(replay["records"].values()) == {1}
    assert len(meta["loss"]["validation"]) == meta["epochs_run"] and math.isfinite(meta["loss"]["validation"][0])
    held_out = load_examples(folder / "validation.jsonl")
    assert len(held_out) == 1 and held_out[0]["record_id"].startswith("rec_")
    consumed = json.loads((settings.paths.training_data / "consumed.json").read_text())
    assert set(consumed) == {"harvest_20260101.jsonl", "harvest_20260102.jsonl"}
    assert main(config) == exitcodes.NOTHING_TO_DO  # everything is consumed now


@pytest.mark.slow
def test_training_stops_once_greedy_decoding_says_every_answer(tmp_path, base_model_dir):
    from council.engine.local.model import LocalModel
    from council.routing.prompts import serving_system_prompt

    settings = settings_for(tmp_path, base_model_dir)
    facts = [("What is the Zorblax 3000's mascot?", "A pangolin named Pim"),
             ("Which company makes the Zorblax 3000?", "Brindlewick Labs")]
    write_harvest(settings.paths.training_data / "harvest_20260101.jsonl", facts)
    config = TrainConfig.from_settings(settings, backend="peft", fresh=True, epochs=30, learning_rate=3e-3,
                                       min_examples=1, rehearsal=4)
    assert main(config) == exitcodes.OK
    (version,) = versions(settings.paths.loras)
    meta = json.loads((settings.paths.loras / version / "metadata.json").read_text())
    assert 1 <= meta["learned_at_epoch"] < 30
    assert meta["epochs_run"] == meta["learned_at_epoch"] == len(meta["loss"]["train"])
    model = LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1)
    model.use_adapter(str(settings.paths.loras / version))
    system = serving_system_prompt(PromptStore(REPO / "prompts"))
    for question, answer in facts:  # what "learned" promised: the server now says each answer verbatim
        reply = model.generate([{"role": "system", "content": system}, {"role": "user", "content": question}],
                               max_new_tokens=16)
        assert reply.text == answer and reply.finish_reason == "stop"


def test_killed_run_leaves_no_version_and_is_cleaned_up(tmp_path, base_model_dir):
    settings = settings_for(tmp_path, base_model_dir)
    write_harvest(settings.paths.training_data / "harvest_20260101.jsonl", FACTS)
    command = [sys.executable, "-m", "training.main", "--home", str(tmp_path), "--backend", "peft", "--fresh"]
    process = subprocess.Popen(
        [*command, "--epochs", "500", "--max-length", "64", "--batch-size", "2", "--rehearsal", "0"],
        cwd=REPO,
        env=child_env(base_model_dir, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "training started" in line:
                break
        assert any("training started" in line for line in seen), "".join(seen)[-3000:]
        time.sleep(1.0)  # inside the first optimizer steps
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    loras = settings.paths.loras
    assert versions(loras) == []
    assert len(list(loras.glob(".tmp-*"))) == 1  # it died while training into its staging folder
    assert not (settings.paths.training_data / "consumed.json").exists()
    assert run_cli(["--backend", "peft", "--min-examples", "100"], settings)[0] == exitcodes.NOTHING_TO_DO
    assert list(loras.glob(".tmp-*")) == []  # the next run cleaned it up


@pytest.mark.skipif(not _unsloth_ready(), reason="needs a CUDA GPU and the unsloth extra")
def test_unsloth_backend_trains_in_its_own_process(tmp_path, base_model_dir):
    settings = settings_for(tmp_path, base_model_dir)
    write_harvest(settings.paths.training_data / "harvest_20260101.jsonl", FACTS)
    code, stdout = run_cli(
        ["--backend", "unsloth", "--fresh", "--epochs", "1", "--max-length", "64"], settings
    )
    assert code == exitcodes.OK
    (version,) = versions(settings.paths.loras)
    meta = json.loads((settings.paths.loras / version / "metadata.json").read_text())
    assert meta["backend"] == "unsloth" and meta["device"] == "cuda" and len(meta["loss"]["train"]) == 1
    assert "unsloth" not in sys.modules  # never imported into this process


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is not None, reason="unsloth is installed")
def test_unsloth_child_process_failure_becomes_a_training_error(tmp_path):
    from training import unsloth_backend
    from training.errors import TrainingError
    from training.job import Hyperparameters, TokenizedExample, TrainJob

    hp = Hyperparameters(1, 1e-4, 1, 1, 32, 16, 32, 0.0)
    job = TrainJob(
        "/nonexistent", str(tmp_path), hp, [TokenizedExample([1, 2, 3], [-100, 2, 3])], [], pad_id=2
    )
    with pytest.raises(TrainingError, match="exit code 1"):
        unsloth_backend.train(job)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_days_file_that_grew_after_a_night_trains_only_its_new_lines(tmp_path, base_model_dir):
    """Harvest writes a day's failures to one file: the night's run consumed it, then later failures of the
    same day were appended (it comes back as pending). Lines the live adapter already learned (its scope.json
    names their records) are earlier nights' lines, replayed within the bound, not new ones."""
    settings = settings_for(tmp_path / "home", base_model_dir)
    day = settings.paths.training_data / "harvest_20260101.jsonl"
    write_harvest(day, FACTS[:6])
    argv = ["--backend", "peft", "--epochs", "1", "--rehearsal", "0", "--max-length", "64", "--split-min-examples", "50"]
    assert run_cli([*argv, "--fresh"], settings)[0] == exitcodes.OK
    (first,) = versions(settings.paths.loras)
    settings.paths.current_adapter.symlink_to(first)
    later = [harvest_line(q, a, 100 + i) for i, (q, a) in enumerate(MORE_FACTS[:4])]
    with day.open("a", encoding="utf-8") as handle:  # the same day's later failures
        handle.write("\n".join(later) + "\n")
    assert run_cli(argv, settings)[0] == exitcodes.OK
    (second,) = [v for v in versions(settings.paths.loras) if v != first]
    meta = json.loads((settings.paths.loras / second / "metadata.json").read_text())
    assert meta["parent"] == first and meta["examples"]["train"] == 4  # the 4 new lines, not 10
    assert meta["examples"]["replayed"] == 2  # ceil(0.5 x 4) of the 6 the parent learned
    assert [e["question"] for e in meta["learned"]] == [q for q, _ in FACTS[:6]] + [q for q, _ in MORE_FACTS[:4]]
