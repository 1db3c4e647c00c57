"""Retention probes: does the candidate still answer what every earlier night taught?

``deploy.probes`` asks the candidate the held-out paraphrases of tonight's corrections only. Continued
training on new facts makes a small model forget old ones (issue 28; WISE, NeurIPS 2024: sequential LoRA
fine-tuning keeps .30 of 100 edits), so every deploy also asks the **earlier nights' probes**: the lines of
each earlier adapter version's ``validation.jsonl`` (``loras/<version>/``, versions created before the
candidate) that carry a user's ``correction`` — one of every earlier night in turn, newest night first, one per
question (the newest wording wins, and a question tonight's probes already ask is left to them), without the lines of a superseded record
(a newer correction of the same question replaced it: ``council.memory.sqlite.superseded_records``; a line's
``record_id`` before any ``#`` names its record). Erased records' lines are already scrubbed from those files
(``council/memory/erasure.py``). At most ``DeployConfig.max_retention_probes`` are asked (default 64).

``retention_gate`` asks them greedily, as served, of the adapter the candidate replaces (or the base model)
and of the candidate. A probe is **lost** when the baseline answered it right and the candidate does not;
the candidate is refused when the lost share of the baseline's right answers exceeds
``DeployConfig.max_forgotten`` (default 0.05), the reason naming up to five lost questions.
``summary["retention"]``: ``{"candidate", "baseline", "lost", "lost_share", "max_forgotten", "versions"}``,
or ``{"skipped": why}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from council.engine.local.model import LocalModel
from council.engine.vllm.engine import VllmEngine
from council.memory.corrections import same_question  # two probes are the same question as recall says
from council.memory.sqlite import superseded_records
from council.routing.prompts import PromptStore, serving_system_prompt
from deploy.probes import run_probes
from deploy.registry import AdapterInfo, Registry
from training.data import record_of

if TYPE_CHECKING:
    from deploy.config import DeployConfig

log = logging.getLogger(__name__)

NAMED_LOST = 5  # lost questions a refusal names


def probe_lines(folder: Path) -> list[dict[str, Any]]:
    """The lines of ``folder/validation.jsonl`` that carry a user's correction (none when it is missing)."""
    from training.data import load_examples

    path = folder / "validation.jsonl"
    examples = load_examples(path) if path.is_file() else []
    return [e for e in examples if isinstance(e.get("correction"), str) and e["correction"].strip()]


def earlier_versions(registry: Registry, candidate: AdapterInfo) -> list[AdapterInfo]:
    """The versions created before ``candidate`` (by ``created_at``, then name), newest first."""
    mark = (candidate.created, candidate.version)
    earlier = [i for i in registry.versions() if i.version != candidate.version and (i.created, i.version) < mark]
    return sorted(earlier, key=lambda i: (i.created, i.version), reverse=True)


def earlier_probes(versions: list[AdapterInfo], candidate: AdapterInfo, superseded: set[str],
                   limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` probes of ``versions`` (newest first), one per question (the newest night's wording),
    none of a superseded record and none tonight's probes (``candidate``'s own validation lines) already ask;
    each names its ``version``. Taken round-robin — one of every earlier night, then a second of each, ... —
    so that every night is checked within ``limit``; with more nights than ``limit``, ``limit`` of them spread
    evenly from the newest to the oldest."""
    seen = {same_question(line["instruction"]) for line in probe_lines(candidate.path)}
    per_version: list[list[dict[str, Any]]] = []
    for info in versions:
        kept = []
        for line in probe_lines(info.path):
            key = same_question(line["instruction"])
            if key in seen or record_of(line) in superseded or line["record_id"] in superseded:
                continue
            seen.add(key)
            kept.append({**line, "version": info.version})
        per_version.append(kept)
    if len(per_version) > limit:  # more nights than probes: nights spread evenly, the newest and oldest included
        step = (len(per_version) - 1) / max(limit - 1, 1)
        per_version = [per_version[round(i * step)] for i in range(limit)]
    probes: list[dict[str, Any]] = []
    for turn in range(max((len(kept) for kept in per_version), default=0)):
        probes += [kept[turn] for kept in per_version if turn < len(kept)]
    return probes[:limit]


def judge(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The candidate's cases the baseline got right and it did not, and how many the baseline got right."""
    known = [(b, a) for b, a in zip(before["cases"], after["cases"], strict=True) if b["right"]]
    return [a for _, a in known if not a["right"]], len(known)


def retention_gate(config: DeployConfig, model: LocalModel | VllmEngine, info: AdapterInfo, baseline: str | None,
                   registry: Registry, summary: dict[str, Any]) -> str | None:
    """Ask the earlier nights' probes of ``baseline``, then of the candidate; the refusal reason or None.

    Leaves the model on ``baseline``. ``summary["retention"]``: both results and the lost questions, or why
    none ran."""
    baseline_folder = str(registry.folder(baseline)) if baseline else None
    if config.max_retention_probes == 0:
        summary["retention"] = {"skipped": "max_retention_probes is 0 (retention gate off)"}
        return None
    versions = earlier_versions(registry, info)
    probes = earlier_probes(versions, info, superseded_records(config.settings.paths.memory),
                            config.max_retention_probes)
    if not probes:
        summary["retention"] = {"skipped": (
            f"no version older than {info.version}" if not versions else
            f"none of the {len(versions)} earlier version(s) holds a held-out paraphrase of a correction still "
            "in force (not superseded, not erased) that tonight's probes do not already ask")}
        return None
    system = serving_system_prompt(PromptStore(config.settings.prompts_dir))
    tokens = config.settings.model.max_new_tokens
    model.use_adapter(baseline_folder)
    before = run_probes(model, probes, system, tokens)
    model.use_adapter(str(info.path))
    after = run_probes(model, probes, system, tokens)
    model.use_adapter(baseline_folder)
    for case, probe in zip(before["cases"] + after["cases"], probes + probes, strict=True):
        case["version"], case["record"] = probe["version"], record_of(probe)  # training/replay.py: forgotten first
    lost, known = judge(before, after)
    share = len(lost) / known if known else 0.0
    summary["retention"] = {"candidate": after, "baseline": {**before, "version": baseline},
                            "lost": [c["question"] for c in lost], "lost_share": round(share, 4),
                            "max_forgotten": config.max_forgotten,
                            "versions": sorted({p["version"] for p in probes})}
    log.info("retention: %d earlier probe(s); baseline %d right, candidate %d right, %d lost",
             len(probes), before["right"], after["right"], len(lost))
    if share > config.max_forgotten:
        named = [f"{c['question']!r} -> {c['answer'][:60]!r} (taught by {c['version']}: {c['expected']!r})"
                 for c in lost[:NAMED_LOST]]
        return (f"retention: forgot {len(lost)}/{known} earlier nights' facts the "
                f"{baseline or 'base model'} answered ({share:.0%} > max_forgotten {config.max_forgotten:.0%}): "
                + "; ".join(named))
    return None
