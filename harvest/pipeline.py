"""One harvest run: select failures, let the council rewrite them, write the JSONL, mark the records.

Per selected group (a lead record plus its near-duplicates), in priority order:

* lead already in its day's harvest file (an earlier run wrote it, then stopped before marking): mark only;
* query, bad answer and correction are PII-redacted, then ``HarvestCouncil.deliberate``;
* a provider error: counted in ``errors``, nothing marked, the record is retried by a later run;
* no candidate survived (all malformed / disagreeing with the correction): counted, nothing marked;
* a winner scoring >= ``min_quality``: its lines are appended (dpo file, then harvest file, each atomic and
  fsynced), and only then lead + duplicates are marked harvested;
* a winner below ``min_quality``: counted as rejected and marked harvested (the council did its work; to
  retry with stronger models, nothing needs undoing: re-run with ``--models`` on a fresh record window).

The run holds ``logs/harvest.lock`` (flock), so two runs never rewrite the same records at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import litellm
from tqdm import tqdm

from council.config import Settings
from council.errors import CouncilError, StorageError
from council.prompts import PromptStore
from council.schema import ExchangeRecord, to_iso, utcnow
from harvest.council import HarvestCouncil, ModelCallError, Outcome
from harvest.output import append_jsonl, dpo_path, harvest_path, written_ids
from harvest.pii import redact_counts
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
        data["mean_quality"] = self.mean_quality
        data["rewrite_success_rate"] = self.rewrite_success_rate
        data["finished_at"] = to_iso(utcnow())
        return data

    def summary_line(self) -> str:
        quality = "n/a" if self.mean_quality is None else f"{self.mean_quality:.3f}"
        outside = f" outside_window={self.outside_window}" if self.outside_window else ""
        return (f"harvest: found={self.found}{outside} collapsed={self.collapsed} rewritten={self.rewritten} kept={self.kept} "
                f"dropped_malformed={self.dropped_malformed} errors={self.errors} mean_quality={quality} "
                f"seconds={self.seconds:.1f}")


@contextmanager
def run_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CouncilError(f"another harvest holds {path}; wait for it to finish") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redact(report: Report, text: str | None) -> str | None:
    if text is None:
        return None
    clean, counts = redact_counts(text)
    report.redactions.update(counts)
    return clean


def _rows(record: ExchangeRecord, query: str, bad: str, outcome: Outcome, models: list[str]) -> tuple[dict, dict]:
    winner = outcome.winner
    now = to_iso(utcnow())
    harvest_row = {"instruction": query, "input": "", "output": winner.answer, "reasoning": winner.reasoning,
                   "quality_score": winner.quality, "record_id": record.id, "votes": outcome.votes,
                   "models": models, "source": source_label(record), "created_at": now}
    dpo_row = {"prompt": query, "chosen": winner.answer, "rejected": bad, "record_id": record.id}
    return harvest_row, dpo_row


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
                 report: Report) -> None:
        self.settings, self.store, self.council = settings, store, council
        self.min_quality, self.report = min_quality, report
        self.folder = settings.paths.training_data

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
        try:
            outcome = await self.council.deliberate(query, bad, correction)
        except ModelCallError as exc:
            report.errors += 1
            log.warning("record %s: %s; it stays for the next run", record.id, exc)
            return
        report.attempted += 1
        report.dropped_malformed += outcome.malformed
        report.dropped_disagreeing += outcome.disagreeing
        if outcome.winner is None:
            report.no_candidate += 1
            log.info("record %s: no usable candidate (%d malformed, %d disagreeing); it stays for the next run",
                     record.id, outcome.malformed, outcome.disagreeing)
            return
        report.rewritten += 1
        report.qualities.append(outcome.winner.quality)
        if outcome.winner.quality >= self.min_quality:
            harvest_row, dpo_row = _rows(record, query, bad, outcome, self.council.models)
            try:
                append_jsonl(dpo_path(self.folder, day), [dpo_row])
                append_jsonl(harvest_path(self.folder, day), [harvest_row])
            except OSError as exc:
                raise StorageError(f"cannot write {self.folder}: {exc}") from exc
            report.kept += 1
            name = harvest_path(self.folder, day).name
            if name not in report.files:
                report.files.append(name)
        else:
            report.rejected_low_quality += 1
            log.info("record %s: best rewrite scored %.3f < %.2f; not kept", record.id, outcome.winner.quality,
                     self.min_quality)
        self._mark(group)

    def take(self, selection: Selection) -> list[Group]:
        """Record what selection found; return the groups to process."""
        report = self.report
        report.found, report.selected = selection.found, len(selection.groups)
        report.collapsed, report.deferred = selection.collapsed, selection.deferred
        if selection.collapsed:
            log.info("collapsed %d near-duplicate queries into their group leads", selection.collapsed)
        return selection.groups

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

    This process's model serves the harvest alone, so its queue and batch fit every call the ``concurrency``
    records can make at once (one per member), and all of them share each decoding step."""
    if not any(m.startswith("local/") for m in models):
        return None
    if any(p["provider"] == "local" for p in litellm.custom_provider_map):
        return None
    from council.provider import register_local_provider

    calls = concurrency * len(models)
    model = replace(settings.model, max_queue=max(settings.model.max_queue, calls),
                    max_batch=max(settings.model.max_batch, calls))
    return await register_local_provider(replace(settings, model=model))


def build_council(settings: Settings, config: Any) -> HarvestCouncil:
    return HarvestCouncil(config.member_models, PromptStore(settings.prompts_dir), max_tokens=config.max_tokens,
                          vote_max_tokens=config.vote_max_tokens, temperature=config.temperature,
                          timeout_seconds=config.timeout_seconds)
