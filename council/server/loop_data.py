"""What the nightly loop left in the state directory, read for the ``/loop`` page and ``/v1/loop/*``.

The stages write these files (``deploy/registry.py``, ``training/artifacts.py``, ``cron/summary.py``,
``deploy/main.py``, ``deploy/rollback.py``, ``harvest/pipeline.py``); the server only reads them, straight
from disk, and never imports those packages (``tests/test_layers.py``). A missing, unreadable or malformed
file is "nothing yet" (``None`` or an empty list), never an error. Every function here reads files: call them
off the event loop (``asyncio.to_thread``).

    loras/registry.json                {current, previous, deployed, failed, reasons, updated_at}
    loras/current                      symlink to the live version (wins over registry.json)
    loras/<version>/metadata.json      {version, parent, created_at, loss {train, validation}, examples, learned,
                                        tainted {at, records} (learned from erased records), fresh_because ...}
    loras/<version>/loss.png           the training curve
    logs/nightly_summary.json          the last night: started_at, finished_at, stages, seconds, result, reason ...
    logs/harvest_last.json             the last harvest: found, kept, kept_corrections, held_out ...
    logs/deploy_summary.json           the last deploy: decision, reason, canary, probes, eval, monitor, swap
    logs/rollback_summary.json         the last rollback: decision, reason, version, target
    logs/nights.jsonl                  one line a night (cron/history.py): counts, seconds, probes, retention
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from council.core.errors import NotFoundError
from council.core.paths import StatePaths

CURRENT_LINK = "current"
HISTORY_FILE = "nights.jsonl"  # under logs/: cron/history.py appends a line a night
# what training names a version (e.g. 20261130-145412-265dc5): no slash, no leading dot, nothing else
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def valid_version(version: str) -> bool:
    """Whether ``version`` can name an adapter folder: no path separators, dots-only names or the link."""
    return (bool(VERSION_PATTERN.fullmatch(version)) and version != CURRENT_LINK
            and set(version) != {"."})


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [str(v) for v in _list(value)]


def registry(paths: StatePaths) -> dict[str, Any]:
    """``registry.json`` with ``current`` taken from the ``loras/current`` link, which is what is served."""
    data = read_json(paths.loras / "registry.json") or {}
    reasons = _dict(data.get("reasons"))
    state = {"current": data.get("current"), "previous": data.get("previous"),
             "deployed": _strings(data.get("deployed")), "failed": _strings(data.get("failed")),
             "reasons": {str(k): str(v) for k, v in reasons.items()}, "updated_at": data.get("updated_at")}
    link = paths.current_adapter
    try:
        state["current"] = Path(os.readlink(link)).name if link.is_symlink() else None
    except OSError:
        pass  # the link changed under us: keep what registry.json says
    return state


def state_of(version: str, reg: dict[str, Any]) -> str:
    """The version's deploy state, in ``council adapters``' words: current, failed, previous, deployed or new."""
    if version == reg["current"]:
        return "current"
    if version in reg["failed"]:
        return "failed"
    if version == reg["previous"]:
        return "previous"
    return "deployed" if version in reg["deployed"] else "new"


def _losses(meta: dict[str, Any], split: str) -> list[float]:
    return [float(v) for v in _list(_dict(meta.get("loss")).get(split)) if isinstance(v, int | float)]


def _learned(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"question": str(i.get("question", "")), "answer": str(i.get("answer", "")),
             "record_id": i.get("record_id")} for i in _list(meta.get("learned")) if isinstance(i, dict)]


def _tainted(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The version's taint mark: when it was first found to have learned from erased records, and how many."""
    mark = _dict(meta.get("tainted"))
    return {"at": mark.get("at"), "records": mark.get("records"), "inherited": bool(mark.get("inherited"))} \
        if mark else None


