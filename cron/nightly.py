"""``council nightly``: the improvement loop — harvest → train → deploy → retention cleanup → one summary alert.

Run by cron through ``cron/nightly_improvement.sh`` (crontab example in docs/nightly-loop.md), or by hand::

    council nightly                          # every unharvested failure, server at server.host:server.port
    council nightly --since 2026-11-21 --fresh --window-seconds 120

Each stage is its package's own ``main(config)`` (``cron.stages``), given the night's options
(``cron.config.NightlyConfig``); this module sequences them. A lock (``<home>/nightly.lock``) refuses a
second run while one is going. Preflight needs ``--min-free-gb`` of free disk and, when a server URL answers
nothing, says so (deploy then runs without monitoring). Every stage logs to
``<home>/logs/nightly-<stamp>/<stage>.log``. "Nothing to do" (exit 3) from a stage is normal: the later
stages run only on work an earlier night left pending (harvest files never trained on, an adapter trained but
never deployed), else the night ends with exit 0. A stage that fails, or raises instead of returning an exit
code, fails the night: its traceback goes to its log once, the summary names the stage and the error, the
alert says so, and the exit code is 1; cleanup still runs. The summary, loop figures and alerts are
``cron.summary``'s (``<home>/logs/nightly_summary.json``, ``loop_metrics.json`` for ``/metrics``).

Exit codes: 0 done (also when there was nothing to do), 1 a stage failed, 2 bad arguments,
4 another nightly run holds the lock.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from council.core import exitcodes
from council.core.cliargs import add_config_arguments
from council.core.config import Settings
from council.core.errors import CouncilError
from council.core.locks import exclusive
from council.server.loop_data import HISTORY_FILE
from cron.config import NightlyConfig
from cron.history import append_night
from cron.stages import STAGES, Stage, cleanup
from cron.summary import (
    SUMMARY_FILE,
    alert_training_done,
    crash_record,
    read_json,
    update_loop_metrics,
    what_was_taught,
    write_and_alert,
)
from deploy.alerts import Alerter
from deploy.monitor import ServerClient
from deploy.registry import utc_now

log = logging.getLogger(__name__)
BUSY = 4


@contextmanager
def nightly_lock(home: Path) -> Iterator[bool]:
    """An flock on ``<home>/nightly.lock``; yields False when another run holds it (released by the OS on death).

    While held the file holds this process's id. OSError when ``home`` or the file cannot be created.
    """
    with exclusive(home / "nightly.lock", write_pid=True) as held:
        yield held


@contextmanager
def stage_log(folder: Path, stage: str) -> Iterator[None]:
    """Send every log record of the stage to ``<folder>/<stage>.log`` too."""
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"{stage}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def preflight(config: NightlyConfig) -> tuple[str | None, dict[str, Any]]:
    """Why the loop must not start (or None), and what was checked."""
    free_gb = shutil.disk_usage(config.settings.home).free / 1e9
    checks: dict[str, Any] = {"free_gb": round(free_gb, 2)}
    if free_gb < config.min_free_gb:
        return f"only {free_gb:.1f} GB free in {config.settings.home}; need {config.min_free_gb} GB", checks
    health = ServerClient(config.server_url, config.settings.server.api_key).health()
    checks["server"] = {"url": config.server_url, "healthy": health is not None,
                        "adapter": (health or {}).get("adapter")}
    if health is None:
        log.warning("no server answers at %s; the deploy will not be confirmed or monitored", config.server_url)
    return None, checks


class Night:
    """One run of the loop: its summary, its log folder, and the guard that turns a crash into a failed stage."""

    def __init__(self, config: NightlyConfig) -> None:
        self.config = config
        self.started = time.time()
        self.summary: dict[str, Any] = {"started_at": utc_now(), "stages": {}, "seconds": {}, "pending": {},
                                        "errors": []}
        self.logs = config.settings.paths.logs / f"nightly-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"

    def guarded(self, stage: str, action: Callable[[], int | None]) -> int | None:
        """``action()`` with its log in ``<stage>.log``; an exception it raises fails the stage (exit 1)."""
        started = time.perf_counter()
        try:
            with stage_log(self.logs, stage):
                try:
                    code = action()
                except Exception as exc:  # a bug or OS failure the stage did not turn into an exit code
                    code = self.crashed(stage, exc)
        except OSError as exc:  # the stage's log file could not be opened
            code = self.crashed(stage, exc, logged_in="the command's stderr")
        if code is not None:
            self.summary["seconds"][stage] = round(time.perf_counter() - started, 1)
        return code

    def crashed(self, stage: str, exc: BaseException, logged_in: str = "") -> int:
        """Log ``exc`` with its traceback (once), record it in the summary, and fail the night."""
        log.exception("nightly stage %s raised %s; the night fails", stage, type(exc).__name__)
        logged_in = logged_in or str(self.logs / f"{stage}.log")
        record = crash_record(stage, exc, logged_in, Alerter(self.config.settings.alerts).url)
        self.summary["errors"].append(record)
        self.fail(f"{stage} raised {record['type']}: {record['message']}; traceback in {record['log']}")
        return exitcodes.FAILURE

    def fail(self, reason: str) -> None:
        """Mark the night failed; the first failure gives the reason."""
        if self.summary.get("result") != "failed":
            self.summary.update(result="failed", reason=reason)

    def run(self, stages: Sequence[Stage]) -> int:
        """Preflight, the stages, then cleanup and the loop figures (those two whatever happened before)."""
        code = self.guarded("preflight", self._preflight)
        if code == exitcodes.OK:
            code = self._run_stages(stages)
        for name, action in (("cleanup", self._cleanup), ("metrics", self._update_metrics)):
            if self.guarded(name, action) != exitcodes.OK:
                code = exitcodes.FAILURE
        return exitcodes.OK if code == exitcodes.OK else exitcodes.FAILURE

    def finish(self, code: int) -> int:
        self.summary.update(exit_code=code, finished_at=utc_now(), seconds_total=round(time.time() - self.started, 1))
        try:  # /loop's night-by-night plots; a history that cannot be written must not fail the night
            append_night(self.config.settings.paths, self.summary)
        except (OSError, ValueError, TypeError):  # a disk error or a malformed stage file: logged, not fatal
            log.exception("could not append the night to logs/%s", HISTORY_FILE)
        return write_and_alert(self.config.settings, self.summary, code)

    def _preflight(self) -> int:
        self.config.settings.paths.ensure()
        reason, self.summary["preflight"] = preflight(self.config)
        if reason:
            self.fail(f"preflight: {reason}")
            return exitcodes.FAILURE
        return exitcodes.OK

    def _run_stages(self, stages: Sequence[Stage]) -> int:
        idle: list[str] = []  # stages that found nothing new to do
        waiting = False  # the last stage run found nothing new: the next runs only on work left pending
        for stage in stages:
            code = self.guarded(stage.name, partial(self._stage, stage, after_idle=waiting))
            if code is None:
                continue
            self.summary["stages"][stage.name] = code
            waiting = code == exitcodes.NOTHING_TO_DO
            if waiting:
                idle.append(stage.name)
            elif code != exitcodes.OK:
                self.fail(f"{stage.name} exited {code}; see {self.logs / (stage.name + '.log')}")
                return exitcodes.FAILURE
        caught_up = ", ".join(self.summary["pending"])
        if not idle or (stages and self.summary["stages"].get(stages[-1].name) == exitcodes.OK):
            ran = ("harvested, trained and deployed" if not idle else
                   f"{idle[0]}: nothing new; ran {caught_up} on work an earlier night left pending")
            if stages[-1].name != "deploy":
                self.summary.update(result="done", reason=ran)
                return exitcodes.OK
            improved, measured, self.summary["gates"] = what_was_taught(self.config.settings.paths)
            self.summary.update(result="improved" if improved else "deployed_no_gain", reason=f"{ran}; {measured}")
        else:
            self.summary.update(result="nothing_to_do", reason=f"{idle[0]}: nothing to do")
        return exitcodes.OK

    def _stage(self, stage: Stage, after_idle: bool) -> int | None:
        """The stage's exit code; None when an earlier stage found nothing new and this one has nothing pending."""
        if after_idle:
            why = self._pending_work(stage)
            if why is None:
                log.info("%s skipped: nothing new came in and no earlier night left it work", stage.name)
                return None
            self.summary["pending"][stage.name] = why
            log.info("%s runs on work an earlier night left pending: %s", stage.name, why)
        code = stage.run(self.config)
        if stage.name == "train" and code == exitcodes.OK:
            alert_training_done(self.config.settings)
        return code

    def _pending_work(self, stage: Stage) -> str | None:
        if stage.pending is None:
            return None
        try:
            return stage.pending(self.config)
        except (CouncilError, OSError) as exc:  # the stage itself reports the broken state with its exit code
            log.warning("cannot tell whether %s has pending work (%s); running it so it reports the problem",
                        stage.name, exc)
            return f"unknown ({type(exc).__name__}: {exc})"

    def _cleanup(self) -> int:
        self.summary["cleanup"] = cleanup(self.config)
        return exitcodes.OK

    def _update_metrics(self) -> int:
        self.summary["metrics"] = update_loop_metrics(self.config.settings.paths, self.summary["stages"],
                                                      self.started)
        return exitcodes.OK


