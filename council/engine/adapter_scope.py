"""Adapter scope: an adapter answers only the queries close to what it was trained on.

A LoRA adapter trained on a night's corrections changes the model everywhere, not only on the corrected
questions: teaching SmolLM2-135M nine product facts moved 15-25% of its answers to unrelated questions
(a held-out set the base model answered right), whatever the training recipe. So each adapter version keeps
``scope.npy``: the sentence embeddings (all-MiniLM-L6-v2, unit rows of 384 floats) of every query it was
trained on, its parent's included. At serving time a request's last user message is embedded and the
adapter is applied to that request only when its cosine similarity to some trained query reaches
``model.adapter_scope_similarity`` (default 0.75); every other request is answered by the base model, in
the same batch (PEFT mixed-adapter batches, ``adapter_names``).

Measured with the bundled demo facts: paraphrases of a trained question score 0.76-0.96, the canary's
general questions at most 0.23, "How long do phone batteries last?" against "How long does the Zorblax 3000
battery last?" 0.71. ``adapter_scope_similarity = 0`` serves the adapter to every request; an adapter folder
without ``scope.npy`` (made by hand or by an older Council) is served to every request too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from council.core.errors import AdapterError

SCOPE_FILE = "scope.npy"
EMBEDDING_DIM = 384

Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class AdapterUse:
    """Who answers one request: ``adapter`` (a version) or the base model (None)."""

    adapter: str | None = None
    similarity: float | None = None  # closeness to the adapter's trained queries, when it is scoped


def query_of(messages: list[dict[str, Any]]) -> str:
    """The text a request's scope is judged on: its last user message ('' when it has none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def read_scope(folder: Path) -> np.ndarray | None:
    """``folder/scope.npy`` as an (N, 384) float32 array; None when the adapter has no scope file."""
    path = folder / SCOPE_FILE
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a readable .npy array: {exc}") from exc
    if vectors.ndim != 2 or not len(vectors) or vectors.shape[1] != EMBEDDING_DIM or not np.isfinite(vectors).all():
        raise AdapterError(f"{path} must hold finite rows of {EMBEDDING_DIM} floats; got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def write_scope(folder: Path, queries: list[str], embed: Embed, parent: Path | None = None) -> int:
    """Write ``folder/scope.npy``: the embeddings of ``queries`` plus the parent's scope rows. Returns the rows.

    A parent without a scope file was served to every query; its child is scoped to its own queries."""
    inherited = read_scope(parent) if parent is not None else None
    vectors = embed(sorted(set(queries))) if queries else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    if inherited is not None and len(inherited):
        repeated = (vectors @ inherited.T).max(axis=1) > 0.9999 if len(vectors) else np.zeros(0, dtype=bool)
        vectors = np.concatenate([inherited, vectors[~repeated]])  # a query asked again adds no row
    tmp = folder / f".{SCOPE_FILE}.tmp"
    with tmp.open("wb") as handle:
        np.save(handle, vectors.astype(np.float32), allow_pickle=False)
    os.replace(tmp, folder / SCOPE_FILE)
    return int(vectors.shape[0])


def similarities(scope: np.ndarray, queries: list[str], embed: Embed) -> list[float]:
    """Each query's highest cosine similarity to a trained query (-1.0 for an empty scope or query)."""
    if not len(scope):
        return [-1.0] * len(queries)
    texts = [q for q in queries if q.strip()]
    best = iter((embed(texts) @ scope.T).max(axis=1).tolist() if texts else [])
    return [float(next(best)) if q.strip() else -1.0 for q in queries]


@contextmanager
def scope_off(engine: Any) -> Iterator[None]:
    """Within the block ``engine``'s live adapter answers every request, in scope or not: its ``adapter_scope``
    (LocalModel's or VllmEngine's) is set aside and put back after."""
    scope, engine.adapter_scope = engine.adapter_scope, None
    try:
        yield
    finally:
        engine.adapter_scope = scope
