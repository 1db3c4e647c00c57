"""The retention matrices, per-night table and targets of ``bench/nights_bench.py``'s results.

A matrix cell (night taught j, night asked k) is the share of night j's kept facts (not erased) answered right
after night k; an updated fact is judged by its newest value. The targets are issue 28's, checked on the last
night (and on every night for the canary, the locality set and erasure).
"""

from __future__ import annotations

from typing import Any

KINDS = (("off_same", "weights alone, same words"), ("off_reworded", "weights alone, reworded"),
         ("on_same", "memory on, same words"), ("on_reworded", "memory on, reworded"))


def _share(cell: dict[Any, list[int]], indexes: list[int], column: int = 0) -> float | None:
    values = [cell[str(i)][column] if str(i) in cell else cell[i][column] for i in indexes
              if str(i) in cell or i in cell]
    return sum(values) / len(values) if values else None


def matrix(results: dict[str, Any], kind: str) -> list[list[float | None]]:
    """rows: night taught (1..K); columns: night asked (1..K); None where nothing was asked."""
    facts, nights = results["facts"], results["nights"]
    out = []
    for taught in range(1, len(nights) + 1):
        ids = [f["index"] for f in facts if f["night"] == taught and not f["erased"]]
        out.append([_share(row["asked"][kind], ids) if row["night"] >= taught else None for row in nights])
    return out


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:4.0f}"


def _target(name: str, value: float | None, goal: float, at_most: bool = False) -> dict[str, Any]:
    met = value is not None and (value <= goal if at_most else value >= goal)
    return {"name": name, "value": value, "goal": goal, "at_most": at_most, "met": met}


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 28's targets against the results; each ``{name, value, goal, at_most, met}``."""
    nights, facts = results["nights"], results["facts"]
    if not nights:
        return [_target("nights run", 0, 1)]
    last = nights[-1]["asked"]
    kept = [f["index"] for f in facts if not f["erased"] and f["night"] <= len(nights)]
    first = [f["index"] for f in facts if f["night"] == 1 and not f["erased"]]
    updated = [f["index"] for f in facts if f["updated_night"] and not f["erased"]]
    out = [_target("night 1's facts, weights alone, same words", _share(last["off_same"], first), 0.95),
           _target("night 1's facts, weights alone, reworded", _share(last["off_reworded"], first), 0.80),
           _target("all facts, weights alone, same words", _share(last["off_same"], kept), 0.95),
           _target("all facts, weights alone, reworded", _share(last["off_reworded"], kept), 0.80),
           _target("all facts, memory on, same words", _share(last["on_same"], kept), 0.98),
           _target("all facts, memory on, reworded", _share(last["on_reworded"], kept), 0.90)]
    if updated:
        for kind in ("on_same", "off_same"):
            out.append(_target(f"updated facts' new value ({kind})", _share(last[kind], updated), 0.95))
            out.append(_target(f"updated facts' old value ({kind})", _share(last[kind], updated, 1), 0.05, True))
    canary = min(n["canary"][0] / n["canary"][1] for n in nights)
    out.append(_target("canary as served, worst night", canary, 1.0))
    if results.get("locality_kept"):
        kept_right = min(n["locality"]["right"] / n["locality"]["total"] for n in nights)
        out.append(_target("locality set still right, worst night", kept_right, 0.95))
    erasure = results.get("erasure") or {}
    if erasure:
        at_once = sum(erasure["right_after"].values())
        later = sum(sum(n.get("erased_right", {}).values()) for n in nights if n["night"] >= erasure["night"])
        out.append(_target("erased facts answered at the moment of erasure", at_once, 0, True))
        out.append(_target("erased facts answered after later nights", later, 0, True))
    first_train, last_train = (nights[0]["seconds"].get("train"), nights[-1]["seconds"].get("train"))
    if len(nights) > 1:  # a night that trained nothing (failed, or nothing new) has no time to compare: missed
        ratio = last_train / first_train if first_train and last_train and nights[-1]["trained"] else None
        out.append(_target("last night's train time / night 1's", ratio, 1.5, True))
    return out


def report(results: dict[str, Any]) -> list[str]:
    """The lines the bench prints."""
    lines = []
    for kind, title in KINDS:
        lines += ["", f"retention, {title} (% right; rows: night taught, columns: after night)",
                  "taught " + "".join(f"{row['night']:>5}" for row in results["nights"])]
        for taught, cells in enumerate(matrix(results, kind), start=1):
            lines.append(f"{taught:>6} " + "".join(f" {_pct(c)}" for c in cells))
    lines += ["", "night corrected result        deployed            lines(train/replay/rehearsal) steps "
                  "harvest  train deploy  adapterKB canary locality erased"]
    for n in results["nights"]:
        ex, s = n.get("examples") or {}, n.get("seconds") or {}
        loc = n["locality"]
        lines.append(
            f"{n['night']:>5} {n['corrected']:>9} {str(n['result'])[:13]:<13} {str(n['deployed'])[:19]:<19} "
            f"{ex.get('train', '-')}/{ex.get('replayed', '-')}/{ex.get('rehearsal', '-'):<14} "
            f"{str(n.get('steps', '-')):>5} {s.get('harvest', 0):7.0f} {s.get('train', 0):6.0f} "
            f"{s.get('deploy', 0):6.0f} {n['adapter_bytes'] // 1024:>10} {n['canary'][0]}/{n['canary'][1]:<4} "
            f"{loc['right']}/{loc['total']:<6} {sum((n.get('erased_right') or {}).values())}")
    erasure = results.get("erasure") or {}
    if erasure:
        lines.append(f"erased {erasure['user']} ({erasure['facts']} facts) before night {erasure['night']}: "
                     f"answered at once by memory on {erasure['right_after']['on']}, weights {erasure['right_after']['off']}")
    lines += ["", "targets:"]
    for t in results.get("targets", []):
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"  {'met   ' if t['met'] else 'MISSED'} {t['name']}: {value} "
                     f"({'<=' if t['at_most'] else '>='} {t['goal']})")
    return lines
