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

The files themselves (``scope.npy`` and ``scope.json``, which says which query and records each row came from)
are read and written by ``council/memory/scope_files.py``; erasure cuts an erased record's rows out of them
(``council/memory/unlearning.py``) and a serving model reads them again when ``scope_stamp`` changes, so an
erased question leaves the adapter's scope at once. A scope left with no row serves the adapter to no request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from council.memory.scope_files import (  # noqa: F401 - the scope files' API, used from here by engines
    EMBEDDING_DIM,
    SCOPE_FILE,
    SCOPE_MAP,
    Embed,
    query_key,
    read_scope,
    read_scope_map,
    save_scope,
    scope_stamp,
    write_scope,
)


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
