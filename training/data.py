"""Harvest JSONL in, tokenized chat examples out: selection, filtering, splitting and formatting.

A harvest line (harvest/output.py) has ``instruction, input, output, reasoning, quality_score, record_id, ...``.
Training uses the files in ``<home>/training_data/harvest_*.jsonl`` that ``consumed.json`` ({filename: sha256})
does not list with their current hash, or the paths it is given; when it continues an adapter it also replays
the lines of the files that adapter's lineage consumed, so the facts of earlier nights are not forgotten.

Lines with ``source: "correction"`` are what a user taught: they are kept whatever their quality score (the
score judges rewrites, not the user's words). Lines with ``held_out: true`` (paraphrases harvest kept out of
training) are never trained on: they are the validation set, and the deploy asks them as in-scope probes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council.engine.loading import chat_ids
from council.routing.prompts import PromptStore, serving_system_prompt, tools_section
from training.errors import TrainingError
from training.job import IGNORE_INDEX, TokenizedExample

log = logging.getLogger(__name__)

HARVEST_GLOB = "harvest_*.jsonl"
CONSUMED_FILE = "consumed.json"
ASSISTANT_TEMPLATE = "train_assistant.j2"


@dataclass
class DatasetFile:
    path: str
    sha256: str
    lines: int


@dataclass
class HarvestData:
    """Usable examples plus what was skipped, per the metadata contract."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    files: list[DatasetFile] = field(default_factory=list)
    skipped_malformed: int = 0
    skipped_low_quality: int = 0
    skipped_duplicate: int = 0


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_consumed(training_data: Path) -> dict[str, str]:
    path = training_data / CONSUMED_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingError(
            f"{path} is not valid JSON ({exc}); fix or delete it (deleting retrains on all files)"
        ) from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{path} must be a JSON object {{filename: sha256}}; fix or delete it")
    return {str(k): str(v) for k, v in data.items()}


def pending_files(training_data: Path) -> list[Path]:
    """Harvest files not yet trained on (a file whose content changed since counts as new)."""
    consumed = read_consumed(training_data)
    return [
        path
        for path in sorted(training_data.glob(HARVEST_GLOB))
        if path.is_file() and consumed.get(path.name) != sha256_bytes(path.read_bytes())
    ]


def _optional_text(value: Any) -> str | None:
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def parse_line(line: str) -> dict[str, Any] | None:
    """The example on one harvest line, or None when the line is malformed."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    instruction, output = data.get("instruction"), data.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        return None
    if not isinstance(output, str) or not output.strip():
        return None
    inp, reasoning = _optional_text(data.get("input")), _optional_text(data.get("reasoning"))
    if inp is None or reasoning is None:
        return None
    quality = data.get("quality_score")
    if isinstance(quality, bool) or not isinstance(quality, int | float) or not math.isfinite(quality):
        return None
    record_id = data.get("record_id")
    if not isinstance(record_id, str) or not record_id:
        record_id = "line-" + sha256_bytes(line.encode("utf-8"))[:16]
    return {
        **data,
        "input": inp,
        "reasoning": reasoning,
        "quality_score": float(quality),
        "record_id": record_id,
    }


def read_harvest(paths: list[Path], min_quality: float) -> HarvestData:
    """Read ``paths`` in order; keep lines with quality_score >= ``min_quality``; later duplicates win."""
    result = HarvestData()
    by_id: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TrainingError(f"cannot read training data {path}: {exc}") from exc
        text = raw.decode("utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        result.files.append(DatasetFile(str(path), sha256_bytes(raw), len(lines)))
        for line in lines:
            example = parse_line(line)
            if example is None:
                result.skipped_malformed += 1
            elif example["quality_score"] < min_quality and example.get("source") != "correction":
                result.skipped_low_quality += 1
            else:
                if example["record_id"] in by_id:
                    result.skipped_duplicate += 1
                by_id[example["record_id"]] = example
    result.examples = list(by_id.values())
    if result.skipped_malformed:
        log.warning("skipped %d malformed line(s) in %d file(s)", result.skipped_malformed, len(paths))
    return result


def load_examples(path: Path) -> list[dict[str, Any]]:
    """Examples of a harvest-format JSONL file such as ``loras/<version>/validation.jsonl`` (no quality filter)."""
    data = read_harvest([Path(path)], min_quality=-math.inf)
    return data.examples


def consumed_files(training_data: Path) -> list[Path]:
    """Harvest files an earlier training consumed (listed in consumed.json with their current hash)."""
    consumed = read_consumed(training_data)
    return [path for path in sorted(training_data.glob(HARVEST_GLOB))
            if path.is_file() and consumed.get(path.name) == sha256_bytes(path.read_bytes())]


def record_of(line: dict[str, Any]) -> str:
    """The memory record a harvest line came from: its ``record_id`` before any ``#`` (harvest's extra wordings
    of one correction are ``rec_…#paraphrase-1`` and the like)."""
    return str(line.get("record_id") or "").split("#", 1)[0]


