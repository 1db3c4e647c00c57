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
import math
import re
from pathlib import Path
from typing import Any

from council.core.errors import AdapterError

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
    if not math.isfinite(alpha):
        raise AdapterError(f"{path}: 'lora_alpha' must be finite")
    targets = config.get("target_modules")  # None: PEFT picks the model type's defaults
    if targets is not None and not (isinstance(targets, str) or (
            isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise AdapterError(f"{path}: 'target_modules' must be a module name pattern or a list of names")
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise AdapterError(f"{path}: 'target_modules' {targets!r} is not a valid pattern ({exc})") from exc
    _check_fields(path, config)
    return config


def _check_fields(path: Path, config: dict[str, Any]) -> None:
    """The LoraConfig fields PEFT reads, each of the type and range it expects (when present)."""
    dropout = config.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise AdapterError(f"{path}: 'lora_dropout' must be a number in [0, 1), got {dropout!r}")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise AdapterError(f"{path}: 'bias' must be 'none', 'all' or 'lora_only'")
    for name in ("fan_in_fan_out", "use_dora", "use_rslora", "inference_mode"):
        if not isinstance(config.get(name, False), bool):
            raise AdapterError(f"{path}: {name!r} must be true or false")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise AdapterError(f"{path}: 'base_model_name_or_path' must be a string")
    saved = config.get("modules_to_save")
    if saved is not None and not (isinstance(saved, list) and all(isinstance(m, str) for m in saved)):
        raise AdapterError(f"{path}: 'modules_to_save' must be a list of module names")
    for name, number in (("rank_pattern", int), ("alpha_pattern", (int, float))):
        pattern = config.get(name) or {}
        if not isinstance(pattern, dict) or any(
                isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v) or v <= 0
                for v in pattern.values()):
            raise AdapterError(f"{path}: {name!r} must map module names to positive numbers")
    layers = config.get("layers_to_transform")
    if layers is not None and not (isinstance(layers, int) and not isinstance(layers, bool) or (
            isinstance(layers, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in layers))):
        raise AdapterError(f"{path}: 'layers_to_transform' must be a layer index or a list of them")


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
    ranks, saved = config.get("rank_pattern") or {}, config.get("modules_to_save") or []
    for key, tensor in weights.items():
        if _lora_kind(key) is None:
            if not any(module in key.split(".") for module in saved):
                raise AdapterError(f"{folder}: {key} is neither a LoRA weight (lora_A / lora_B) nor one of "
                                   "modules_to_save")
            continue
        kind = _lora_kind(key)
        partner = key.replace(kind, "lora_B" if kind == "lora_A" else "lora_A")
        if partner not in weights:
            raise AdapterError(f"{folder}: {key} has no {partner.rsplit('.', 2)[-2]} partner (a half-copied file?)")
        _check_key_fits_config(folder, key, config)
        if ranks:
            continue  # per-module ranks: check_loaded compares them with what PEFT built
        rank_axis = 0 if _lora_kind(key) == "lora_A" else 1
        if tensor.shape[rank_axis] != config["r"]:
            raise AdapterError(f"{folder}: {key} has shape {tuple(tensor.shape)}, which does not fit r={config['r']}")
    return config, weights


def _check_key_fits_config(folder: Path, key: str, config: dict[str, Any]) -> None:
    """A LoRA weight must sit on a module and layer its own config targets (a hot swap reads the weights
    alone, so a config that says otherwise would be served one way now and another after a restart)."""
    parts = key.split(".")
    module = parts[parts.index(_lora_kind(key)) - 1] if parts.index(_lora_kind(key)) else ""
    targets = config.get("target_modules")
    if isinstance(targets, list) and module and module not in targets:
        raise AdapterError(f"{folder}: {key} is on {module}, which target_modules {targets} does not name")
    layers = config.get("layers_to_transform")
    match = re.search(r"\.layers\.(\d+)\.", key)
    if layers is not None and match:
        allowed = [layers] if isinstance(layers, int) else layers
        if int(match.group(1)) not in allowed:
            raise AdapterError(f"{folder}: {key} is on layer {match.group(1)}, which layers_to_transform "
                               f"{allowed} does not include")


def check_against_base(weights: dict[str, Any], config: dict[str, Any], model: Any) -> None:
    """Raise AdapterError unless every LoRA pair in ``weights`` fits a linear module of ``model``."""
    for key, tensor in weights.items():
        kind = _lora_kind(key)
        if kind is None:
            continue  # a module saved whole (modules_to_save): check_loaded compares it
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


def _silent(key: str, loaded: dict[str, Any]) -> bool:
    """True when ``key`` belongs to a LoRA pair that adds nothing (its A or B all zeros): a hot swap into a slot
    with more modules than the new adapter zeroes the extra ones."""
    kind = _lora_kind(key)
    if kind is None:
        return False
    pair = [loaded.get(key.replace(kind, other)) for other in ("lora_A", "lora_B")]
    return any(tensor is not None and not tensor.any() for tensor in pair)


def check_loaded(peft_model: Any, adapter_name: str, weights: dict[str, Any]) -> None:
    """Raise AdapterError unless the adapter PEFT now holds under ``adapter_name`` is exactly the file's: the
    same LoRA tensors, no more, no less (a half-copied file, a config that names other layers or DoRA, or a
    hot swap that stopped half way would otherwise serve something else silently)."""
    import torch
    from peft import get_peft_model_state_dict

    loaded = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    missing = sorted(set(weights) - set(loaded))
    extra = sorted(key for key in set(loaded) - set(weights) if not _silent(key, loaded))
    if missing or extra:
        sample = (missing or extra)[0]
        raise AdapterError(f"the loaded adapter does not match its files ({len(missing)} tensors of the file not "
                           f"used, {len(extra)} the model expects missing, e.g. {sample})")
    for key, tensor in weights.items():
        held = loaded[key].float()
        if held.shape != tensor.shape and held.ndim == 2 and _lora_kind(key) is not None:
            # a hot swap into a slot of higher rank pads the smaller adapter with zeros (same function)
            rows, cols = tensor.shape
            padding = held.clone()
            padding[:rows, :cols] = 0
            if held.shape[0] < rows or held.shape[1] < cols or padding.abs().max() > 0:
                raise AdapterError(f"the loaded adapter's {key} has shape {tuple(held.shape)}, the file's "
                                   f"{tuple(tensor.shape)}")
            held = held[:rows, :cols]
        if not torch.allclose(held, tensor.float(), rtol=1e-3, atol=1e-6):
            raise AdapterError(f"the loaded adapter's {key} differs from its file")