def describe(folder: Path, reg: dict[str, Any]) -> dict[str, Any]:
    """One adapter version as the loop page shows it."""
    version = folder.name
    meta = read_json(folder / "metadata.json")
    train, validation = _losses(meta or {}, "train"), _losses(meta or {}, "validation")
    examples = (meta or {}).get("examples")
    state = state_of(version, reg)
    return {
        "version": version,
        "state": state,
        "live": state == "current",
        "reason": reg["reasons"].get(version),
        "parent": (meta or {}).get("parent"),
        "created_at": (meta or {}).get("created_at"),
        "base_model_id": (meta or {}).get("base_model_id"),
        "backend": (meta or {}).get("backend"),
        "examples": examples if isinstance(examples, dict) else None,
        "loss": {"train": train[-1] if train else None, "validation": validation[-1] if validation else None,
                 "train_curve": train, "validation_curve": validation},
        "epochs_run": (meta or {}).get("epochs_run"),
        "duration_seconds": (meta or {}).get("duration_seconds"),
        "learned": _learned(meta or {}),
        "augmented": (meta or {}).get("augmented"),
        "loss_png": (folder / "loss.png").is_file(),
        "tainted": _tainted(meta or {}),
        "fresh_because": (meta or {}).get("fresh_because"),
        "replaced_by": None,  # a tainted version: the first clean version deployed after (``adapters``)
        "problem": None if meta is not None else "no readable metadata.json",
    }


def _folders(paths: StatePaths) -> list[Path]:
    try:
        entries = list(paths.loras.iterdir())
    except OSError:
        return []
    return [e for e in entries if valid_version(e.name) and not e.is_symlink() and e.is_dir()]


def adapters(paths: StatePaths) -> dict[str, Any]:
    """Every adapter version, newest first (by creation time, then name), with the registry around them."""
    reg = registry(paths)
    rows = [describe(folder, reg) for folder in _folders(paths)]
    rows.sort(key=lambda r: (str(r["created_at"] or ""), r["version"]), reverse=True)
    clean = [r for r in reversed(rows) if not r["tainted"] and r["state"] in ("current", "previous", "deployed")]
    for row in rows:
        if row["tainted"]:
            at = str(row["tainted"]["at"] or "")
            row["replaced_by"] = next((r["version"] for r in clean if str(r["created_at"] or "") > at), None)
    return {"object": "list", "data": rows, "current": reg["current"], "previous": reg["previous"],
            "updated_at": reg["updated_at"]}


def adapter(paths: StatePaths, version: str) -> dict[str, Any] | None:
    """One version, or None when ``version`` is not a valid name or has no folder."""
    if not valid_version(version):
        return None
    folder = paths.loras / version
    if folder.is_symlink() or not folder.is_dir():
        return None
    return describe(folder, registry(paths))


def loss_png(paths: StatePaths, version: str) -> bytes:
    """The version's ``loss.png``; NotFoundError for a name that is not a version, an unknown one, or no plot."""
    folder = paths.loras / version
    if not valid_version(version) or folder.is_symlink() or not folder.is_dir():
        raise NotFoundError(f"no adapter version {version!r}; list them with GET /v1/loop/adapters",
                            code="adapter_not_found", param="version")
    try:
        return (folder / "loss.png").read_bytes()
    except OSError as exc:
        raise NotFoundError(f"adapter version {version!r} has no loss.png", code="loss_plot_not_found",
                            param="version") from exc


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _within(stamp: Any, night: dict[str, Any] | None) -> bool:
    """Whether ``stamp`` falls inside the night (started_at to finished_at, which is written to the second)."""
    when, start, end = _when(stamp), _when((night or {}).get("started_at")), _when((night or {}).get("finished_at"))
    if when is None or start is None:
        return False
    try:
        return start <= when and (end is None or when < end + timedelta(seconds=1))
    except TypeError:  # one naive, one aware
        return False


NIGHT_FIELDS = ("started_at", "finished_at", "result", "reason", "stages", "seconds", "seconds_total",
                "errors", "pending", "gates", "exit_code", "preflight")