def main(config: NightlyConfig, stages: Sequence[Stage] = STAGES) -> int:
    """Run the loop once under the lock; writes logs/nightly_summary.json and sends one summary alert."""
    night = Night(config)
    try:
        with nightly_lock(config.settings.home) as held:
            if not held:
                log.error("another `council nightly` is running (lock %s); not starting a second one",
                          config.settings.home / "nightly.lock")
                return BUSY
            code = night.run(stages)
    except OSError as exc:  # the lock file could not be opened: the state directory is missing or read-only
        code = night.crashed("lock", exc, logged_in="the command's stderr")
    return night.finish(code)


def cli(argv: list[str], settings: Settings) -> int:
    """``council nightly [--option value ...]``; options mirror NightlyConfig's fields."""
    parser = argparse.ArgumentParser(prog="council nightly", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, NightlyConfig)
    try:
        config = NightlyConfig(settings=settings, **vars(parser.parse_args(argv)))
    except ValueError as exc:
        sys.stderr.write(f"council nightly: {exc}\n")
        return exitcodes.USAGE
    code = main(config)
    summary = read_json(settings.paths.logs / SUMMARY_FILE)
    if code == BUSY:
        sys.stderr.write("council nightly: another nightly run is in progress; refusing to start a second one\n")
    else:
        sys.stdout.write(f"nightly: {summary.get('result')} ({summary.get('reason')}); stages {summary.get('stages')}; "
                         f"{summary.get('seconds_total')} s\n")
    return code
