"""The demo's result: rows per question (before, memory, night), totals against the targets, and the report.

Used by ``cron.demo`` (``council demo``): ``summarize`` builds ``logs/demo_summary.json``, ``format_report``
prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cron.demo_server import Question


def _share(replies: list[dict[str, Any]]) -> float:
    return sum(r["right"] for r in replies) / len(replies) if replies else 0.0


def summarize(questions: list[Question], targets: dict[str, float], home: Path, source: str, url: str,
              night: dict[str, Any], serving: str | None, seconds: dict[str, float], before: list[dict],
              memory: tuple[list, list], after: tuple[list, list]) -> dict[str, Any]:
    """Rows, totals against ``targets`` (shares: memory, memory_reworded, after, reworded), and the verdict."""
    deploy, nightly = night["deploy"], night["nightly"]
    version = deploy.get("version") if deploy.get("decision") == "deployed" else None
    rewordable = [q for q in questions if q.reworded]
    memory_reworded = {q.id: r for q, r in zip(rewordable, memory[1], strict=True)}
    after_reworded = {q.id: r for q, r in zip(rewordable, after[1], strict=True)}
    rows = [{"id": q.id, "question": q.question, "reworded_question": q.reworded, "corrected": bool(b.get("corrected")),
             "before": b, "memory": m, "after": a, "memory_reworded": memory_reworded.get(q.id),
             "reworded": after_reworded.get(q.id)}
            for q, b, m, a in zip(questions, before, memory[0], after[0], strict=True)]
    corrected = [r for r in rows if r["corrected"]]
    reworded = [r for r in corrected if r["reworded"] is not None]
    totals = {"questions": len(rows), "corrected": len(corrected),
              "before_right": sum(r["before"]["right"] for r in corrected),
              "memory_right": sum(r["memory"]["right"] for r in corrected),
              "after_right": sum(r["after"]["right"] for r in corrected),
              "reworded": len(reworded),
              "memory_reworded_right": sum(r["memory_reworded"]["right"] for r in reworded),
              "reworded_right": sum(r["reworded"]["right"] for r in reworded),
              "reworded_by_adapter": sum(1 for r in reworded if version and r["reworded"].get("adapter") == version)}
    shares = {"memory": _share([r["memory"] for r in corrected]),
              "memory_reworded": _share([r["memory_reworded"] for r in reworded]),
              "after": _share([r["after"] for r in corrected]), "reworded": _share([r["reworded"] for r in reworded])}
    totals["after_accuracy"] = shares["after"]
    canary = deploy.get("canary")
    confirmed = version is not None and serving == version
    problems = []
    if not corrected:
        problems.append("the base model already knew every answer, so nothing was corrected")
    if not confirmed:
        why = str(deploy.get("reason") or nightly.get("reason"))
        problems.append(f"the server serves {serving or 'the base model'}, not a newly deployed adapter "
                        f"({deploy.get('decision') or 'no deploy'}: {why[:240]})")
    for key, what in (("memory", "corrected questions right from memory"),
                      ("memory_reworded", "rewordings right from memory"),
                      ("after", "corrected questions right after the night"),
                      ("reworded", "rewordings right after the night (memory off)")):
        if corrected and shares[key] < targets[key]:
            problems.append(f"{shares[key]:.0%} of the {what}, below the {targets[key]:.0%} target")
    if not canary or canary["passed"] < canary["total"]:
        problems.append("the canary did not pass in full" if canary else "no candidate reached the canary")
    probes = deploy.get("probes") or {}
    return {"home": str(home), "base_model": source, "server_url": url, "rows": rows, "totals": totals,
            "shares": shares, "targets": targets, "target": targets["after"],
            "canary": canary and {"passed": canary["passed"], "total": canary["total"], "version": deploy.get("version"),
                                  "failed": [c["id"] for c in canary["cases"] if not c["passed"]],
                                  "adapter_answered": sum(1 for c in canary["cases"] if c.get("adapter_applied", True)),
                                  "unscoped": deploy.get("canary_unscoped")},
            "probes": {k: probes[k] for k in ("skipped", "improved", "min_pass_rate") if k in probes} |
                      {side: {k: probes[side][k] for k in ("right", "total")} for side in ("candidate", "baseline")
                       if side in probes},
            "night": {"result": nightly.get("result"), "reason": nightly.get("reason"),
                      "stages": nightly.get("stages"), "harvest": night["harvest"],
                      "deploy": {k: deploy.get(k) for k in ("decision", "reason", "version", "server", "monitor", "eval")}},
            "deployed": version, "serving_adapter": serving, "adapter_confirmed": confirmed,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "passed": not problems, "verdict": "; ".join(problems) or "every target met"}


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(reply: dict[str, Any] | None) -> str:
    if reply is None:
        return "-"
    confidence = reply.get("confidence")
    return f"{'right' if reply['right'] else 'WRONG'} {confidence:.2f}" if confidence is not None else "?"


def format_report(summary: dict[str, Any]) -> list[str]:
    """Per question and per rewording: before, memory (right after the correction), night (memory off);
    then the totals against the targets, the canary, the probes, the night and the timings, as text lines."""
    head = f"{'#':>2}  {'question / rewording':<58} {'before':<11} {'memory':<11} {'night':<11} night answer"
    lines = [head, "-" * 120]
    for number, row in enumerate(summary["rows"], start=1):
        lines.append(f"{number:>2}  {_clip(row['question'], 58):<58} {_cell(row['before']):<11} "
                     f"{_cell(row.get('memory')):<11} {_cell(row['after']):<11} "
                     f"{_clip((row['after'] or {}).get('text', ''), 24)}")
        if row.get("reworded") is not None:
            lines.append(f"{'':>2}   ~ {_clip(row.get('reworded_question') or '', 55):<55} {'':<11} "
                         f"{_cell(row.get('memory_reworded')):<11} {_cell(row['reworded']):<11} "
                         f"{_clip(row['reworded'].get('text', ''), 24)}")
    totals, shares, targets = summary["totals"], summary.get("shares", {}), summary.get("targets", {})
    lines.append("-" * 120)

    def verdict(key: str) -> str:
        if key not in targets:
            return ""
        return f" (target {targets[key]:.0%}: {'met' if shares.get(key, 0) >= targets[key] else 'MISSED'})"

    n, r = totals["corrected"], totals.get("reworded", 0)
    lines.append(f"corrected questions right: before {totals['before_right']}/{n}, from memory "
                 f"{totals.get('memory_right', 0)}/{n}{verdict('memory')}, after the night (memory off) "
                 f"{totals['after_right']}/{n}{verdict('after')}")
    if r:
        lines.append(f"their rewordings (never corrected): from memory {totals.get('memory_reworded_right', 0)}/{r}"
                     f"{verdict('memory_reworded')}, after the night {totals['reworded_right']}/{r}"
                     f"{verdict('reworded')}; {totals['reworded_by_adapter']} answered by the new adapter")
    canary, night, probes = summary.get("canary"), summary["night"], summary.get("probes") or {}
    if canary:
        failed = f" — failing: {', '.join(canary['failed'])}" if canary["failed"] else ""
        lines.append(f"canary on candidate {canary['version']} as served: {canary['passed']}/{canary['total']} "
                     f"passed{failed}; deploy: {night['deploy']['decision']}")
        unscoped = canary.get("unscoped")
        if unscoped:
            lines.append(f"  unscoped (the adapter answering every canary question): {unscoped['passed']}/"
                         f"{unscoped['total']}" + (f" — {', '.join(unscoped['failed'])} would flip"
                                                   if unscoped["failed"] else ""))
    else:
        lines.append("canary: not run (no adapter reached the deploy checks)")
    if "candidate" in probes:
        lines.append(f"in-scope probes (held-out paraphrases): candidate {probes['candidate']['right']}/"
                     f"{probes['candidate']['total']}, before the night {probes['baseline']['right']}/"
                     f"{probes['baseline']['total']}")
    elif probes.get("skipped"):
        lines.append(f"in-scope probes: skipped ({_clip(probes['skipped'], 90)})")
    lines.append(f"night: {night['result']} ({_clip(str(night['reason']), 90)}); the server now serves "
                 f"{summary['serving_adapter'] or 'the base model'}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))
    lines.append(f"result: {'PASS' if summary['passed'] else 'FAIL'} — {summary['verdict']}")
    return lines
