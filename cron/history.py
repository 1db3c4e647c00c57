"""One line per night in ``logs/nights.jsonl``: what the loop did over time, for ``/loop``'s plots.

``council nightly`` appends a line when it finishes (``cron.nightly``), read by ``GET /v1/loop/nights``
(``council/server/loop_data.py`` ``nights``) and plotted on ``/loop``. Each line holds counts, versions and seconds only —
never a question, an answer, a user or a record id — so erasure has nothing to scrub here::

    {"started_at": "...", "finished_at": "...", "result": "improved", "exit_code": 0,
     "seconds": {"harvest": 91.9, "train": 210.4, "deploy": 61.0, "total": 370.2},
     "failures": 4,            # failures the night's harvest found (corrected, thumbs-down, unsure)
     "corrections": 4,         # of them, users' corrections kept for training
     "trained": "20261208-...", "train_lines": {"train": 36, "replayed": 0, "rehearsal": 32}, "steps": 72,
     "deployed": "20261208-..." | null,   # the version the night made live
     "probes": {"right": 4, "total": 4},  # tonight's held-out probes, as the deployed (or kept) adapter answers
     "retention": {"right": 9, "total": 10, "by_version": {"2026...": [5, 5], ...}} | null}
                                          # the earlier nights' probes the retention gate asked (one of each
                                          # night in turn, up to max_retention_probes), as the adapter live
                                          # after the night answers them

The night's adapter after it is the candidate when the deploy made it live, else the one that stayed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from council.core import exitcodes
from council.core.paths import StatePaths
from council.server.loop_data import HISTORY_FILE
from cron.summary import newest_metadata, read_json

log = logging.getLogger(__name__)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _score(result: Any) -> dict[str, Any] | None:
    """``{right, total}`` of a probe result, with ``by_version`` when its cases name the version they test."""
    if not isinstance(result, dict) or not isinstance(result.get("total"), int) or not isinstance(
            result.get("right", 0), int):
        return None
    by_version: dict[str, list[int]] = {}
    for case in result.get("cases") or []:
        if isinstance(case, dict) and case.get("version"):
            cell = by_version.setdefault(str(case["version"]), [0, 0])
            cell[0] += bool(case.get("right"))
            cell[1] += 1
    out: dict[str, Any] = {"right": int(result.get("right") or 0), "total": result["total"]}
    if by_version:
        out["by_version"] = by_version
    return out


def night_line(paths: StatePaths, summary: dict[str, Any]) -> dict[str, Any]:
    """The history line of the night ``summary`` describes (see the module docstring)."""
    stages = _dict(summary.get("stages"))
    harvest = read_json(paths.logs / "harvest_last.json") if "harvest" in stages else {}
    deploy = read_json(paths.logs / "deploy_summary.json") if "deploy" in stages else {}
    live_side = "candidate" if deploy.get("decision") == "deployed" else "baseline"
    meta: dict[str, Any] = {}
    if stages.get("train") == exitcodes.OK:
        meta = newest_metadata(paths.loras)
    seconds = {k: v for k, v in _dict(summary.get("seconds")).items() if isinstance(v, int | float)}
    if isinstance(summary.get("seconds_total"), int | float):
        seconds["total"] = summary["seconds_total"]
    return {
        "started_at": summary.get("started_at"), "finished_at": summary.get("finished_at"),
        "result": summary.get("result"), "exit_code": summary.get("exit_code"), "seconds": seconds,
        "failures": harvest.get("found"), "corrections": harvest.get("kept_corrections"),
        "trained": meta.get("version"), "train_lines": {k: v for k, v in _dict(meta.get("examples")).items()
                                                        if k in ("train", "replayed", "rehearsal")} or None,
        "steps": meta.get("optimizer_steps"),
        "deployed": deploy.get("version") if deploy.get("decision") == "deployed" else None,
        "probes": _score(_dict(deploy.get("probes")).get(live_side)),
        "retention": _score(_dict(deploy.get("retention")).get(live_side)),
    }


def append_night(paths: StatePaths, summary: dict[str, Any]) -> None:
    """Append the night's line to ``logs/nights.jsonl`` (one ``write`` of one line: a reader never sees half)."""
    line = json.dumps(night_line(paths, summary), sort_keys=True) + "\n"
    with open(paths.logs / HISTORY_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)
