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

The flags are HarvestConfig's fields (harvest/config.py); ``council harvest --help`` lists them.
Prints one summary line on stdout, writes ``logs/harvest_last.json`` and exits 0 (wrote data), 3 (nothing to
harvest or nothing kept; normal for cron) or 1 (a real failure, incl. every record failing at the provider).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from council.core import exitcodes
from council.core.cliargs import add_config_arguments
from council.core.config import Settings, load_settings
from council.core.errors import CouncilError
from harvest.config import HarvestConfig
from harvest.selection import EPOCH, select

if TYPE_CHECKING:
    from harvest.pipeline import Report

log = logging.getLogger(__name__)


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
    from council.engine.provider import unregister_provider
    from council.memory.store import MemoryStore
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
    everything = [r for r in store.window(EPOCH, now + timedelta(seconds=1), success=False, harvested=False)
                  if not r.superseded_by]  # a superseded correction is never harvested (harvest/selection.py)
    report.outside_window = len(everything)
    if everything:
        log.warning("no unharvested failures in [%s, %s), but %d lie outside it; run without --since/--until "
                    "(every unharvested failure up to now) or widen them", config.since.isoformat(),
                    config.until.isoformat(), len(everything))
    else:
        log.info("nothing to harvest: no unharvested failures (thumbs down, rating <= 2, corrections, low "
                 "confidence) are recorded in %s; `council records --failed` lists the harvested ones",
                 store.folder)


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
    """One flag per HarvestConfig field, plus the three below that add_config_arguments cannot make."""
    parser = argparse.ArgumentParser(prog="council harvest", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, HarvestConfig, skip=("settings", "reverse"))
    # By hand: `reverse` is on by default and add_config_arguments only makes switches that turn a field on;
    # --home and --config pick the settings (`council` reads them itself; they matter for python -m harvest.main).
    parser.add_argument("--no-reverse", dest="reverse", action="store_false",
                        help="Do not write the reverse question of each kept correction.")
    parser.add_argument("--home", help="State directory (default $COUNCIL_HOME or ~/.council).")
    parser.add_argument("--config", help="TOML config file (default $COUNCIL_CONFIG or <home>/council.toml).")
    return parser


def cli(argv: list[str], settings: Settings | None) -> int:
    """``council harvest ...``: parse ``argv`` into a HarvestConfig, run it, print the summary line."""
    args = vars(build_parser().parse_args(argv))
    home, config_file = args.pop("home"), args.pop("config")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)  # its handler writes INFO lines to stdout
    try:
        if settings is None or home or config_file:
            settings = load_settings(config_file, {"home": home})
        config = HarvestConfig(settings=settings, **args)
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
