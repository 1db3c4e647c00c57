"""In-scope probes: does the candidate adapter answer what the night meant to teach it, in words it never saw?

The validation lines of an adapter (``loras/<version>/validation.jsonl``) that carry a user's ``correction``
are the paraphrases harvest held out of training. ``probe_gate`` asks each greedily of the candidate as it
will be served (adapter scope on, the server's system prompt), then of the adapter it replaces (or the base
model); an answer is right when it agrees with the correction (``harvest.quality.agrees``: it holds >= 80% of
the correction's words). The candidate needs ``DeployConfig.min_probe_pass_rate`` of them right (default 0.8).
The canary cannot do this: its general questions lie outside the adapter's scope, so the base model answers
them. ``summary["probes"]["improved"]`` (candidate right more often than the baseline) is what lets the night
call itself "improved". The earlier nights' probes, asked so that a candidate forgetting them is refused, are
``deploy.retention``'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from council.engine.local.model import LocalModel
from council.engine.vllm.engine import VllmEngine
from council.routing.prompts import PromptStore, serving_system_prompt
from deploy.registry import AdapterInfo, Registry
from harvest.quality import agrees

if TYPE_CHECKING:
    from deploy.config import DeployConfig

log = logging.getLogger(__name__)


def run_probes(model: LocalModel | VllmEngine, probes: list[dict[str, Any]], system: str, max_tokens: int) -> dict[str, Any]:
    """Ask each probe (a validation line with a ``correction``) greedily, as served; count the right answers."""
    cases = []
    for probe in probes:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": probe["instruction"]}]
        generation = model.generate(messages, max_new_tokens=max_tokens)  # greedy
        cases.append({"question": probe["instruction"], "expected": probe["correction"], "answer": generation.text,
                      "right": agrees(generation.text, probe["correction"]), "adapter": generation.adapter})
    right = sum(case["right"] for case in cases)
    return {"right": right, "total": len(cases), "rate": right / len(cases) if cases else None, "cases": cases}


def probe_gate(config: DeployConfig, model: LocalModel | VllmEngine, info: AdapterInfo, baseline: str | None,
               registry: Registry, summary: dict[str, Any]) -> str | None:
    """Run the in-scope probes on the candidate, then on ``baseline``; the refusal reason or None.

    Leaves the model on ``baseline``. ``summary["probes"]``: candidate and baseline results, or why none ran."""
    probes = [e for e in load_validation(info.path / "validation.jsonl", config.max_eval_examples)
              if isinstance(e.get("correction"), str) and e["correction"].strip()]
    if not probes:
        summary["probes"] = {"skipped": f"{info.version} has no held-out paraphrases of a user's correction "
                                        "(harvest holds one out only from a correction it could word at least twice "
                                        "more; point --models at a stronger council for more wordings)"}
        model.use_adapter(str(registry.folder(baseline)) if baseline else None)
        return None
    system = serving_system_prompt(PromptStore(config.settings.prompts_dir))
    tokens = config.settings.model.max_new_tokens
    candidate = run_probes(model, probes, system, tokens)
    model.use_adapter(str(registry.folder(baseline)) if baseline else None)
    before = run_probes(model, probes, system, tokens)
    summary["probes"] = {"candidate": candidate, "baseline": {**before, "version": baseline},
                         "min_pass_rate": config.min_probe_pass_rate,
                         "improved": candidate["right"] > before["right"]}
    if candidate["rate"] < config.min_probe_pass_rate:
        wrong = [f"{c['question']!r} -> {c['answer'][:60]!r}" for c in candidate["cases"] if not c["right"]]
        return (f"in-scope probes {candidate['right']}/{candidate['total']} right, below "
                f"{config.min_probe_pass_rate:.0%} (held-out paraphrases of the night's corrections): "
                + "; ".join(wrong[:5]))
    return None


def load_validation(path: Path, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` examples of an adapter's ``validation.jsonl`` (none when it is missing)."""
    from training.data import load_examples

    return load_examples(path)[:limit] if path.is_file() else []
