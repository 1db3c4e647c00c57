"""``council train``: fine-tune a LoRA adapter on harvested council answers and publish it as a new version.

It reads the harvest files not yet trained on (``<home>/training_data/harvest_*.jsonl`` minus those listed
with their current hash in ``consumed.json``) or the ``--data`` files, keeps lines whose ``quality_score``
reaches ``--min-quality``, formats them with the base model's chat template (assistant turn from
``prompts/train_assistant.j2``, loss on assistant tokens only), splits off a validation set, and trains:

* ``--backend peft`` (CPU default): transformers + PEFT LoRA in this process, our own training loop;
* ``--backend unsloth``: Unsloth QLoRA on a CUDA GPU, in a child process; ``auto`` picks it when possible.

By default it continues from the adapter ``loras/current`` points at (lower learning rate, earlier nights'
lines replayed beside the new ones); ``--fresh`` starts from the base model. The result is ``loras/<version>/`` (adapter, metadata.json,
training_config.json, validation.jsonl, loss.png), renamed into place only when complete.

Run it as ``council train [flags]`` or, without the ``council`` command, ``python -m training.main
[--config FILE] [--home DIR] [flags]`` (settings from council.core.config.load_settings()); the flags are
TrainConfig's fields (training/config.py), listed by ``council train --help``.
Exit codes: 0 new adapter, 1 failure, 2 bad arguments, 3 not enough new data (normal under cron).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from council.core import exitcodes
from council.core.cliargs import add_config_arguments
from council.core.config import Settings, load_settings
from council.core.errors import CouncilError
from council.core.paths import StatePaths
from council.memory.embedder import Embedder
from council.memory.erasure import erasure_lock
from council.memory.scope_cuts import held_records, publish_unerased
from council.memory.unlearning import taint_of
from training import artifacts, pipeline, replay
from training.config import TrainConfig
from training.data import consumed_files, pending_files, read_harvest

log = logging.getLogger("training")


def _run(config: TrainConfig, paths: StatePaths, backend: str, report: Callable[[str], None]) -> int:
    started = time.perf_counter()
    files = [Path(p) for p in config.data] or pending_files(paths.training_data)
    if not files and not config.data and taint_of(paths.current_adapter.resolve()) is not None:
        # the live adapter learned from erased records: retrain from the base model on what is left, tonight
        files = consumed_files(paths.training_data)
        log.info("loras/current learned from erased records: retraining on %d earlier file(s)", len(files))
    if not files:
        log.info("nothing to train: no new harvest files in %s", paths.training_data)
        return exitcodes.NOTHING_TO_DO
    with erasure_lock(paths):  # the lines and the records the memory holds, with no erasure in between
        data = read_harvest(files, config.min_quality)
        held = held_records(paths, [e["record_id"] for e in data.examples])  # erased from now on: at publish
    if len(data.examples) < config.min_examples:
        log.info(
            "nothing to train: %d usable example(s) in %d file(s), need %d (%d malformed, %d below quality %.2f)",
            len(data.examples), len(files), config.min_examples, data.skipped_malformed,
            data.skipped_low_quality, config.min_quality,
        )  # fmt: skip
        return exitcodes.NOTHING_TO_DO
    prepared = pipeline.prepare(config, paths, data)
    held |= prepared.replay.held  # and the earlier nights' lines replayed
    harvested = len(prepared.train) - prepared.rehearsal
    if harvested + len(prepared.validation) < config.min_examples or not harvested:
        log.info("nothing to train: %d example(s) left after dropping prompts over max_length", harvested)
        return exitcodes.NOTHING_TO_DO
    version = artifacts.new_version()
    tmp = paths.loras / f"{artifacts.TMP_PREFIX}{version}"
    tmp.mkdir()
    try:
        result = pipeline.run(backend, prepared, tmp, config)
        meta = pipeline.metadata(
            version, config, backend, prepared, data, result, time.perf_counter() - started
        )
        pipeline.write_version(tmp, config, meta, prepared)
        # an erasure that ran while this trained is applied to the new version as it is published
        publish_unerased(paths, tmp, lambda: artifacts.publish(tmp, paths.loras / version),
                         list(zip(prepared.train_records, prepared.train_queries, strict=True)), held,
                         lambda: Embedder(runtime=config.embedder_runtime).embed,
                         lambda gone: replay.save_state(paths.training_data, prepared.replay.state, gone))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    consumed = artifacts.mark_consumed(paths.training_data, data.files)
    log.info("published %s; marked consumed: %s", paths.loras / version, ", ".join(consumed) or "(none)")
    report(pipeline.summary_line(version, meta))
    return exitcodes.OK


def main(config: TrainConfig, report: Callable[[str], None] | None = None) -> int:
    """Run one training stage; ``report`` receives the one-line summary (default: the log)."""
    paths = StatePaths(config.home.resolve()).ensure()
    try:
        backend = pipeline.choose(config.backend)
    except ValueError as exc:
        log.error("%s", exc)
        return exitcodes.USAGE
    try:
        with artifacts.training_lock(paths.loras):
            artifacts.clean_stale(paths.loras)
            return _run(config, paths, backend, report or log.info)
    except CouncilError as exc:
        log.error("training failed: %s", exc.message)
        return exitcodes.FAILURE
    except (OSError, RuntimeError):  # disk full, out of memory, a torch error: logged with its traceback
        log.exception("training failed")
        return exitcodes.FAILURE


# Flags add_config_arguments cannot express, added by hand in build_parser: --epochs and --learning-rate each
# set two fields (from the base model and when continuing the current adapter), --all-epochs switches a
# default-on field off, --data is repeatable (a list field); home, model_source and prompts_dir come from the
# settings (council.toml, --home).
_NOT_GENERATED = ("home", "model_source", "prompts_dir", "epochs", "incremental_epochs", "learning_rate",
                  "incremental_learning_rate", "stop_when_learned", "data")


def build_parser(prog: str = "council train") -> argparse.ArgumentParser:
    """One flag per TrainConfig field: generated, but for the hand-made ones of _NOT_GENERATED (None if left out)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, TrainConfig, skip=_NOT_GENERATED)
    default = {item.name: item.default for item in dataclasses.fields(TrainConfig)}
    parser.add_argument("--epochs", type=int, help=(
        f"Most epochs, from the base model or continuing the current adapter (default: {default['epochs']} "
        f"from the base model, {default['incremental_epochs']} when continuing); training stops earlier once "
        "every harvested answer is reproduced, unless --all-epochs."))
    parser.add_argument("--learning-rate", type=float, help=(
        f"AdamW learning rate, from the base model or continuing the current adapter (default: "
        f"{default['learning_rate']:g} from the base model, {default['incremental_learning_rate']:g} when "
        "continuing)."))
    parser.add_argument("--all-epochs", dest="stop_when_learned", action="store_false", default=None,
                        help="Run every epoch even after greedy decoding reproduces every harvested answer.")
    parser.add_argument("--data", action="append", metavar="PATH", help=(
        "Harvest JSONL file to train on (repeatable); default: the files in <home>/training_data not yet "
        "trained on (not in consumed.json with their current hash)."))
    return parser