def content_key(example: dict[str, Any]) -> str:
    """A line's words (instruction, input, output) as one string: what orders and splits lines reproducibly."""
    return "\x1f".join((example["instruction"], example.get("input") or "", example["output"]))


def split_examples(
    examples: list[dict[str, Any]], fraction: float, min_total: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): the ``held_out`` lines when there are any; else a deterministic split ordered by a
    hash of seed and each line's words (not its record id, which is new each night: the same lines split the
    same way), none below ``min_total`` examples."""
    held = [e for e in examples if e.get("held_out") is True]
    if held:
        return [e for e in examples if e.get("held_out") is not True], held
    if len(examples) < min_total or fraction <= 0:
        return list(examples), []
    count = max(1, round(len(examples) * fraction))
    ranked = sorted(examples, key=lambda e: sha256_bytes(f"{seed}:{content_key(e)}".encode()))
    chosen = {e["record_id"] for e in ranked[:count]}
    train = [e for e in examples if e["record_id"] not in chosen]
    validation = [e for e in examples if e["record_id"] in chosen]
    return train, validation


def user_message(example: dict[str, Any]) -> str:
    instruction, extra = example["instruction"].strip(), (example.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def assistant_message(example: dict[str, Any], prompts: PromptStore) -> str:
    return prompts.render(
        ASSISTANT_TEMPLATE,
        instruction=example["instruction"],
        input=example.get("input") or "",
        reasoning=example.get("reasoning") or "",
        answer=example["output"],
    )


def encode_example(
    tokenizer: Any, example: dict[str, Any], prompts: PromptStore, max_length: int
) -> TokenizedExample | None:
    """Chat-template ``example`` under the server's system prompt; labels cover the assistant turn only.

    None when the prompt leaves no room."""
    system = "\n".join(part for part in (serving_system_prompt(prompts), tools_section(
        prompts, example.get("tools"))) if part)  # a tool request's line: the tools it was asked with
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user_message(example)}]
    prompt = chat_ids(tokenizer, messages)
    reply = {"role": "assistant", "content": assistant_message(example, prompts)}
    full = chat_ids(tokenizer, [*messages, reply], add_generation_prompt=False)
    boundary = 0
    while boundary < min(len(prompt), len(full)) and prompt[boundary] == full[boundary]:
        boundary += 1
    if boundary >= max_length - 1 or boundary >= len(full):
        return None
    full = full[:max_length]
    labels = [IGNORE_INDEX] * boundary + full[boundary:]
    return TokenizedExample(input_ids=full, labels=labels, record_id=example["record_id"])


def encode_all(
    tokenizer: Any, examples: list[dict[str, Any]], prompts: PromptStore, max_length: int
) -> tuple[list[TokenizedExample], int]:
    """Encoded examples and how many were skipped because the prompt alone reaches ``max_length``."""
    encoded = [encode_example(tokenizer, example, prompts, max_length) for example in examples]
    kept = [item for item in encoded if item is not None]
    return kept, len(encoded) - len(kept)
