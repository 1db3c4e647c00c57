"""Checking a PEFT LoRA adapter folder before anything loads it.

A folder that ``loras/current`` names may have been written by anyone: a half-copied upload, a config that is
not an object, garbage or empty weights, a file the server cannot read, tensors made for another base model.
``check_adapter_folder(folder)`` reads the config and every weight and raises ``AdapterError`` with the reason;
``check_against_base(weights, config, model)`` also checks each LoRA pair against the module it would wrap.
Deploy, training and the server all call these, so a broken adapter is refused before the swap and never
reaches a forward pass.

Usage::

    config, weights = check_adapter_folder(Path("loras/v0007"))   # AdapterError if broken
    check_against_base(weights, config, model)                    # AdapterError if made for another model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from council.errors import AdapterError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."


def _lora_kind(key: str) -> str | None:
    """"lora_A" or "lora_B" for a LoRA weight's name (``...q_proj.lora_A.weight``), else None."""
    parts = key.split(".")
    return next((part for part in ("lora_A", "lora_B") if part in parts), None)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterError(f"{folder} has no {ADAPTER_CONFIG}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdapterError(f"{path} cannot be read: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{path} must hold a JSON object, not {type(config).__name__}")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r} is not a LoRA adapter")
    rank, alpha = config.get("r"), config.get("lora_alpha", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{path}: 'r' must be a positive integer, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise AdapterError(f"{path}: 'lora_alpha' must be a positive number, got {alpha!r}")
    targets = config.get("target_modules")  # None: PEFT picks the model type's defaults
    if targets is not None and not (isinstance(targets, str) or (
            isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise AdapterError(f"{path}: 'target_modules' must be a module name pattern or a list of names")
    for name in ("rank_pattern", "alpha_pattern"):
        if not isinstance(config.get(name) or {}, dict):
            raise AdapterError(f"{path}: {name!r} must be an object")
    return config


def _read_weights(folder: Path) -> dict[str, Any]:
    import torch

    path = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if path is None:
        raise AdapterError(f"{folder} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(path))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse someone's file is that file's fault
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch weights"
        raise AdapterError(f"{path} is not a readable {kind} file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(weights, dict) or not weights:
        raise AdapterError(f"{path} holds no tensors")
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or not tensor.is_floating_point():
            raise AdapterError(f"{path}: {key} is not a 2-d floating-point tensor")
        if _lora_kind(key) is None and "modules_to_save" not in key:
            raise AdapterError(f"{path}: {key} is not a LoRA weight (lora_A / lora_B)")
        if not torch.isfinite(tensor).all():
            raise AdapterError(f"{path}: {key} holds NaN or infinite values")
    return weights


def check_adapter_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and check ``folder``'s LoRA adapter; returns (config, weights by name). Raises AdapterError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist")
    config = _read_config(folder)
    weights = _read_weights(folder)
    ranks = config.get("rank_pattern") or {}
    for key, tensor in weights.items():
        if ranks or "modules_to_save" in key:
            continue  # per-module ranks: PEFT checks them against the pattern when it loads
        rank_axis = 0 if _lora_kind(key) == "lora_A" else 1
        if tensor.shape[rank_axis] != config["r"]:
            raise AdapterError(f"{folder}: {key} has shape {tuple(tensor.shape)}, which does not fit r={config['r']}")
    return config, weights


def check_against_base(weights: dict[str, Any], config: dict[str, Any], model: Any) -> None:
    """Raise AdapterError unless every LoRA pair in ``weights`` fits a linear module of ``model``."""
    for key, tensor in weights.items():
        if "modules_to_save" in key:
            continue
        kind = _lora_kind(key)
        parts = key.removeprefix(PEFT_PREFIX).split(".")
        path = ".".join(parts[: parts.index(kind)])
        try:
            module = model.get_submodule(path)
        except AttributeError as exc:
            raise AdapterError(f"{key} names {path}, which the base model "
                               f"{config.get('base_model_name_or_path') or ''} does not have: made for another "
                               "base model?") from exc
        width = getattr(module, "in_features" if kind == "lora_A" else "out_features", None)
        got = tensor.shape[1] if kind == "lora_A" else tensor.shape[0]
        if width is not None and got != width:
            raise AdapterError(f"{key} has shape {tuple(tensor.shape)}, but {path} has {width} "
                               f"{'inputs' if kind == 'lora_A' else 'outputs'}: made for another base model?")