HARVEST_FIELDS = ("started_at", "finished_at", "since", "until", "found", "selected", "collapsed", "kept",
                  "kept_corrections", "kept_original", "rejected_low_quality", "dropped_disagreeing",
                  "left_for_stronger_council", "held_out", "paraphrases", "statements", "reverse", "mean_quality",
                  "rewrite_success_rate", "models", "files", "failure", "errors", "exit_code", "seconds")
DEPLOY_FIELDS = ("started_at", "finished_at", "version", "previous", "decision", "reason", "eval", "swap",
                 "canary_unscoped", "exit_code")


def _pick(data: dict[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    return None if data is None else {name: data.get(name) for name in names if name in data}


def _canary(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    cases = [c for c in _list(data.get("cases")) if isinstance(c, dict)]
    return {"passed": data.get("passed"), "total": data.get("total"), "pass_rate": data.get("pass_rate"),
            "failed": [c.get("id") for c in cases if c.get("passed") is False],
            "cases": [{k: c.get(k) for k in ("id", "passed", "output", "failed_checks", "adapter_applied")}
                      for c in cases]}


def _probes(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    out = {k: v for k, v in data.items() if k not in ("baseline", "candidate")}
    for side in ("baseline", "candidate"):
        if isinstance(data.get(side), dict):
            figures = data[side]
            out[side] = {k: figures.get(k) for k in ("right", "total", "rate", "version")}
            out[side]["cases"] = [{k: c.get(k) for k in ("question", "expected", "answer", "right", "adapter")}
                                  for c in _list(figures.get("cases")) if isinstance(c, dict)]
    return out


def _monitor(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    return {k: data.get(k) for k in ("decision", "reason", "requests", "success_rate", "p95_latency_ms",
                                     "probes_sent", "probe_failures", "baseline") if k in data}


def deploy(paths: StatePaths, night: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The last deploy: decision and why, the canary, the in-scope probes, the validation loss, the window."""
    data = read_json(paths.logs / "deploy_summary.json")
    out = _pick(data, DEPLOY_FIELDS)
    if data is None or out is None:
        return None
    out.update(canary=_canary(data.get("canary")), probes=_probes(data.get("probes")),
               monitor=_monitor(data.get("monitor")), in_night=_within(data.get("started_at"), night))
    return out


def night(paths: StatePaths) -> dict[str, Any]:
    """The last night and what it did: the summary, its harvest, what the adapter trained in it learned, its
    deploy and any rollback. Each part says whether it happened during that night (``in_night``), since a
    stage may also have been run by hand since."""
    summary = read_json(paths.logs / "nightly_summary.json")
    harvest = _pick(read_json(paths.logs / "harvest_last.json"), HARVEST_FIELDS)
    if harvest is not None:
        harvest["in_night"] = _within(harvest.get("finished_at"), summary)
    rollback = read_json(paths.logs / "rollback_summary.json")
    if rollback is not None:
        rollback = {k: rollback.get(k) for k in ("started_at", "finished_at", "decision", "reason", "version",
                                                  "target", "requested_to", "exit_code") if k in rollback}
        rollback["in_night"] = _within(rollback.get("started_at"), summary)
    listing = adapters(paths)["data"]
    trained = next((a for a in listing if _within(a["created_at"], summary)), None)
    picked = _pick(summary, NIGHT_FIELDS)
    if picked is not None:
        picked.update({name: _dict(picked.get(name)) for name in ("stages", "seconds", "pending", "gates")},
                      errors=[e for e in _list(picked.get("errors")) if isinstance(e, dict)])
    return {"night": picked, "harvest": harvest, "trained": trained,
            "learned": trained["learned"] if trained else [], "deploy": deploy(paths, summary),
            "rollback": rollback}


def nights(paths: StatePaths, limit: int = 366) -> dict[str, Any]:
    """``{"data": [...]}``: the last ``limit`` lines of ``logs/nights.jsonl`` (``cron/history.py``), oldest
    first; a malformed line is skipped."""
    path = paths.logs / HISTORY_FILE
    try:
        raw = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {"data": []}
    data = []
    for text in raw:
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            data.append(item)
    return {"data": data[-limit:]}
