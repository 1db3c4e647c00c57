"""`council demo`: the bundled questions, DemoConfig validation, the report, and one real end-to-end night."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from council import exitcodes
from deploy.demo import DemoConfig, cli, main
from deploy.demo_server import Question, bundled_questions_path, format_report, load_questions


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
             ({"learning_rate": 0.0}, "learning_rate"), ({"port": 70000}, "port"),
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


def test_report_shows_each_question_before_and_after():
    reply = {"text": "Brindlewick Labs makes it.", "confidence": 0.91, "right": True, "adapter": "v1"}
    wrong = {"text": "The Zorblax Corporation.", "confidence": 0.52, "right": False, "corrected": True}
    reworded = {"text": "The Zorblax Corporation.", "confidence": 0.61, "right": False, "adapter": "v1"}
    summary = {"rows": [{"question": "Which company makes the Zorblax 3000?", "before": wrong, "after": reply,
                         "reworded": reworded}],
               "totals": {"corrected": 1, "before_right": 0, "after_right": 1, "after_accuracy": 1.0,
                          "reworded": 1, "reworded_right": 0, "reworded_by_adapter": 1},
               "target": 0.8, "canary": {"passed": 7, "total": 7, "failed": [], "version": "v1",
                                         "adapter_answered": 2,
                                         "unscoped": {"passed": 6, "total": 7, "failed": ["week-days"]}},
               "night": {"result": "improved", "reason": "harvested, trained and deployed",
                         "deploy": {"decision": "deployed"}},
               "serving_adapter": "v1", "seconds": {"before": 3.0, "total": 60.0}, "passed": True,
               "verdict": "the night fixed the corrected questions"}
    text = "\n".join(format_report(summary))
    assert "WRONG 0.52" in text and "right 0.91" in text and "WRONG 0.61" in text
    assert "reworded, asked only after the night (never corrected): 0/1 right, 1 of them answered by the new" in text
    assert "5 of the 7 canary questions are outside the adapter's scope" in text
    assert "(no scope): 6/7 would pass — week-days would flip" in text
    assert "after 1/1 (100%; target 80%: met)" in text
    assert "7/7 passed, 0 regression(s)" in text and "serves v1" in text and "PASS" in text


def totals_reworded(summary: dict) -> tuple[int, int]:
    return summary["totals"]["reworded"], summary["totals"]["reworded_by_adapter"]


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_demo_end_to_end_serves_the_new_adapter(make_settings, base_model_dir, tmp_path):
    # 3 questions and a light training run keep this to a few minutes; the full demo's recipe is in DemoConfig.
    home = tmp_path / "demo"
    config = DemoConfig(settings=make_settings(), demo_home=str(home), keep_home=True, questions=3,
                        model_source=str(base_model_dir), epochs=2, learning_rate=1e-4, window_seconds=2.0)
    lines: list[str] = []
    code = main(config, out=lines.append)
    assert code in (exitcodes.OK, exitcodes.FAILURE)
    text = "\n".join(lines)
    assert "question" in lines[0] and "before" in lines[0] and "after" in lines[0]
    for question in config.question_list:
        assert question.question in text
    summary = json.loads((home / "logs" / "demo_summary.json").read_text())
    assert summary["night"]["stages"] == {"harvest": 0, "train": 0, "deploy": 0}, summary["night"]
    assert summary["adapter_confirmed"] and summary["serving_adapter"] == summary["deployed"]
    assert any(row["after"]["adapter"] == summary["deployed"] for row in summary["rows"])
    assert all(row["before"]["adapter"] is None for row in summary["rows"])
    # rewordings of trained questions are within the adapter's scope; the canary's questions are not
    assert totals_reworded(summary) == (3, 3)
    assert summary["canary"]["adapter_answered"] == 0
    assert summary["canary"]["unscoped"]["total"] == summary["canary"]["total"]
    totals = summary["totals"]
    assert totals["corrected"] == 3 and totals["after_right"] >= totals["before_right"]
    assert summary["canary"]["passed"] == summary["canary"]["total"]
    assert not port_open(summary["server_url"]), "the demo server must be stopped when the demo ends"
