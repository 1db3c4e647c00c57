"""What one ``council nightly`` leaves behind: the summary file, the loop figures, and the alerts it sends.

* ``logs/nightly_summary.json``: ``{started_at, finished_at, stages: {stage: exit code}, seconds, result,
  reason, pending, errors, cleanup, metrics, exit_code, ...}``. ``errors`` lists each stage that raised
  instead of returning an exit code (``crash_record``: stage, error type and message, the line that raised,
  and the stage log holding the traceback, which is logged once, there).
* ``logs/loop_metrics.json``: the loop's counters and gauges, which the server exposes on ``/metrics``
  (``update_loop_metrics``).
* Alerts: ``training_done`` after a trained adapter, then one summary alert per night: ``nightly_summary``
  when the night exits 0, ``pipeline_error`` otherwise (``write_and_alert``).

The webhook URL is a secret: error messages are redacted before they reach the summary or an alert.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from council.core import exitcodes
from council.core.atomic import atomic_write_json
from council.core.config import Settings
from council.core.paths import StatePaths
from deploy.alerts import PIPELINE_ERROR, TRAINING_DONE, Alerter, redact

log = logging.getLogger(__name__)

SUMMARY_FILE = "nightly_summary.json"
METRICS_FILE = "loop_metrics.json"


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {}
    return data if isinstance(data, dict) else {}


def newest_metadata(loras: Path) -> dict[str, Any]:
    """``metadata.json`` of the newest adapter version in ``loras`` ({} when there is none)."""
    if not loras.is_dir():
        return {}
    folders = sorted(p for p in loras.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "current")
    return read_json(folders[-1] / "metadata.json") if folders else {}


def crash_record(stage: str, exc: BaseException, logged_in: str, secret_url: str) -> dict[str, Any]:
    """What the summary keeps of an exception a stage raised: what, where, and the log holding its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return {"stage": stage, "type": type(exc).__name__, "message": redact(str(exc), secret_url),
            "where": where, "log": logged_in}


def alert_training_done(settings: Settings) -> None:
    meta = newest_metadata(settings.paths.loras)
    Alerter(settings.alerts).send(TRAINING_DONE, f"Trained adapter {meta.get('version')}", {
        "examples": (meta.get("examples") or {}).get("train"), "loss": (meta.get("loss") or {}).get("train"),
        "seconds": meta.get("duration_seconds")})


def what_was_taught(paths: StatePaths) -> tuple[bool, str, dict[str, Any]]:
    """Whether tonight's deploy measured an improvement, why (one line), and the gates' figures.

    A night "improved" only when the deployed adapter answered more of its in-scope probes (held-out
    paraphrases of the night's corrections) right than the adapter it replaced; a deploy with no probes to
    ask, or no gain on them, is reported as such. The figures (probes, validation loss or why either was
    skipped, and the earlier nights' probes as ``retention``) go into the nightly summary, so no gate is ever
    skipped silently."""
    deploy = read_json(paths.logs / "deploy_summary.json")
    probes, evaluation = deploy.get("probes") or {}, deploy.get("eval") or {}
    gates = {"probes": {k: v for k, v in probes.items() if k != "candidate" and k != "baseline"},
             "eval": evaluation}
    if deploy.get("retention"):  # earlier nights' probes (deploy/retention.py): "right/total" and what was lost
        gates["retention"] = {k: f"{v['right']}/{v['total']}" if k in ("candidate", "baseline") else v
                              for k, v in deploy["retention"].items()}
    if "candidate" in probes:
        now, before = probes["candidate"], probes["baseline"]
        gates["probes"].update(candidate=f"{now['right']}/{now['total']}", baseline=f"{before['right']}/{before['total']}")
        line = (f"in-scope probes (held-out paraphrases) {now['right']}/{now['total']} right, "
                f"{before['right']}/{before['total']} before")
        return bool(probes.get("improved")), line, gates
    return False, f"nothing measured: {probes.get('skipped') or 'the deploy ran no in-scope probes'}", gates


def update_loop_metrics(paths: StatePaths, stages: dict[str, int], started: float) -> dict[str, Any]:
    """Fold tonight's figures into ``logs/loop_metrics.json`` (counters accumulate, gauges overwrite)."""
    metrics = read_json(paths.logs / METRICS_FILE)
    harvest = read_json(paths.logs / "harvest_last.json")
    if "harvest" in stages and harvest:
        attempted = harvest.get("attempted") or harvest.get("rewritten") or 0
        kept = harvest.get("kept", 0)
        if attempted:
            metrics["agent0_rewrite_success_rate"] = round(kept / attempted, 4)
        if harvest.get("mean_quality") is not None:
            metrics["harvest_mean_quality"] = harvest["mean_quality"]
    if stages.get("train") == exitcodes.OK:
        meta = newest_metadata(paths.loras)
        metrics["training_completed_total"] = metrics.get("training_completed_total", 0) + 1
        metrics["training_duration_seconds"] = meta.get("duration_seconds", 0.0)
        losses = (meta.get("loss") or {}).get("train") or []
        if losses:
            metrics["training_loss"] = losses[-1]
    if "deploy" in stages:
        summary = read_json(paths.logs / "deploy_summary.json")
        decision = summary.get("decision")
        if decision == "deployed":
            metrics["deployment_success_total"] = metrics.get("deployment_success_total", 0) + 1
        if decision == "rolled_back":
            metrics["rollbacks_triggered_total"] = metrics.get("rollbacks_triggered_total", 0) + 1
        evaluation = summary.get("eval") or {}
        if evaluation.get("candidate_loss") and evaluation.get("baseline_loss"):
            metrics["quality_improvement_ratio"] = round(evaluation["baseline_loss"] / evaluation["candidate_loss"], 4)
    metrics["nightly_last_run_seconds"] = round(time.time() - started, 2)
    metrics["nightly_last_run_timestamp"] = time.time()
    atomic_write_json(paths.logs / METRICS_FILE, metrics)
    return metrics


def write_and_alert(settings: Settings, summary: dict[str, Any], code: int) -> int:
    """Write ``logs/nightly_summary.json`` and send the night's one summary alert; returns the final exit code.

    A summary that cannot be written (disk full, a read-only state directory) makes the night a failure,
    which the alert then reports."""
    path = settings.paths.logs / SUMMARY_FILE
    try:
        atomic_write_json(path, summary)
    except OSError as exc:
        log.exception("could not write the nightly summary %s", path)
        if code == exitcodes.OK:
            summary.update(result="failed", reason=f"could not write {path}: {type(exc).__name__}: {exc}")
        code = exitcodes.FAILURE
    fields: dict[str, Any] = {"stages": summary.get("stages"), "seconds": summary.get("seconds"),
                              "reason": summary.get("reason")}
    if summary.get("pending"):
        fields["pending"] = summary["pending"]
    for error in summary.get("errors") or []:
        fields[f"{error['stage']} error"] = f"{error['type']}: {error['message']} ({error['where']})"
    alerter = Alerter(settings.alerts)
    if code == exitcodes.OK:
        alerter.send("nightly_summary", f"Nightly loop: {summary.get('result')}", fields)
    else:
        alerter.send(PIPELINE_ERROR, "Nightly loop failed", fields)
    return code
