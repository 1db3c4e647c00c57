"""Erasing exchanges for good, everywhere Council keeps their text.

``MemoryStore.delete`` (``council/memory/store.py``) removes the rows with ``delete_rows`` and ``scrub_sqlite`` here;
``scrub_files`` then removes what the nightly loop copied into files under the state directory. The server
does both for ``DELETE /v1/records/{id}``; ``council forget --user ID`` (``cli``) does both for every exchange of
one user, then VACUUMs the database and compacts the index at once.

Files (each one that changes is rewritten atomically, ``council/core/atomic.py``; no other is touched):

* ``training_data/harvest_*.jsonl``, ``training_data/dpo_*.jsonl``, ``loras/*/validation.jsonl``: a line goes
  when its ``record_id``, its ``source_record_id`` or the part of its ``record_id`` before a ``#`` is an erased
  id. A file that ``training_data/consumed.json`` lists with the hash it had gets its new hash there, so training
  does not take what is left of it for new data.
* ``loras/*/metadata.json``: ``learned`` entries go when their ``record_id`` is erased or their question is an
  erased query (as asked, or PII-redacted as harvest writes it).
* ``logs/**/*.json``: every string that quotes an erased id or text (query, answer, correction, user and assistant
  messages; one of at least ``MIN_QUOTE`` characters anywhere in it, a shorter one only as the whole string)
  becomes ``"[erased]"``, and an object entry whose key quotes one goes; ``logs/**/*.log``: such lines go;
  ``loras/registry.json`` and ``training_data/replay.json`` likewise (a deploy's refusal reason may quote a
  probe's question and answer; replay's state is keyed by record id).
* ``memory/responses.sqlite3`` (``/v1/responses``' stored responses): every response whose conversation holds
  an erased record goes (``council/memory/responses.py``).

Adapters (``council/memory/unlearning.py``, before the files above change): every version that learned from an
erased record (its ``learned`` entries or its ``scope.json`` name it), and every version descended from one, is
marked ``"tainted": {"at", "records"}`` in its metadata.json (counts and times only); every version's
``scope.npy`` loses the rows of the erased queries, so the serving adapter stops answering them at its next
batch and the base model answers instead. Not erased: the weights themselves. The next ``council train``
does not continue a tainted adapter: it trains from the base model on every line left (``"fresh_because":
"parent tainted"`` in the new version's metadata).

Usage::

    records = store.delete(["rec_..."])           # the rows, gone from SQLite
    scrubbed = scrub_files(settings.paths, records)   # Scrubbed(lines=3, strings=1, files=[...], tainted=[...])
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from council.core.atomic import atomic_write_json, atomic_write_lines
from council.core.config import Settings
from council.core.errors import CouncilError
from council.core.exitcodes import FAILURE, NOTHING_TO_DO, OK
from council.core.paths import StatePaths
from council.core.pii import redact
from council.memory.responses import RESPONSES_DB, erase_responses
from council.memory.schema import ExchangeRecord
from council.memory.scope_files import Embed
from council.memory.unlearning import unlearn

log = logging.getLogger(__name__)

MIN_QUOTE = 12  # shorter erased texts ("Yes", "2031") blank a log string only when they are all of it
BLANK = "[erased]"
JSONL_GLOBS = ("training_data/harvest_*.jsonl", "training_data/dpo_*.jsonl", "loras/*/validation.jsonl")
ERASURE_LOCK = ".erasure.lock"  # under the state directory: held while one erasure rewrites files
REGISTRY = "registry.json"  # loras/registry.json: deploy's states and reasons, which may quote a probe
REPLAY_STATE = "replay.json"  # training_data/replay.json: training/replay.py's {record id: night last replayed}
_ERASING = threading.Lock()  # the server erases in threads; FileLock alone is not re-entrant-safe across them
CONSUMED = "training_data/consumed.json"  # training's record of the harvest files it trained on: {name: sha256}


@dataclass(frozen=True)
class Erased:
    """What marks a copy of erased records: their ids, their texts and their queries."""

    ids: frozenset[str]
    texts: frozenset[str]
    queries: frozenset[str]

    @classmethod
    def of(cls, records: Iterable[ExchangeRecord]) -> Erased:
        ids, texts, queries = set(), set(), set()
        for r in records:
            ids.add(r.id)
            queries.update({r.query.strip(), redact(r.query).strip()})
            said = [m.get("content") for m in r.messages if m.get("role") in ("user", "assistant")]
            for text in (r.query, r.answer, r.gold_answer or "", *(s for s in said if isinstance(s, str))):
                texts.update({text.strip(), redact(text).strip()})
        texts.discard("")
        return cls(frozenset(ids), frozenset(texts), frozenset(queries))

    def erased_id(self, value: Any) -> bool:
        return isinstance(value, str) and (value in self.ids or value.split("#", 1)[0] in self.ids)

    def copies(self, row: Any) -> bool:
        """True for a JSONL row (harvest, dpo, validation) made from an erased record."""
        return isinstance(row, dict) and (self.erased_id(row.get("record_id"))
                                          or self.erased_id(row.get("source_record_id")))

    def quotes(self, text: str) -> bool:
        if text.strip() in self.texts or any(rid in text for rid in self.ids):
            return True
        return any(len(quote) >= MIN_QUOTE and quote in text for quote in self.texts)


@dataclass
class Scrubbed:
    """What ``scrub_files`` removed: JSONL lines, learned entries and log lines (``lines``), blanked log strings."""

    lines: int = 0
    strings: int = 0
    files: list[Path] = field(default_factory=list)
    responses: int = 0  # stored /v1/responses answers erased
    tainted: list[str] = field(default_factory=list)  # adapter versions marked as having learned erased records
    scope_rows: int = 0  # adapter scope rows of erased queries removed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scrub_jsonl(path: Path, erased: Erased) -> tuple[int, bytes, bytes]:
    """Drop ``path``'s lines copied from erased records; (lines dropped, old bytes, new bytes)."""
    old = path.read_bytes()
    lines = old.decode("utf-8", errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not (erased.copies(row) or (row is None and erased.quotes(line))):
            kept.append(line)
    if len(kept) == len(lines):
        return 0, old, old
    atomic_write_lines(path, kept)
    return len(lines) - len(kept), old, path.read_bytes()


def scrub_learned(path: Path, erased: Erased) -> int:
    """Drop the ``learned`` entries of an adapter's metadata.json taught by erased records."""
    data = json.loads(path.read_text(encoding="utf-8"))
    learned = data.get("learned") if isinstance(data, dict) else None
    if not isinstance(learned, list):
        return 0
    kept = [e for e in learned if not (isinstance(e, dict) and (
        erased.erased_id(e.get("record_id")) or str(e.get("question", "")).strip() in erased.queries))]
    if len(kept) < len(learned):
        data["learned"] = kept
        atomic_write_json(path, data)
    return len(learned) - len(kept)


def _blank(value: Any, erased: Erased) -> tuple[Any, int]:
    """``value`` with every string that quotes erased text blanked (and entries keyed by one dropped); count."""
    if isinstance(value, str):
        return (BLANK, 1) if erased.quotes(value) else (value, 0)
    if isinstance(value, list):
        items = [_blank(item, erased) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            if erased.quotes(key):
                count += 1
                continue
            out[key], n = _blank(item, erased)
            count += n
        return out, count
    return value, 0


def _scrub_log(path: Path, erased: Erased) -> tuple[int, int]:
    """(lines dropped, strings blanked) in one log file, rewritten only when something matched."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".log":
        lines = text.splitlines()
        kept = [line for line in lines if not erased.quotes(line)]
        if len(kept) < len(lines):
            atomic_write_lines(path, kept)
        return len(lines) - len(kept), 0
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        log.warning("%s is not JSON; left as it is", path)
        return 0, 0
    data, count = _blank(data, erased)
    if count:
        atomic_write_json(path, data)
    return 0, count


def _rehash(paths: StatePaths, hashes: dict[str, tuple[str, str]]) -> None:
    """Give the harvest files ``consumed.json`` lists with their old hash (``hashes``: name -> (old, new)) their
    new one; a file listed with another hash (changed since training) stays as it is: still pending."""
    path = paths.home / CONSUMED
    if not hashes or not path.is_file():
        return
    try:
        consumed = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; its hashes were not updated", path)
        return
    changed = {name: new for name, (old, new) in hashes.items()
               if isinstance(consumed, dict) and consumed.get(name) == old}
    if changed:
        atomic_write_json(path, {**consumed, **changed})


def default_embedder(runtime: str = "onnx-int8") -> Callable[[], Embed]:
    """The sentence embedder scopes are made with, loaded when first asked for (an unmapped scope row)."""
    def load() -> Embed:
        from council.memory.embedder import Embedder

        return Embedder(runtime=runtime).embed
    return load


def scrub_files(paths: StatePaths, records: list[ExchangeRecord],
                embedder: Callable[[], Embed] | None = None) -> Scrubbed:
    """Remove what files under the state directory copied from ``records`` and mark the adapters that learned
    them (see the module docstring); ``embedder`` gives the scope embedder (default: ``default_embedder()``)."""
    done = Scrubbed()
    if not records:
        return done
    erased = Erased.of(records)
    with erasure_lock(paths):  # one erasure at a time, in and across processes
        _scrub_text(paths, erased, done)
        try:  # the text first: an adapter's scope that cannot be cut now must not keep the text on disk
            unlearned = unlearn(paths, erased, datetime.now(UTC).isoformat(timespec="seconds"),
                                embedder or default_embedder())
            done.tainted, done.scope_rows = unlearned.tainted, unlearned.scope_rows
        finally:  # after unlearn, which finds the versions that learned a record by these entries
            for path in sorted(paths.loras.glob("*/metadata.json")):
                dropped = scrub_learned(path, erased)
                if dropped:
                    done.lines += dropped
                    done.files.append(path)
    return done


@contextmanager
def erasure_lock(paths: StatePaths) -> Iterator[None]:
    """Held while an erasure rewrites files; training holds it to publish a version (``publish_unerased``)."""
    with _ERASING, FileLock(str(paths.home / ERASURE_LOCK)):
        yield


def _scrub_text(paths: StatePaths, erased: Erased, done: Scrubbed) -> None:
    """The copies of the text: harvest and validation lines, logs, the adapter registry, stored responses."""
    harvested: dict[str, tuple[str, str]] = {}
    for pattern in JSONL_GLOBS:
        for path in sorted(paths.home.glob(pattern)):
            dropped, old, new = scrub_jsonl(path, erased)
            if dropped:
                done.lines += dropped
                done.files.append(path)
                if path.parent == paths.training_data:
                    harvested[path.name] = (_sha(old), _sha(new))
    _rehash(paths, harvested)
    # deploy's reasons quote probes; training's replay state names records
    registry = [p for p in (paths.loras / REGISTRY, paths.training_data / REPLAY_STATE) if p.is_file()]
    for path in sorted([*paths.logs.rglob("*.json"), *paths.logs.rglob("*.log")]) + registry:
        dropped, blanked = _scrub_log(path, erased)
        if dropped or blanked:
            done.lines, done.strings = done.lines + dropped, done.strings + blanked
            done.files.append(path)
    done.responses = erase_responses(paths.memory / RESPONSES_DB, erased.ids)
    if done.responses:
        done.files.append(paths.memory / RESPONSES_DB)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="council forget", description="Erase every exchange of one user for good: from the memory (SQLite "
        "rows, write-ahead log, vector index), from harvest, preference and validation files, from what each "
        "adapter's metadata says it learned, and from the logs. The adapters that learned from them are marked "
        "tainted and stop answering them at once; the next training starts from the base model.")
    parser.add_argument("--user", required=True, help="The user to forget: the value their requests sent as "
                        "'user' or in the x-council-user header (see GET /v1/records?user=...).")
    return parser


def cli(argv: list[str], settings: Settings) -> int:
    """``council forget --user ID``: exit 0 when something was erased, 3 when nothing was found, 1 on failure."""
    args = _parser().parse_args(argv)
    from council.memory.store import MemoryStore  # here: council.memory.store imports this module

    try:
        store = MemoryStore.open(settings.paths.memory, index=False)  # compact() below rebuilds the index
        try:
            records = store.delete(user=args.user, vacuum=True, compact=False)
            if records:
                store.compact()
        finally:
            store.close()
        scrubbed = scrub_files(settings.paths, records, default_embedder(settings.memory.embedder_runtime))
    except CouncilError as exc:
        sys.stderr.write(f"council forget: {exc.message}\n")
        return FAILURE
    except OSError as exc:
        sys.stderr.write(f"council forget: {exc}\n")
        return FAILURE
    sys.stdout.write(f"forgot user {args.user!r}: {len(records)} record(s) removed from {settings.paths.memory}, "
                     f"{scrubbed.lines} line(s) and {scrubbed.strings} log string(s) from {len(scrubbed.files)} "
                     "file(s)\n")
    if scrubbed.tainted:
        sys.stdout.write(f"{len(scrubbed.tainted)} adapter version(s) had learned from them and are marked tainted "
                         f"({scrubbed.scope_rows} scope row(s) removed); the next `council train` starts from the "
                         "base model\n")
    return OK if records or scrubbed.lines or scrubbed.strings else NOTHING_TO_DO
