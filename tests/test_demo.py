"""`council demo`: the bundled questions, DemoConfig validation, the report, and one real end-to-end night."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from council.core import exitcodes
from cron.demo import DemoConfig, cli, main
from cron.demo_report import format_report
from cron.demo_server import Question, bundled_questions_path, load_questions


def write_lines(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_bundled_questions_have_checks_their_corrections_pass():
    questions = load_questions(bundled_questions_path())
    # fewer than 10, so training's validation split (from 10 examples) holds none of them back
    assert 8 <= len(questions) <= 9
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question for q in questions}) == len(questions)
    for question in questions:
        assert question.accept and all(word.strip() for word in question.accept)
        assert question.is_right(question.correction), question.id
        assert not question.is_right(question.question), f"{question.id}: the question gives its own answer away"
        assert question.reworded and question.reworded != question.question
        assert not question.is_right(question.reworded), f"{question.id}: the rewording gives the answer away"


def test_checks_are_case_insensitive_and_need_the_fact():
    question = Question("city", "Where is it built?", "Tallinn, Estonia", ("Tallinn",))
    assert question.is_right("It is built in TALLINN.")
    assert not question.is_right("It is built in the city of Zorblax.")


def test_a_correction_that_fails_its_own_check_is_refused(tmp_path):
    bad = write_lines(tmp_path / "q.jsonl", {"id": "x", "question": "Q?", "correction": "Berlin", "accept": ["Paris"]})
    with pytest.raises(ValueError, match="correction contains none"):
        load_questions(bad)
    missing = write_lines(tmp_path / "m.jsonl", {"id": "x", "question": "Q?", "correction": "Berlin"})
    with pytest.raises(ValueError, match="'accept' must be"):
        load_questions(missing)
    bad_rewording = write_lines(tmp_path / "r.jsonl", {"id": "x", "question": "Q?", "correction": "Paris",
                                                        "accept": ["Paris"], "reworded": 3})
    with pytest.raises(ValueError, match="'reworded' must be a string"):
        load_questions(bad_rewording)


def test_config_limits_questions_and_validates(make_settings, tmp_path):
    settings = make_settings()
    assert len(DemoConfig(settings=settings, questions=3).question_list) == 3
    assert len(DemoConfig(settings=settings).question_list) == len(load_questions(bundled_questions_path()))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "memory").mkdir()
    cases = [({"questions": -1}, "questions"), ({"demo_home": str(busy)}, "not empty"),
             ({"target": 1.5}, "target"), ({"max_tokens": 64, "max_new_tokens": 32}, "max_new_tokens"),
             ({"memory_target": -0.1}, "memory_target"), ({"port": 70000}, "port"),
             ({"model_source": str(tmp_path / "nope")}, "not a folder"),
             ({"data_file": str(tmp_path / "none.jsonl")}, "cannot read")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            DemoConfig(settings=settings, **kwargs)
    assert DemoConfig(settings=settings, demo_home=str(tmp_path / "fresh")).demo_home


def test_cli_reports_bad_options_as_usage(make_settings, capsys):
    assert cli(["--target", "2"], make_settings()) == exitcodes.USAGE
    assert "target must be within 0..1" in capsys.readouterr().err
    assert cli(["--no-such-flag"], make_settings()) == exitcodes.USAGE


def test_report_shows_before_memory_and_night_for_questions_and_rewordings():
    wrong = {"text": "The Zorblax Corporation.", "confidence": 0.52, "right": False, "corrected": True}
    memory = {"text": "Brindlewick Labs.", "confidence": 0.77, "right": True}
    night = {"text": "Brindlewick Labs makes it.", "confidence": 0.91, "right": True, "adapter": "v1"}
    reworded = {"text": "The Zorblax Corporation.", "confidence": 0.61, "right": False, "adapter": "v1"}
    summary = {"rows": [{"question": "Which company makes the Zorblax 3000?", "before": wrong, "memory": memory,
                         "after": night, "reworded_question": "Who manufactures the Zorblax 3000?",
                         "memory_reworded": memory, "reworded": reworded}],
               "totals": {"corrected": 1, "before_right": 0, "memory_right": 1, "after_right": 1,
                          "after_accuracy": 1.0, "reworded": 1, "memory_reworded_right": 1, "reworded_right": 0,
                          "reworded_by_adapter": 1},
               "shares": {"memory": 1.0, "memory_reworded": 1.0, "after": 1.0, "reworded": 0.0},
               "targets": {"memory": 0.85, "memory_reworded": 0.75, "after": 1.0, "reworded": 0.85},
               "canary": {"passed": 7, "total": 7, "failed": [], "version": "v1", "adapter_answered": 2,
                          "unscoped": {"passed": 6, "total": 7, "failed": ["week-days"]}},
               "probes": {"candidate": {"right": 2, "total": 2}, "baseline": {"right": 0, "total": 2}},
               "night": {"result": "improved", "reason": "harvested, trained and deployed",
                         "deploy": {"decision": "deployed"}},
               "serving_adapter": "v1", "seconds": {"before": 3.0, "total": 60.0}, "passed": False,
               "verdict": "0% of the rewordings right after the night (memory off), below the 85% target"}
    lines = format_report(summary)
    text = "\n".join(lines)
    assert "before" in lines[0] and "memory" in lines[0] and "night" in lines[0]
    question, rewording = lines[2], lines[3]
    assert "WRONG 0.52" in question and "right 0.77" in question and "right 0.91" in question
    assert "Who manufactures" in rewording and "right 0.77" in rewording and "WRONG 0.61" in rewording
    assert "from memory 1/1 (target 85%: met), after the night (memory off) 1/1 (target 100%: met)" in text
    assert "after the night 0/1 (target 85%: MISSED); 1 answered by the new adapter" in text
    assert "unscoped (the adapter answering every canary question): 6/7 — week-days would flip" in text
    assert "in-scope probes (held-out paraphrases): candidate 2/2, before the night 0/2" in text
    assert "serves v1" in text and text.endswith("below the 85% target")


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_demo_end_to_end_memory_at_once_then_a_gated_night(make_settings, base_model_dir, tmp_path):
    # 3 questions keep this to a few minutes; the recipe is the nightly default a user gets.
    home = tmp_path / "demo"
    config = DemoConfig(settings=make_settings(), demo_home=str(home), keep_home=True, questions=3,
                        model_source=str(base_model_dir), window_seconds=2.0)
    lines: list[str] = []
    code = main(config, out=lines.append)
    text = "\n".join(lines)
    assert "before" in lines[0] and "memory" in lines[0] and "night" in lines[0]
    for question in config.question_list:
        assert question.question in text and question.reworded in text
    summary = json.loads((home / "logs" / "demo_summary.json").read_text())
    totals = summary["totals"]
    assert totals["corrected"] == 3 and totals["before_right"] == 0
    # a correction helps at once, through memory, before any training
    assert totals["memory_right"] >= 2, summary["rows"]
    assert all(row["before"]["adapter"] is None for row in summary["rows"])
    harvest = summary["night"]["harvest"]
    assert harvest["kept_corrections"] == 3 and harvest["kept"] == 3  # what users taught is always kept
    assert summary["night"]["stages"]["harvest"] == 0 and summary["night"]["stages"]["train"] == 0
    deploy = summary["night"]["deploy"]
    if deploy["decision"] == "deployed":
        assert summary["adapter_confirmed"] and summary["serving_adapter"] == summary["deployed"]
        assert summary["canary"]["passed"] == summary["canary"]["total"]
        assert summary["probes"]["candidate"]["right"] >= 0.8 * summary["probes"]["candidate"]["total"]
        assert totals["reworded_by_adapter"] >= 1
    else:  # a gate refused the candidate: it says which, and nothing was swapped in
        assert deploy["decision"] == "refused", deploy
        assert deploy["reason"].startswith(("in-scope probes", "canary", "validation loss")), deploy["reason"]
        assert summary["serving_adapter"] is None and summary["night"]["result"] == "failed"
        assert all(row["after"]["adapter"] is None for row in summary["rows"])
    assert (code == exitcodes.OK) == summary["passed"]
    assert not port_open(summary["server_url"]), "the demo server must be stopped when the demo ends"


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from Linux /proc")
def test_sigterm_stops_the_demo_and_the_server_it_started(base_model_dir, tmp_path):
    """Stopped by SIGTERM (kill, systemd, CI), `council demo` stops its `council serve` child, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1")
    demo = subprocess.Popen([sys.executable, "-m", "council.cli", "--home", str(tmp_path / "home"), "demo",
                             "--questions", "1", "--model-source", str(base_model_dir),
                             "--demo-home", str(tmp_path / "demo")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, server = time.monotonic() + 120, None
        while server is None and time.monotonic() < deadline and demo.poll() is None:
            server = next(iter(_children(demo.pid)), None)
            time.sleep(0.2)
        assert server is not None, "the demo never started its server"
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the demo's server outlived the demo"
        assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())
    finally:
        if demo.poll() is None:
            demo.kill()
