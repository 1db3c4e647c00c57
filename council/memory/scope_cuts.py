"""What leaves an adapter's scope besides an erasure of its own, with the erasure's lock held.

* ``out_of_scope``: a correction a newer one **superseded** (``council/memory/corrections.py``). The live
  adapter learned the old value; until a night trains the new one, the base model answers the question, with
  the newer correction recalled from memory (issue 28: a changed fact is replaced everywhere, at once).
  Nothing is marked tainted: the old value is no user's text to forget, and the next night's lines drop it.
* ``publish_unerased``: a record **erased while a version trained** (training read its lines before the
  erasure scrubbed them). Training reads its lines and notes the records the memory holds under the erasure
  lock (``held_records``), and publishes under it too: a noted record the memory no longer holds was erased
  meanwhile, so before the rename the new version's folder loses its text (``learned`` entries,
  ``validation.jsonl`` lines) and its scope rows, and is marked tainted — exactly what an erasure after
  publishing would have done. Nothing is published half-done: a failure leaves the unfinished folder, which
  training removes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from council.core.atomic import atomic_write_json
from council.core.paths import StatePaths
from council.memory.erasure import Erased, default_embedder, erasure_lock, scrub_jsonl, scrub_learned
from council.memory.schema import ExchangeRecord
from council.memory.scope_files import Embed
from council.memory.unlearning import TAINT, cut_scopes

log = logging.getLogger(__name__)


def out_of_scope(paths: StatePaths, records: list[ExchangeRecord], embedder: Callable[[], Embed] | None = None) -> int:
    """Cut the scope rows of ``records`` (by record id: another user's row with the same words stays) out of
    every adapter version, marking and scrubbing nothing; the rows cut. For corrections a newer one superseded
    (``council/memory/corrections.py``)."""
    if not records:
        return 0
    replaced = Erased(frozenset(r.id for r in records), frozenset(), frozenset())
    with erasure_lock(paths):  # the scopes are rewritten one writer at a time
        return cut_scopes(paths, replaced, embedder or default_embedder())


def held_records(paths: StatePaths, record_ids: list[str]) -> set[str]:
    """Which of the records harvest lines name (``rec_…``, ``rec_…#paraphrase-1``) the memory holds now. Call
    it under ``erasure_lock``, with the reading of those lines, so that no erasure falls in between."""
    from council.memory.sqlite import present_records

    return present_records(paths.memory, {r.split("#", 1)[0] for r in record_ids})


def forget_in(paths: StatePaths, folder: Path, erased: Erased, now: str, embed: Callable[[], Embed]) -> None:
    """What an erasure does to one version folder: its ``learned`` entries and ``validation.jsonl`` lines of
    ``erased`` go, its scope rows of them are cut, and it is marked tainted (``inherited`` false)."""
    scrub_learned(folder / "metadata.json", erased)
    if (folder / "validation.jsonl").is_file():
        scrub_jsonl(folder / "validation.jsonl", erased)
    cut_scopes(paths, erased, embed, folders=[folder])
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    meta[TAINT] = {"at": now, "records": len(erased.ids), "inherited": False}
    atomic_write_json(folder / "metadata.json", meta)


def publish_unerased(paths: StatePaths, tmp: Path, publish: Callable[[], None], learned: list[tuple[str, str]],
                     held: set[str], embedder: Callable[[], Embed] | None = None,
                     before_publish: Callable[[set[str]], None] | None = None) -> int:
    """Publish the trained version in ``tmp`` (``publish()`` renames it into ``loras/``) with no erasure
    running. ``learned`` holds its (record id, query) pairs and ``held`` the records the memory held when
    training read them (``held_records``); one it no longer holds was erased meanwhile and is forgotten in
    ``tmp`` first (``forget_in``). ``before_publish(gone)`` runs under the same lock (training writes its replay
    state there). Returns how many records were erased meanwhile."""
    with erasure_lock(paths):
        gone = held - held_records(paths, sorted(held))
        if gone:
            erased = Erased(frozenset(gone), frozenset(),
                            frozenset(q.strip() for r, q in learned if r.split("#", 1)[0] in gone))
            forget_in(paths, tmp, erased, datetime.now(UTC).isoformat(timespec="seconds"),
                      embedder or default_embedder())
            log.warning("%d record(s) were erased while training read them: the new version forgets them and "
                        "is marked tainted", len(gone))
        if before_publish is not None:
            before_publish(gone)
        publish()
    return len(gone)
