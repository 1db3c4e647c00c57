"""An adapter's scope files: ``scope.npy`` (the embeddings of the queries it was trained on) and ``scope.json``.

``scope.npy`` holds unit rows of 384 floats (all-MiniLM-L6-v2, ``council/memory/embedder.py``); how serving
uses them is ``council/engine/adapter_scope.py``'s part. ``scope.json`` beside it says where each row came
from, row for row: ``{"rows": [{"query": sha256 of the query, "records": [record ids]}, ...]}`` (``null`` for
a row inherited from a parent without the file). Erasure (``council/memory/unlearning.py``) cuts an erased
record's rows out of both; ``scope_stamp`` lets a serving model see that and read the scope again. A scope
left with no row serves the adapter to no request.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from council.core.errors import AdapterError

SCOPE_FILE = "scope.npy"
SCOPE_MAP = "scope.json"  # each row's query hash and record ids, aligned with scope.npy
EMBEDDING_DIM = 384

Embed = Callable[[list[str]], np.ndarray]


def read_scope(folder: Path) -> np.ndarray | None:
    """``folder/scope.npy`` as an (N, 384) float32 array; None when the adapter has no scope file."""
    path = folder / SCOPE_FILE
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a readable .npy array: {exc}") from exc
    if vectors.ndim != 2 or vectors.shape[1] != EMBEDDING_DIM or not np.isfinite(vectors).all():
        raise AdapterError(f"{path} must hold finite rows of {EMBEDDING_DIM} floats; got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def query_key(query: str) -> str:
    """How ``scope.json`` names a query: the sha256 of its stripped text."""
    return hashlib.sha256(query.strip().encode("utf-8")).hexdigest()


def read_scope_map(folder: Path, rows: int) -> list[dict[str, Any] | None]:
    """``folder/scope.json``'s entries, one per scope row; all None when the file is missing or does not fit."""
    try:
        entries = json.loads((folder / SCOPE_MAP).read_text(encoding="utf-8")).get("rows")
    except (OSError, ValueError, AttributeError):
        return [None] * rows
    if not isinstance(entries, list) or len(entries) != rows:
        return [None] * rows
    return [e if isinstance(e, dict) else None for e in entries]


def save_scope(folder: Path, vectors: np.ndarray, entries: list[dict[str, Any] | None]) -> None:
    """Replace ``scope.npy`` and ``scope.json`` (each atomically, the map first: a reader that sees the new
    rows sees their map)."""
    tmp = folder / f".{SCOPE_MAP}.tmp"
    tmp.write_text(json.dumps({"rows": entries}, indent=1), encoding="utf-8")
    os.replace(tmp, folder / SCOPE_MAP)
    tmp = folder / f".{SCOPE_FILE}.tmp"
    with tmp.open("wb") as handle:
        np.save(handle, np.asarray(vectors, dtype=np.float32).reshape(-1, EMBEDDING_DIM), allow_pickle=False)
    os.replace(tmp, folder / SCOPE_FILE)


def write_scope(folder: Path, queries: list[str], embed: Embed, parent: Path | None = None,
                records: list[str] | None = None) -> int:
    """Write ``folder/scope.npy`` (the embeddings of ``queries`` plus the parent's scope rows) and its
    ``scope.json`` (``records``: the record id each query came from, aligned with ``queries``). Returns the rows.

    A parent without a scope file was served to every query; its child is scoped to its own queries."""
    inherited = read_scope(parent) if parent is not None else None
    unique = sorted(set(queries))
    sources: dict[str, set[str]] = {q: set() for q in unique}
    for query, record in zip(queries, records or [], strict=False):
        sources[query].add(record)
    vectors = embed(unique) if unique else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    entries: list[dict[str, Any] | None] = [{"query": query_key(q), "records": sorted(sources[q])} for q in unique]
    if inherited is not None and len(inherited):
        kept: list[dict[str, Any] | None] = read_scope_map(parent, len(inherited)) if parent else []
        similar = vectors @ inherited.T if len(vectors) else np.zeros((0, len(inherited)), dtype=np.float32)
        repeated = similar.max(axis=1) > 0.9999 if len(vectors) else np.zeros(0, dtype=bool)
        for row in np.flatnonzero(repeated):  # a query asked again adds no row, its records join the old one
            old = kept[int(similar[row].argmax())]
            if old is not None:
                old["records"] = sorted(set(old.get("records") or []) | sources[unique[row]])
        vectors = np.concatenate([inherited, vectors[~repeated]])
        entries = kept + [e for e, again in zip(entries, repeated, strict=True) if not again]
    save_scope(folder, vectors, entries)
    return int(vectors.shape[0])


def scope_stamp(folder: Path) -> tuple[int, int, int] | None:
    """What changes when ``scope.npy`` is replaced (inode, size, mtime); None when there is none."""
    try:
        stat = (folder / SCOPE_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
