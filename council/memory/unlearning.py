"""Unlearning on erasure: the adapter versions that learned from erased records are marked, their scopes cut.

``scrub_files`` (``council/memory/erasure.py``) calls ``unlearn`` before it removes anything, while each
version's folder still says what it learned:

* **Lineage and taint.** A version learned from an erased record when its ``metadata.json`` ``learned`` list
  names the record (its ``record_id``, or the erased query as asked or PII-redacted) or its ``scope.json``
  does (the record ids and query hashes of every line it was trained on, earlier nights' replayed lines
  included). Such a version, and every version whose parent chain reaches one (its weights started from
  them), gets ``"tainted": {"at": <first erasure>, "records": <erased records learned, all erasures>}`` in its
  metadata.json (``"inherited": true`` when each of them came through its parent chain; ``last_at`` when a
  later erasure added to the count): counts and times, never an erased id or text. Training never continues a tainted adapter (``training/pipeline.py`` ``choose_parent``
  starts from the base model with ``"fresh_because": "parent tainted"``).
* **Out of scope at once.** Every version's ``scope.npy`` loses the rows of erased queries: the rows
  ``scope.json`` maps to an erased record or query; for a row without a map (an older folder), the rows at
  least ``SAME_QUERY`` cosine to an erased query's embedding. The serving model sees the new file
  (``scope_stamp``) at its next batch, so from then on the base model answers the erased questions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from council.core.atomic import atomic_write_json
from council.core.errors import AdapterError
from council.core.paths import StatePaths
from council.memory.scope_files import Embed, query_key, read_scope, read_scope_map, save_scope

log = logging.getLogger(__name__)

SAME_QUERY = 0.95  # an unmapped scope row this close to an erased query is that query (paraphrases score lower)
TAINT = "tainted"


class Erased(Protocol):
    """What is erased (``council.memory.erasure.Erased``): its ids and queries."""

    queries: frozenset[str]
    ids: frozenset[str]

    def erased_id(self, value: Any) -> bool: ...


@dataclass
class Unlearned:
    """What ``unlearn`` did: the versions newly marked (or marked again) and the scope rows it cut."""

    tainted: list[str] = field(default_factory=list)
    scope_rows: int = 0


def taint_of(folder: Path) -> dict[str, Any] | None:
    """``folder``'s taint mark (``{"at", "records", ...}``), or None when it learned nothing erased."""
    meta = _metadata(folder)
    mark = meta.get(TAINT) if meta else None
    return mark if isinstance(mark, dict) else None


