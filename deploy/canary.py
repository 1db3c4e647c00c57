"""Candidate checks before a swap: the canary suite and the validation-loss comparison.

Canary cases live in ``prompts/canary.jsonl``, one JSON object a line::

    {"id": "capital-france", "prompt": "What is the capital of France?", "max_tokens": 16,
     "checks": [{"type": "contains", "value": "Paris"}, {"type": "not_contains", "value": "<|im_"}]}

Check types: ``contains``, ``not_contains``, ``regex`` (``re.search``); each is case-insensitive unless
``"ignore_case": false``. An optional ``system`` gives a system message. Cases run with greedy decoding.

Before that, ``check_weights`` reads every tensor (corrupt or non-finite weights are refused) and
``check_base`` compares the adapter's base-model fingerprint with the served base model. The validation
split of an adapter (``loras/<version>/validation.jsonl``) is scored with the training stage's
``training.evaluate.validation_loss``, so the examples are formatted exactly as in training.

Then the in-scope probes (``deploy.probes``): held-out paraphrases of the night's corrections, asked of the
candidate as served; the earlier nights' probes (``deploy.retention``), refused when it forgot more than
``max_forgotten`` of what the adapter it replaces answered; then the validation loss, against that adapter.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from council.core.errors import AdapterError, CouncilError
from council.core.jsonl import json_objects
from council.engine.adapter_scope import scope_off
from council.engine.local.model import LocalModel
from council.engine.model_files import BaseModel, resolve_base_model
from council.engine.vllm.client import VllmReplica
from council.engine.vllm.engine import VllmEngine
from council.routing.prompts import PromptStore, serving_system_prompt
from deploy.probes import load_validation, probe_gate
from deploy.registry import AdapterInfo, Registry, RegistryState, read_adapter
from deploy.retention import retention_gate

if TYPE_CHECKING:
    from deploy.config import DeployConfig

log = logging.getLogger(__name__)

CHECK_TYPES = ("contains", "not_contains", "regex")


class CanaryError(CouncilError):
    """The canary file is missing or malformed."""


@dataclass
class Check:
    type: str
    value: str
    ignore_case: bool = True

    def passes(self, text: str) -> bool:
        if self.type == "regex":
            return re.search(self.value, text, re.IGNORECASE if self.ignore_case else 0) is not None
        haystack, needle = (text.lower(), self.value.lower()) if self.ignore_case else (text, self.value)
        found = needle in haystack
        return found if self.type == "contains" else not found

    def describe(self) -> str:
        return f"{self.type} {self.value!r}" + ("" if self.ignore_case else " (case-sensitive)")


@dataclass
class CanaryCase:
    id: str
    prompt: str
    checks: list[Check]
    max_tokens: int = 24
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": self.prompt}]


@dataclass
class CaseResult:
    id: str
    passed: bool
    output: str
    failed_checks: list[str] = field(default_factory=list)
    adapter_applied: bool = True  # False: outside the adapter's scope, the base model answered
    scope_similarity: float | None = None


@dataclass
class CanaryResult:
    cases: list[CaseResult]

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    @property
    def pass_rate(self) -> float:
        return self.passed / len(self.cases) if self.cases else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "total": len(self.cases), "pass_rate": self.pass_rate,
                "cases": [asdict(c) for c in self.cases]}


def _parse_case(data: Any, where: str) -> CanaryCase:
    if not isinstance(data, dict):
        raise CanaryError(f"{where}: expected a JSON object")
    prompt, checks = data.get("prompt"), data.get("checks")
    if not isinstance(prompt, str) or not prompt.strip():
        raise CanaryError(f"{where}: 'prompt' must be a non-empty string")
    if not isinstance(checks, list) or not checks:
        raise CanaryError(f"{where}: 'checks' must be a non-empty list")
    parsed = []
    for check in checks:
        if not isinstance(check, dict) or check.get("type") not in CHECK_TYPES or not isinstance(
            check.get("value"), str
        ):
            raise CanaryError(f"{where}: each check needs 'type' in {CHECK_TYPES} and a string 'value'")
        item = Check(check["type"], check["value"], bool(check.get("ignore_case", True)))
        if item.type == "regex":
            try:
                re.compile(item.value)
            except re.error as exc:
                raise CanaryError(f"{where}: bad regex {item.value!r}: {exc}") from exc
        parsed.append(item)
    max_tokens = data.get("max_tokens", 24)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise CanaryError(f"{where}: 'max_tokens' must be a positive integer")
    return CanaryCase(str(data.get("id") or where), prompt, parsed, max_tokens, data.get("system"))


def load_cases(path: Path, default_system: str | None = None) -> list[CanaryCase]:
    """Parse a canary JSONL file; blank lines and lines starting with ``//`` are skipped.

    Cases without their own ``system`` get ``default_system`` (the server's system prompt, so the canary
    asks the way users' requests arrive)."""
    cases = []
    for where, data in json_objects(path, CanaryError, "create it or set --canary-file"):
        case = _parse_case(data, where)
        case.system = case.system or default_system
        cases.append(case)
    if not cases:
        raise CanaryError(f"canary file {path} has no cases")
    return cases


def run_canary(model: LocalModel | VllmEngine, cases: list[CanaryCase]) -> CanaryResult:
    """Run every case greedily, as the server would: on the live adapter, or the base model outside its scope."""
    results = []
    for case in cases:
        generation = model.generate(case.messages(), max_new_tokens=case.max_tokens)  # greedy
        failed = [check.describe() for check in case.checks if not check.passes(generation.text)]
        results.append(CaseResult(case.id, not failed, generation.text, failed,
                                  generation.adapter is not None, generation.scope_similarity))
        log.info("canary %s: %s %r", case.id, "pass" if not failed else f"FAIL {failed}", generation.text)
    return CanaryResult(results)


def unscoped_canary(model: LocalModel | VllmEngine, cases: list[CanaryCase]) -> dict[str, Any]:
    """The canary with the adapter answering every case, scope or not: how far the adapter drifts outside its
    scope. Reported, not required (the server applies the scope)."""
    with scope_off(model):
        drift = run_canary(model, cases)
    failed = [c.id for c in drift.cases if not c.passed]
    if failed:
        log.warning("without its scope the adapter would fail canary case(s) %s; it is served scoped, so the "
                    "base model answers them", ", ".join(failed))
    return {"passed": drift.passed, "total": len(drift.cases), "failed": failed}


def check_weights(folder: Path) -> int:
    """Read every adapter tensor; AdapterError when the file is corrupt or holds NaN/inf. Returns the count."""
    import torch

    safetensors_file, bin_file = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(safetensors_file), framework="pt") as handle:
                    tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            except SafetensorError as exc:
                raise AdapterError(f"{safetensors_file} is not a readable safetensors file: {exc}") from exc
        else:
            tensors = torch.load(bin_file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise AdapterError(f"adapter weights in {folder} cannot be read: {exc}") from exc
    if not isinstance(tensors, dict) or not tensors:
        raise AdapterError(f"adapter weights in {folder} hold no tensors")
    for name, tensor in tensors.items():
        if not torch.is_tensor(tensor) or not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"adapter tensor {name} in {folder} is not finite")
    return len(tensors)