def config_from_args(args: argparse.Namespace, settings: Settings) -> TrainConfig:
    """The TrainConfig of parsed flags; a hand-made flag left out (None) keeps its fields' defaults."""
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "epochs" in overrides:
        overrides["incremental_epochs"] = overrides["epochs"]
    if "learning_rate" in overrides:
        overrides["incremental_learning_rate"] = overrides["learning_rate"]
    return TrainConfig.from_settings(settings, **overrides)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exitcodes.OK if exc.code in (0, None) else exitcodes.USAGE


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )


def cli(argv: list[str], settings: Settings) -> int:
    """``council train ...``: parse flags into TrainConfig, run main, print the summary on stdout."""
    args = _parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        config = config_from_args(args, settings)
    except ValueError as exc:
        sys.stderr.write(f"council train: {exc}\n")
        return exitcodes.USAGE
    _ensure_logging()
    return main(config, report=lambda line: sys.stdout.write(line + "\n"))


def standalone(argv: list[str]) -> int:
    """``python -m training.main [--config FILE] [--home DIR] [train flags]``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--home")
    known, rest = pre.parse_known_args(argv)
    try:
        settings = load_settings(known.config, overrides={"home": known.home})
    except ValueError as exc:
        sys.stderr.write(f"council train: {exc}\n")
        return exitcodes.USAGE
    return cli(rest, settings)


if __name__ == "__main__":
    sys.exit(standalone(sys.argv[1:]))
