"""``council harvest``: turn failed exchanges into training data with an autogen council.

Reads failures (``success = false``, not harvested yet) from the memory store for a UTC window (default:
every one not harvested yet, up to now), collapses near-duplicate queries, redacts PII, lets N autogen ``AssistantAgent``
rewriters (each its own prompt style and litellm model) propose ``REASONING/ANSWER`` rewrites and vote,
scores the winner (``harvest.quality``) and appends the rewrites scoring >= ``min_quality`` to
``<home>/training_data/harvest_YYYYMMDD.jsonl`` (+ ``dpo_YYYYMMDD.jsonl`` for preference training).
Records are marked harvested only after their line is durably written, so re-runs never repeat work.

Run it::

    council harvest                                  # every unharvested failure, 3 x local/smollm2
    council harvest --since 2026-11-20 --until 2026-11-22 --max-records 20
    council harvest --agents 3 --models openai/gpt-4o-mini,anthropic/claude-3-5-haiku-latest,local/smollm2
    python -m harvest.main --home ~/.council

Prints one summary line on stdout, writes ``logs/harvest_last.json`` and exits 0 (wrote data), 3 (nothing to
harvest or nothing kept; normal for cron) or 1 (a real failure, incl. every record failing at the provider).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from council.core import exitcodes
from council.core.config import LOCAL_MODEL, Settings, load_settings
from council.core.errors import CouncilError
from harvest.selection import EPOCH, default_window, parse_when, select

if TYPE_CHECKING:
    from harvest.augment import AugmentSettings
    from harvest.pipeline import Report

log = logging.getLogger(__name__)


@dataclass
class HarvestConfig:
    settings: Settings | None = field(default=None, metadata={"help": "Council settings (state directory, prompts, local model); None = load_settings()."})
    since: datetime | str | None = field(default=None, metadata={"help": "Window start (ISO date or date-time, UTC, inclusive); default: the first failure not harvested yet."})
    until: datetime | str | None = field(default=None, metadata={"help": "Window end (ISO, UTC, exclusive); default: now."})
    max_records: int = field(default=50, metadata={"help": "Most records (after collapsing duplicates) rewritten per run."})
    agents: int = field(default=3, metadata={"help": "Council members; member i uses prompts/harvest_rewriter_<i>.j2 (cycling)."})
    models: list[str] = field(default_factory=lambda: [LOCAL_MODEL], metadata={"help": "litellm model strings, one per member, cycled when fewer than --agents."})
    min_quality: float = field(default=0.7, metadata={"help": "Quality score (0-1) a rewrite needs to be kept."})
    dedupe_similarity: float = field(default=0.95, metadata={"help": "Query-embedding cosine similarity at which failures are collapsed into one."})
    max_tokens: int = field(default=256, metadata={"help": "Token limit of one proposal."})
    vote_max_tokens: int = field(default=16, metadata={"help": "Token limit of one ballot."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of every council call."})
    concurrency: int = field(default=8, metadata={"help": "Records deliberated at once; their members' calls to a local model are decoded in shared batches (model.max_batch)."})
    timeout_seconds: float = field(default=120.0, metadata={"help": "Time limit of one model call; a timeout counts as a provider error."})
    paraphrases: int = field(default=6, metadata={"help": "Paraphrased questions written per kept correction (some held out as the deploy's probes); 0 = none."})
    statements: int = field(default=2, metadata={"help": "Declarative statements of the fact written per kept correction; 0 = none."})
    reverse: bool = field(default=True, metadata={"help": "Write the reverse question of each kept correction where it has one."})

    def __post_init__(self) -> None:
        if isinstance(self.since, str):
            self.since = parse_when(self.since)
        if isinstance(self.until, str):
            self.until = parse_when(self.until)
        if self.since is None and self.until is None:
            self.since, self.until = default_window(datetime.now(UTC))
        elif self.until is None:
            self.until = datetime.now(UTC)
        elif self.since is None:
            self.since = EPOCH
        if self.since >= self.until:
            raise ValueError(f"--since ({self.since.isoformat()}) must be before --until ({self.until.isoformat()})")
        if self.max_records < 1:
            raise ValueError("--max-records must be >= 1")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be >= 1 (records deliberated at once)")
        if self.agents < 1:
            raise ValueError("--agents must be >= 1 (3 is the default council)")
        self.models = [m.strip() for m in self.models if m and m.strip()]
        if not self.models:
            raise ValueError("--models needs at least one litellm model string, e.g. local/smollm2")
        if len(self.models) > self.agents:
            raise ValueError(f"{len(self.models)} models for {self.agents} agents; raise --agents or drop models")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError("--min-quality must be within 0..1 (default 0.7)")
        if not 0.0 < self.dedupe_similarity <= 1.0:
            raise ValueError("--dedupe-similarity must be within (0, 1] (default 0.95)")
        if self.max_tokens < 8 or self.vote_max_tokens < 2:
            raise ValueError("max_tokens must be >= 8 and vote_max_tokens >= 2")
        if self.temperature < 0 or self.timeout_seconds <= 0:
            raise ValueError("temperature must be >= 0 and timeout_seconds > 0")
        if self.paraphrases < 0 or self.statements < 0:
            raise ValueError("--paraphrases and --statements must be >= 0 (0 = none; defaults 6 and 2)")

    @property
    def augment(self) -> AugmentSettings:
        from harvest.augment import AugmentSettings  # autogen loads here, not for --help

        return AugmentSettings(paraphrases=self.paraphrases, statements=self.statements, reverse=self.reverse)

    @property
    def member_models(self) -> list[str]:
        return [self.models[i % len(self.models)] for i in range(self.agents)]


async def harvest(config: HarvestConfig) -> Report:
    """Run one harvest and return its report (also written to ``logs/harvest_last.json``)."""
    from harvest.output import write_json
    from harvest.pipeline import Report, run_lock  # litellm loads here, not for --help

    settings = config.settings or load_settings()
    paths = settings.paths.ensure()
    report = Report(since=config.since.isoformat(), until=config.until.isoformat(), models=config.member_models)
    started = time.monotonic()
    try:
        with run_lock(paths.logs / "harvest.lock"):
            await _run(settings, config, report)
    except (CouncilError, OSError) as exc:
        report.failure = f"{type(exc).__name__}: {exc}"
        log.error("harvest failed: %s", report.failure)
    report.seconds = round(time.monotonic() - started, 3)
    report.exit_code = _exit_code(report)
    try:
        write_json(paths.logs / "harvest_last.json", report.to_dict())
    except OSError as exc:
        log.error("cannot write %s: %s", paths.logs / "harvest_last.json", exc)
    return report


async def _run(settings: Settings, config: HarvestConfig, report: Report) -> None:
    from council.memory.store import MemoryStore
    from council.engine.provider import unregister_provider
    from harvest.pipeline import Harvester, build_augmenter, build_council, ensure_local_provider

    store = MemoryStore.open(settings.paths.memory, index=False)  # reads SQLite only; the server owns the index
    provider = None
    try:
        council = build_council(settings, config)
        harvester = Harvester(settings, store, council, config.min_quality, report,
                              build_augmenter(settings, council, config))
        groups = harvester.take(select(store, config.since, config.until, config.max_records,
                                       config.dedupe_similarity))
        if not report.found:
            _say_what_lies_outside(store, config, report)
        if groups:
            provider = await ensure_local_provider(settings, config.member_models, config.concurrency)
            await harvester.run(groups, config.concurrency)
    finally:
        if provider is not None:
            unregister_provider("local", provider)
            provider.close()
        store.close()


def _say_what_lies_outside(store, config: HarvestConfig, report: Report) -> None:  # noqa: ANN001 - MemoryStore
    """Nothing in the window: count the unharvested failures outside it, and name the flags that take them."""
    now = datetime.now(UTC)
    everything = store.window(EPOCH, now + timedelta(seconds=1), success=False, harvested=False)
    report.outside_window = len(everything)
    if everything:
        log.warning("no unharvested failures in [%s, %s), but %d lie outside it; run without --since/--until "
                    "(every unharvested failure up to now) or widen them", config.since.isoformat(),
                    config.until.isoformat(), len(everything))


def _exit_code(report: Report) -> int:
    if report.failure is not None:
        return exitcodes.FAILURE
    if report.kept:
        return exitcodes.OK
    if report.errors and not report.attempted and not report.recovered:
        return exitcodes.FAILURE  # every record failed at the provider
    return exitcodes.NOTHING_TO_DO


def main(config: HarvestConfig) -> int:
    """Run a harvest; return its exit code."""
    return asyncio.run(harvest(config)).exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council harvest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", help=HarvestConfig.__dataclass_fields__["since"].metadata["help"])
    parser.add_argument("--until", help=HarvestConfig.__dataclass_fields__["until"].metadata["help"])
    parser.add_argument("--max-records", type=int, default=50, help="Most records rewritten per run (default 50).")
    parser.add_argument("--agents", type=int, help="Council members (default: 3, or one per --models entry if more).")
    parser.add_argument("--models", default=LOCAL_MODEL, help="Comma list of litellm model strings (default local/smollm2).")
    parser.add_argument("--min-quality", type=float, default=0.7, help="Quality a rewrite needs to be kept (default 0.7).")
    parser.add_argument("--dedupe-similarity", type=float, default=0.95, help="Collapse queries this similar (default 0.95).")
    parser.add_argument("--max-tokens", type=int, default=256, help="Token limit of one proposal (default 256).")
    parser.add_argument("--concurrency", type=int, default=8, help="Records deliberated at once (default 8).")
    parser.add_argument("--paraphrases", type=int, default=6, help="Paraphrased questions per kept correction (default 6; 0 = none).")
    parser.add_argument("--statements", type=int, default=2, help="Statements of the fact per kept correction (default 2; 0 = none).")
    parser.add_argument("--no-reverse", dest="reverse", action="store_false", help="Do not write reverse questions.")
    parser.add_argument("--home", help="State directory (default $COUNCIL_HOME or ~/.council).")
    parser.add_argument("--config", help="TOML config file (default $COUNCIL_CONFIG or <home>/council.toml).")
    return parser


def cli(argv: list[str], settings: Settings | None) -> int:
    """``council harvest ...``: parse ``argv`` into a HarvestConfig, run it, print the summary line."""
    args = build_parser().parse_args(argv)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)  # its handler writes INFO lines to stdout
    try:
        if settings is None or args.home or args.config:
            settings = load_settings(args.config, {"home": args.home})
        models = [m for m in args.models.split(",") if m.strip()]
        config = HarvestConfig(settings=settings, since=args.since, until=args.until, max_records=args.max_records,
                               agents=args.agents or max(3, len(models)), models=models, min_quality=args.min_quality,
                               dedupe_similarity=args.dedupe_similarity, max_tokens=args.max_tokens,
                               concurrency=args.concurrency, paraphrases=args.paraphrases,
                               statements=args.statements, reverse=args.reverse)
    except ValueError as exc:
        sys.stderr.write(f"council harvest: {exc}\n")
        return exitcodes.USAGE
    report = asyncio.run(harvest(config))
    sys.stdout.write(report.summary_line() + "\n")
    if report.failure:
        sys.stderr.write(f"council harvest: {report.failure}\n")
    return report.exit_code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(cli(sys.argv[1:], None))