def check_base(metadata: dict[str, Any], base: BaseModel) -> None:
    """AdapterError unless the adapter was trained on ``base`` (fingerprints match)."""
    trained_on = metadata.get("base_model_fingerprint")
    if not trained_on:
        raise AdapterError("metadata.json has no base_model_fingerprint; cannot tell which base model it is for")
    if trained_on != base.fingerprint:
        raise AdapterError(
            f"adapter was trained on base model {metadata.get('base_model_id')!r} ({trained_on}) but the server "
            f"uses {base.model_id!r} ({base.fingerprint})"
        )


def validation_loss(model: LocalModel, examples: list[dict[str, Any]], prompts: PromptStore) -> float | None:
    """Mean assistant-token loss under the model's live adapter, formatted as in training; None if unscorable.

    The adapter is applied to every example, scope or not: this compares what two adapters learned."""
    from training.evaluate import validation_loss as training_loss

    loss = float(training_loss(model.active, model.tokenizer, examples, prompts))
    if math.isnan(loss):
        return None
    if not math.isfinite(loss):
        raise AdapterError(f"validation loss is {loss}; the adapter produces non-finite logits")
    return loss


def check_candidate(config: DeployConfig, info: AdapterInfo, registry: Registry, state: RegistryState,
                    summary: dict[str, Any], served_on: str | None = None) -> str | None:
    """Validate, canary-test and score ``info`` against the current adapter; the refusal reason or None.

    ``served_on``: a vLLM replica's URL that holds the candidate (``deploy/publish.py``): the canary and the probes
    then run there, through the engine that will serve; else in this process. The validation loss needs the
    weights, so it is always computed here.

    AdapterError (corrupt, mismatched or unloadable adapter) propagates; a broken canary file raises
    CanaryError (the deploy fails without blaming the adapter).
    """
    settings = config.settings
    cases = load_cases(Path(config.canary_file), serving_system_prompt(PromptStore(settings.prompts_dir)))
    base = resolve_base_model(settings.model.source, settings.paths.models)
    check_base(info.metadata, base)
    tensors = check_weights(info.path)
    model = LocalModel.from_settings(base, settings.model)
    model.use_adapter(str(info.path))
    served = model if served_on is None else VllmEngine(
        VllmReplica(served_on), settings.engine.served_model_name, settings.model.adapter_scope_similarity,
        model.embedder() if settings.model.adapter_scope_similarity > 0 else None)
    served.use_adapter(str(info.path))
    summary["validation"] = {"tensors": tensors, "base_model": base.model_id, "fingerprint": base.fingerprint}
    canary = run_canary(served, cases)
    summary["canary"] = {**canary.to_dict(), "engine": f"vllm {served_on}" if served_on else "in-process"}
    if served.adapter_scope is not None:
        summary["canary_unscoped"] = unscoped_canary(served, cases)
    if canary.pass_rate < config.min_canary_pass_rate:
        failed = [f"{c.id}: {', '.join(c.failed_checks)} (got {c.output!r})" for c in canary.cases if not c.passed]
        return (f"canary {canary.passed}/{len(canary.cases)} passed, below {config.min_canary_pass_rate:.0%}: "
                + "; ".join(failed))
    baseline_version = state.current if state.current and read_adapter(registry.folder(state.current)).complete \
        else None
    try:
        refused = probe_gate(config, served, info, baseline_version, registry, summary)
    except AdapterError as exc:
        log.warning("current adapter %s does not load (%s); comparing with the base model", baseline_version, exc)
        baseline_version = None
        served.use_adapter(str(info.path))
        refused = probe_gate(config, served, info, None, registry, summary)
    refused = refused or retention_gate(config, served, info, baseline_version, registry, summary)
    if refused:
        return refused
    examples = load_validation(info.path / "validation.jsonl", config.max_eval_examples)
    if not examples:
        summary["eval"] = {"skipped": f"{info.version} has no validation examples (fewer than the training's "
                                      "split_min_examples and no held-out paraphrases)"}
        log.warning("validation-loss gate skipped: %s", summary["eval"]["skipped"])
        return None
    prompts = PromptStore(settings.prompts_dir)
    if served is not model:
        try:
            model.use_adapter(str(registry.folder(baseline_version)) if baseline_version else None)
        except AdapterError:
            baseline_version = None
            model.use_adapter(None)
    baseline = validation_loss(model, examples, prompts)  # probe_gate left the served model on the baseline
    model.use_adapter(str(info.path))
    candidate = validation_loss(model, examples, prompts)
    summary["eval"] = {"examples": len(examples), "candidate_loss": candidate, "baseline_loss": baseline,
                       "baseline": baseline_version, "tolerance": config.loss_tolerance}
    if candidate is None or baseline is None:
        summary["eval"] = {"skipped": "no validation example fits the model's context"}
        log.warning("validation-loss gate skipped: %s", summary["eval"]["skipped"])
        return None
    if candidate > baseline + config.loss_tolerance * abs(baseline):
        return (f"validation loss {candidate:.4f} is worse than {baseline_version or 'the base model'}'s "
                f"{baseline:.4f} by more than {config.loss_tolerance:.0%}")
    return None
