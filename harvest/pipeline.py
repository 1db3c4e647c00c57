"""One harvest run: select failures, let the council rewrite them, write the JSONL, mark the records.

Per selected group (a lead record plus its near-duplicates), in priority order:

* lead already in its day's harvest file (an earlier run wrote it, then stopped before marking): mark only;
* a low-confidence answer no user faulted, when every council member is the embedded model: left alone (not
  rewritten, not marked; counted in ``left_for_stronger_council``): a 135M council rewrote right answers it
  was merely unsure of into worse ones ("Name three colors." -> "Red."), so only a stronger ``--models``
  council may judge them — and even then the answer as given is on the ballot, replaced only when out-voted;
* query, bad answer and correction are PII-redacted, then ``HarvestCouncil.deliberate``;
* a provider error: counted in ``errors``, nothing marked, the record is retried by a later run;
* no candidate survived (all malformed / disagreeing with the correction): counted, nothing marked;
* a user's correction is ALWAYS kept (quality scores judge rewrites, not the user's words), with the
  paraphrases, statements and reverse question ``harvest.augment`` writes for it (some paraphrases
  ``held_out`` for the deploy's in-scope probes); other winners are kept when they score >= ``min_quality``.
  Kept lines are appended (dpo file, then harvest file, each atomic and fsynced), and only then lead +
  duplicates are marked harvested;
* a rewrite below ``min_quality``, or the original answer out-voting every rewrite: counted and marked
  harvested (the council did its work).

The run holds ``logs/harvest.lock`` (flock), so two runs never rewrite the same records at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import litellm
from tqdm import tqdm

from council.core.config import Settings
from council.core.errors import CouncilError, StorageError
from council.core.locks import exclusive
from council.core.pii import redact, redact_counts
from council.memory.schema import ExchangeRecord, to_iso, utcnow
from council.routing.prompts import PromptStore
from harvest.augment import Augmented, Augmenter
from harvest.council import ORIGINAL_ANSWER, HarvestCouncil, ModelCallError
from harvest.output import append_jsonl, augmented_rows, dpo_path, harvest_path, kept_rows, written_ids
from harvest.selection import Group, Selection, day_of, source_label

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Counts of one run; ``to_dict()`` is ``logs/harvest_last.json``."""

    since: str
    until: str
    models: list[str]
    found: int = 0
    outside_window: int | None = None  # unharvested failures outside the window, counted when none were in it
    selected: int = 0
    collapsed: int = 0
    deferred: int = 0
    recovered: int = 0
    attempted: int = 0
    rewritten: int = 0
    kept: int = 0
    rejected_low_quality: int = 0
    kept_corrections: int = 0  # user corrections kept (always, whatever their quality score)
    kept_original: int = 0  # the answer as given out-voted every rewrite
    left_for_stronger_council: int = 0  # low-confidence answers an embedded-only council does not rewrite
    paraphrases: int = 0
    statements: int = 0
    reverse: int = 0
    held_out: int = 0  # paraphrases kept out of training, for the deploy's in-scope probes
    augment_proposed: int = 0
    augment_dropped: Counter = field(default_factory=Counter)
    augment_seconds: float = 0.0
    no_candidate: int = 0
    dropped_malformed: int = 0
    dropped_disagreeing: int = 0
    errors: int = 0
    qualities: list[float] = field(default_factory=list)
    redactions: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failure: str | None = None
    exit_code: int = 0

    @property
    def mean_quality(self) -> float | None:
        return round(sum(self.qualities) / len(self.qualities), 4) if self.qualities else None

    @property
    def rewrite_success_rate(self) -> float | None:
        return round(self.kept / self.attempted, 4) if self.attempted else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("qualities")
        data["redactions"] = dict(self.redactions)
        data["augment_dropped"] = dict(self.augment_dropped)
        data["augment_seconds"] = round(self.augment_seconds, 3)
        data["mean_quality"] = self.mean_quality
        data["rewrite_success_rate"] = self.rewrite_success_rate
        data["finished_at"] = to_iso(utcnow())
        return data

    def summary_line(self) -> str:
        quality = "n/a" if self.mean_quality is None else f"{self.mean_quality:.3f}"
        outside = f" outside_window={self.outside_window}" if self.outside_window else ""
        left = (f" left_for_stronger_council={self.left_for_stronger_council}" if self.left_for_stronger_council
                else "")
        return (f"harvest: found={self.found}{outside} collapsed={self.collapsed} rewritten={self.rewritten} kept={self.kept} "
                f"corrections={self.kept_corrections}{left} paraphrases={self.paraphrases} "
                f"statements={self.statements} reverse={self.reverse} held_out={self.held_out} "
                f"dropped_malformed={self.dropped_malformed} errors={self.errors} mean_quality={quality} "
                f"seconds={self.seconds:.1f} augment_seconds={self.augment_seconds:.1f}")


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` (``logs/harvest.lock``) for the run; CouncilError at once when another harvest holds it."""
    with exclusive(path) as held:
        if not held:
            raise CouncilError(f"another harvest holds {path}; wait for it to finish")
        yield


def _redact(report: Report, text: str | None) -> str | None:
    if text is None:
        return None
    clean, counts = redact_counts(text)
    report.redactions.update(counts)
    return clean


class Progress:
    """A tqdm bar on an interactive stderr, otherwise an INFO line every ~10% of the work."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.bar = tqdm(total=total, desc="harvest", unit="rec", file=sys.stderr) if sys.stderr.isatty() else None
        self.step = max(1, total // 10)

    def advance(self, report: Report) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(kept=report.kept, errors=report.errors)
            self.bar.update(1)
        elif self.done % self.step == 0 or self.done == self.total:
            log.info("harvest: %d/%d records, kept %d, errors %d, %.0fs", self.done, self.total, report.kept,
                     report.errors, time.monotonic() - self.started)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Harvester:
    def __init__(self, settings: Settings, store: Any, council: HarvestCouncil, min_quality: float,
                 report: Report, augmenter: Augmenter | None = None) -> None:
        self.settings, self.store, self.council = settings, store, council
        self.min_quality, self.report, self.augmenter = min_quality, report, augmenter
        self.folder = settings.paths.training_data
        self.local_only = all(m.startswith("local/") for m in council.models)

    def _mark(self, group: Group) -> None:
        self.store.mark_harvested(group.ids, utcnow())

    async def process(self, group: Group) -> None:
        report, record = self.report, group.lead
        day = day_of(record.created_at)
        if record.id in written_ids(harvest_path(self.folder, day)):
            log.info("record %s is already in %s; marking it harvested", record.id, harvest_path(self.folder, day).name)
            self._mark(group)
            report.recovered += 1
            return
        query = _redact(report, record.query) or ""
        bad = _redact(report, record.answer) or ""
        correction = _redact(report, record.gold_answer)
        unfaulted = record.failure_source == "low_confidence"
        try:
            outcome = await self.council.deliberate(query, bad, correction, keep_original=unfaulted)
            winner = outcome.winner
            extra = None
            if winner is not None and correction and self.augmenter is not None:
                started = time.monotonic()
                extra = await self.augmenter.augment(record.id, query, winner.answer, correction)
                report.augment_seconds += time.monotonic() - started
        except ModelCallError as exc:
            report.errors += 1
            log.warning("record %s: %s; it stays for the next run", record.id, exc)
            return
        report.attempted += 1
        report.dropped_malformed += outcome.malformed
        report.dropped_disagreeing += outcome.disagreeing
        if winner is None:
            report.no_candidate += 1
            log.info("record %s: no usable candidate (%d malformed, %d disagreeing); it stays for the next run",
                     record.id, outcome.malformed, outcome.disagreeing)
            return
        report.qualities.append(winner.quality)
        if winner.model == ORIGINAL_ANSWER:
            report.kept_original += 1
            log.info("record %s: the answer as given out-voted every rewrite; nothing to learn", record.id)
        elif correction or winner.quality >= self.min_quality:
            report.rewritten += 1
            self._write(record, query, bad, outcome, correction, extra, day)
        else:
            report.rewritten += 1
            report.rejected_low_quality += 1
            log.info("record %s: best rewrite scored %.3f < %.2f; not kept", record.id, winner.quality,
                     self.min_quality)
        self._mark(group)

    def _write(self, record: ExchangeRecord, query: str, bad: str, outcome: Any, correction: str | None,
               extra: Augmented | None, day: Any) -> None:
        report = self.report
        harvest_row, dpo_row = kept_rows(record, source_label(record), query, bad, correction, outcome,
                                         self.council.models)
        rows = [harvest_row]
        if extra is not None:
            rows += augmented_rows(harvest_row, correction, extra)
            report.augment_proposed += extra.proposed
            report.augment_dropped.update(extra.dropped)
            kinds = Counter(row["kind"] for row in rows[1:])
            report.paraphrases += kinds["paraphrase"] + kinds["statement"]  # every reworded question
            report.statements += kinds["statement"]
            report.reverse += kinds["reverse"]
            report.held_out += sum(1 for row in rows[1:] if row.get("held_out"))
        try:
            append_jsonl(dpo_path(self.folder, day), [dpo_row])
            append_jsonl(harvest_path(self.folder, day), rows)
        except OSError as exc:
            raise StorageError(f"cannot write {self.folder}: {exc}") from exc
        report.kept += 1
        report.kept_corrections += bool(correction)
        name = harvest_path(self.folder, day).name
        if name not in report.files:
            report.files.append(name)

    def take(self, selection: Selection) -> list[Group]:
        """Record what selection found; return the groups to process."""
        report = self.report
        report.found, report.selected = selection.found, len(selection.groups)
        report.collapsed, report.deferred = selection.collapsed, selection.deferred
        if selection.collapsed:
            log.info("collapsed %d near-duplicate queries into their group leads", selection.collapsed)
        if self.augmenter is not None:  # each fact's paraphrases must stay nearer to it than to these
            self.augmenter.other_questions = [redact(g.lead.query) for g in selection.groups
                                              if g.lead.gold_answer and g.lead.query]
        if not self.local_only:
            return selection.groups
        groups = [g for g in selection.groups if g.lead.failure_source != "low_confidence"]
        report.left_for_stronger_council = len(selection.groups) - len(groups)
        if report.left_for_stronger_council:
            log.info("left %d low-confidence answer(s) that no user faulted: an embedded-only council rewrites "
                     "only corrected or thumbed-down answers; run harvest with a stronger --models to judge them",
                     report.left_for_stronger_council)
        return groups

    async def run(self, groups: list[Group], concurrency: int = 1) -> None:
        """Process ``groups``, ``concurrency`` at a time, starting them in priority order."""
        progress = Progress(len(groups))
        pending = iter(groups)

        async def worker() -> None:
            for group in pending:  # one shared iterator: each group is taken by exactly one worker
                await self.process(group)
                progress.advance(self.report)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(groups)))]
        try:
            await asyncio.gather(*tasks)  # the first error (a full disk) is raised as itself...
        finally:
            for task in tasks:  # ...after the other workers stop: nothing writes once the store closes
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            progress.close()


async def ensure_local_provider(settings: Settings, models: list[str], concurrency: int = 1) -> Any:
    """Register the ``local`` provider if a member uses ``local/...`` and nobody registered it; return it or None.

    This process's model serves the harvest alone: its queue is unbounded in practice (the callers bound
    themselves: ``concurrency`` records, and augmentation's ``max_in_flight``), up to 32 calls share each
    decoding step, and its prefix cache holds every prompt kind's few-shot prefix."""
    if not any(m.startswith("local/") for m in models):
        return None
    if any(p["provider"] == "local" for p in litellm.custom_provider_map):
        return None
    from council.engine.provider import register_local_provider

    calls = concurrency * (len(models) + 1)  # + 1: the call that words a user's correction
    model = replace(settings.model, max_queue=max(settings.model.max_queue, 4096),
                    max_batch=max(settings.model.max_batch, min(calls, 32)),
                    prefix_cache_entries=max(settings.model.prefix_cache_entries, 16))
    return await register_local_provider(replace(settings, model=model))


def build_council(settings: Settings, config: Any) -> HarvestCouncil:
    """The harvest council of ``config`` (a HarvestConfig)."""
    return HarvestCouncil(config.member_models, PromptStore(settings.prompts_dir), max_tokens=config.max_tokens,
                          vote_max_tokens=config.vote_max_tokens, temperature=config.temperature,
                          timeout_seconds=config.timeout_seconds)


def build_augmenter(settings: Settings, council: HarvestCouncil, config: Any) -> Augmenter | None:
    """The augmenter of ``config`` (a HarvestConfig), or None when it asks for no extra wordings."""
    augment = config.augment
    if not (augment.paraphrases or augment.statements or augment.reverse):
        return None
    from council.memory.embedder import Embedder

    embed = Embedder(runtime=settings.memory.embedder_runtime).embed
    return Augmenter(council, PromptStore(settings.prompts_dir), augment, embed)