def _metadata(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _versions(loras: Path) -> dict[str, dict[str, Any]]:
    """Each version folder's metadata.json (the folders that have a readable one)."""
    if not loras.is_dir():
        return {}
    found = {}
    for folder in sorted(loras.iterdir()):
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        meta = _metadata(folder)
        if meta is not None:
            found[folder.name] = meta
    return found


def _erased_key(erased: Erased, record_id: Any, query: Any, hashes: set[str]) -> str | None:
    """What names the erased record a learned entry or scope row came from (its id or query hash), or None."""
    if erased.erased_id(record_id):
        return str(record_id).split("#", 1)[0]
    if isinstance(query, str) and query.strip() and query.strip() in erased.queries:
        return query_key(query)
    if isinstance(query, str) and query in hashes:  # a scope.json entry: the query is already a hash
        return query
    return None


def _scope(folder: Path) -> np.ndarray | None:
    """``folder``'s scope rows; None when it has none or they cannot be read (said in the log)."""
    try:
        return read_scope(folder)
    except AdapterError as exc:
        log.warning("erasure: %s; its scope is left as it is", exc.message)
        return None


def _row_erased(entry: dict[str, Any] | None, erased: Erased, hashes: set[str]) -> bool:
    """Whether a ``scope.json`` entry maps its row to an erased record or query (an unmapped row: False)."""
    return entry is not None and (entry.get("query") in hashes
                                  or any(erased.erased_id(r) for r in entry.get("records") or []))


def _learned_from(folder: Path, meta: dict[str, Any], erased: Erased, hashes: set[str]) -> set[str]:
    """The erased records (as keys) ``folder``'s version learned, by its metadata and its scope map."""
    keys = set()
    for entry in meta.get("learned") or []:
        if isinstance(entry, dict):
            keys.add(_erased_key(erased, entry.get("record_id"), entry.get("question"), set()))
    scope = _scope(folder)
    for entry in read_scope_map(folder, 0 if scope is None else len(scope)):
        ids = {_erased_key(erased, record, None, set()) for record in (entry or {}).get("records") or []} - {None}
        keys |= ids or {_erased_key(erased, None, (entry or {}).get("query"), hashes)}
    keys.discard(None)
    return keys  # type: ignore[return-value]


def _chain(version: str, metas: dict[str, dict[str, Any]]) -> list[str]:
    """``version`` and its ancestors (by ``parent``), nearest first; stops at a missing folder or a loop."""
    chain: list[str] = []
    while version in metas and version not in chain:
        chain.append(version)
        version = str(metas[version].get("parent") or "")
    return chain


def mark_tainted(paths: StatePaths, erased: Erased, now: str) -> list[str]:
    """Mark the versions that learned from ``erased`` records, and their descendants; the versions marked."""
    metas = _versions(paths.loras)
    hashes = {query_key(q) for q in erased.queries if q}
    direct = {v: _learned_from(paths.loras / v, meta, erased, hashes) for v, meta in metas.items()}
    marked = []
    for version, meta in metas.items():
        chain = _chain(version, metas)
        ancestors = set().union(*(direct[v] for v in chain[1:]))
        keys = direct[version] | ancestors
        if not keys:
            continue
        old = meta.get(TAINT) if isinstance(meta.get(TAINT), dict) else {}
        inherited = direct[version] <= ancestors  # every erased record it holds, its parent chain held first
        meta[TAINT] = {"at": old.get("at") or now, "records": int(old.get("records") or 0) + len(keys),
                       "inherited": bool(old.get("inherited", True)) and inherited}
        if old.get("at"):
            meta[TAINT]["last_at"] = now
        atomic_write_json(paths.loras / version / "metadata.json", meta)
        marked.append(version)
    if marked:
        log.warning("erasure: %d adapter version(s) learned from erased records and are marked tainted: %s",
                    len(marked), ", ".join(marked))
    return marked


def cut_scopes(paths: StatePaths, erased: Erased, embed: Callable[[], Embed],
               folders: list[Path] | None = None) -> int:
    """Drop the scope rows of erased queries from every version (or from ``folders``; ``embed()`` gives the
    embedder, asked for only when a row has no map and ``erased`` has queries); the rows dropped."""
    hashes = {query_key(q) for q in erased.queries if q}
    erased_vectors: np.ndarray | None = None
    cut = 0
    for folder in folders if folders is not None else [p.parent for p in sorted(paths.loras.glob("*/scope.npy"))]:
        if folder.is_symlink() or not (folder / "scope.npy").is_file():
            continue
        vectors = _scope(folder)
        if vectors is None or not len(vectors):
            continue
        entries = read_scope_map(folder, len(vectors))
        drop = np.array([_row_erased(entry, erased, hashes) for entry in entries])
        unmapped = np.array([entry is None for entry in entries])
        if unmapped.any() and erased.queries:
            if erased_vectors is None:
                erased_vectors = embed()(sorted(q for q in erased.queries if q))
            drop |= unmapped & ((vectors @ erased_vectors.T).max(axis=1) >= SAME_QUERY)
        if drop.any():
            save_scope(folder, vectors[~drop], [e for e, gone in zip(entries, drop, strict=True) if not gone])
            cut += int(drop.sum())
    if cut:
        log.warning("erasure: %d adapter scope row(s) of erased queries removed", cut)
    return cut


def unlearn(paths: StatePaths, erased: Erased, now: str, embed: Callable[[], Embed]) -> Unlearned:
    """Mark the versions that learned ``erased`` records and cut their queries out of every scope."""
    if not erased.ids and not erased.queries:
        return Unlearned()
    return Unlearned(tainted=mark_tainted(paths, erased, now), scope_rows=cut_scopes(paths, erased, embed))
