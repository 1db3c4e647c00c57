"""What leaves an adapter's scope besides an erasure of its own, with the erasure's lock held.

* ``out_of_scope``: a correction a newer one **superseded** (``council/memory/corrections.py``). The live
  adapter learned the old value; until a night trains the new one, the base model answers the question, with
  the newer correction recalled from memory (issue 28: a changed fact is replaced everywhere, at once).
  Nothing is marked tainted: the old value is no user's text to forget, and the next night's lines drop it.
* ``publish_unerased``: a record **erased while a version trained** (training read its lines before the
  erasure scrubbed them). Training publishes under the erasure lock and checks every record it learned is
  still in the memory; the missing ones were erased, so the new version is marked tainted and their queries
  cut from its scope, exactly as an erasure after publishing would have done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from council.core.paths import StatePaths
from council.memory.erasure import Erased, default_embedder, erasure_lock
from council.memory.schema import ExchangeRecord
from council.memory.scope_files import Embed
from council.memory.unlearning import cut_scopes, unlearn

log = logging.getLogger(__name__)


def out_of_scope(paths: StatePaths, records: list[ExchangeRecord], embedder: Callable[[], Embed] | None = None) -> int:
    """Cut ``records``' questions out of every adapter version's scope, marking and scrubbing nothing; the rows
    cut. For corrections a newer one superseded (``council/memory/corrections.py``): the live adapter learned
    the old value, so until a night trains the new one the base model answers them, with the newer correction
    recalled from memory (issue 28: a changed fact is replaced everywhere, at once)."""
    if not records:
        return 0
    with erasure_lock(paths):  # the scopes are rewritten one writer at a time
        return cut_scopes(paths, Erased.of(records), embedder or default_embedder())


def held_records(paths: StatePaths, record_ids: list[str]) -> set[str]:
    """Which of the records harvest lines name (``rec_…``, ``rec_…#paraphrase-1``) the memory holds now: what
    training takes right after reading its lines, for ``publish_unerased``."""
    from council.memory.sqlite import present_records

    return present_records(paths.memory, {r.split("#", 1)[0] for r in record_ids})


def publish_unerased(paths: StatePaths, publish: Callable[[], None], learned: list[tuple[str, str]],
                     held: set[str], embedder: Callable[[], Embed] | None = None) -> int:
    """Publish a trained version (``publish()`` renames it into ``loras/``) with no erasure running, then
    unlearn what was erased while it trained: ``learned`` holds its (record id, query) pairs, ``held`` the
    records the memory held when training read them (``held_records``); one of those the memory no longer
    holds was erased meanwhile, so the version is marked tainted and its query cut from the scope, as an
    erasure after publishing would have done. (Records never in this memory, e.g. ``--data`` from elsewhere,
    are not in ``held``.) Returns how many records were erased meanwhile."""
    with erasure_lock(paths):
        gone = held - held_records(paths, sorted(held))
        publish()
        if gone:
            erased = Erased(frozenset(gone), frozenset(),
                            frozenset(q.strip() for r, q in learned if r.split("#", 1)[0] in gone))
            unlearn(paths, erased, datetime.now(UTC).isoformat(timespec="seconds"), embedder or default_embedder())
            log.warning("%d record(s) were erased while training read them: the new version is marked tainted",
                        len(gone))
    return len(gone)
