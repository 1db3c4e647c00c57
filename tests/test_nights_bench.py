"""``bench/nights_bench.py --quick`` as CI runs it: two real nights of three facts (real server processes, real harvest,
training and deploy on the embedded model), one fact corrected again to a new value, one user erased between
the nights. The learning targets are the benchmark's to report (its exit code says 1 when one is missed);
this test holds what must never fail: the run completes, measuring records nothing, an erased user's facts are
answered by neither memory nor the live adapter from the moment of erasure, and the canary holds."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_quick_nights_bench_runs_two_nights_with_an_update_and_an_erasure(tmp_path: Path, base_model_dir: Path):
    home, out = tmp_path / "home", tmp_path / "nights.json"
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "bench.nights_bench", "--quick", "--keep-home", str(home),
                           "--out", str(out), "--model-source", str(base_model_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    nights = results["nights"]
    assert [n["night"] for n in nights] == [1, 2] and len(results["facts"]) == 6
    assert "retention, weights alone, same words" in done.stdout and "targets:" in done.stdout
    assert nights[0]["trained"], nights[0]  # the first night trains a version (its gates decide if it goes live)
    erasure = results["erasure"]
    assert erasure == {**erasure, "user": "teacher-1-b", "facts": 1, "night": 2}
    assert erasure["right_after"] == {"on": 0, "off": 0}  # memory and the live adapter's scope, at once
    assert nights[1]["erased_right"] == {"on": 0, "off": 0}  # and after the next night
    if nights[0]["deployed"]:  # the live adapter learned the erased facts: the next one starts from the base model
        assert nights[1]["fresh_because"] == "parent tainted", nights[1]
    updated = [f for f in results["facts"] if f["updated_night"]]
    assert len(updated) == 1 and updated[0]["old_values"] and updated[0]["user"] == "teacher-1-a"
    for night in nights:
        assert night["canary"][0] == night["canary"][1], night["canary"]
    last = nights[1]["asked"]["on_same"]
    kept = [str(f["index"]) for f in results["facts"] if not f["erased"]]
    assert sorted(last) == sorted(kept)
    assert sum(last[i][0] for i in kept) >= len(kept) // 2  # memory on answers most taught facts
    history = [json.loads(line) for line in (home / "logs" / "nights.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[0]["corrections"] >= 1  # what /loop plots
    with sqlite3.connect(f"file:{home / 'memory' / 'records.sqlite3'}?mode=ro", uri=True) as db:
        users = {row[0] for row in db.execute("SELECT DISTINCT user FROM records")}
    assert "bench-probe" not in users and "teacher-1-b" not in users  # store: false; erased
    assert {"teacher-1-a", "teacher-2-a", "teacher-2-b"} <= users
    assert results["locality_kept"] >= 4 and nights[1]["locality"]["total"] == results["locality_kept"]
