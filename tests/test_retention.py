"""The retention gate (``deploy/retention.py``): every deploy asks the earlier nights' held-out probes.

Collecting them reads real version folders, a real registry and a real memory database (the real migrations'
schema); the gate's judgement runs on ``AnswerBook``, a small real engine answering from one book per adapter;
the wiring runs the whole ``council deploy`` on real PEFT adapters of the embedded model.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from council.core.exitcodes import OK
from council.engine.base import Generation
from council.memory.sqlite import DB_NAME, MIGRATIONS, superseded_records
from deploy.config import DeployConfig
from deploy.main import main
from deploy.registry import Registry, read_adapter
from deploy.retention import earlier_probes, earlier_versions, retention_gate
from tests.test_deploy import (  # noqa: F401 - adapter_bank is a fixture
    DEAD_SERVER,
    adapter_bank,
    install,
    make_current,
    summary_of,
)

V1, V2, V3, V4 = ("20250101-010101-aaaaaa", "20250102-010101-bbbbbb", "20250103-010101-cccccc",
                  "20250104-010101-dddddd")
BATTERY, MAKER, COLOUR, PRICE = ("How long does the Zorblax 3000 battery last?", "Who makes the Zorblax 3000?",
                                 "What colour is the Zorblax 3000?", "How much does the Zorblax 3000 cost?")
TONIGHT = "Where is the Zorblax 3000 assembled?"


def probe(question: str, correction: str, record_id: str) -> dict[str, Any]:
    return {"instruction": question, "input": "", "reasoning": "", "output": f"{correction}.", "quality_score": 0.5,
            "record_id": record_id, "correction": correction, "held_out": True, "kind": "paraphrase",
            "source": "correction"}


def version(loras: Path, name: str, day: int, lines: list[dict[str, Any]]) -> Path:
    """A version folder: metadata.json (created that day) and validation.jsonl; no weights (not needed here)."""
    folder = loras / name
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": name, "created_at": f"2025-01-0{day}T01:00:00"}))
    (folder / "validation.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def memory_superseding(folder: Path, record_id: str) -> None:
    """A memory database with the real schema whose one correction ``record_id`` a newer one superseded."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(folder / DB_NAME)) as db:
        for _, script in MIGRATIONS:
            db.executescript(script)
        db.execute("INSERT INTO records (id, query, answer, confidence, success, model, created_us, messages, route,"
                   " latency_ms, context_ids, feedback, embedding, superseded_by) VALUES (?, ?, 'a', 0.5, 0, 'm', 0,"
                   " '[]', 'local', 1.0, '[]', ?, x'00', 'r9')", (record_id, PRICE, json.dumps({"correction": "$499"})))
        db.commit()


@pytest.fixture
def nights(make_settings) -> tuple[Any, Registry]:
    """Three nights before tonight's candidate V3 and one after it."""
    settings = make_settings()
    loras = settings.paths.ensure().loras
    plain = {"instruction": "What does Council do?", "input": "", "reasoning": "", "output": "It serves chat.",
             "quality_score": 0.9, "record_id": "plain-1"}  # no correction: not a probe
    version(loras, V1, 1, [probe(BATTERY, "41 hours", "r1#p0"), probe(MAKER, "Brindle Labs", "r2#p0"),
                           probe(PRICE, "$499", "r5#p1"), probe(TONIGHT, "Oslo", "r6#p0"), plain])
    version(loras, V2, 2, [probe("  who makes the ZORBLAX 3000? ", "Brindlewick Labs", "r3#p0"),
                           probe(COLOUR, "teal", "r4")])
    version(loras, V3, 3, [probe(TONIGHT, "Bergen", "r7#p0")])
    version(loras, V4, 4, [probe("Is the Zorblax 4000 out?", "yes", "r8#p0")])
    memory_superseding(settings.paths.memory, "r5")
    return settings, Registry(loras)


def test_earlier_probes_are_deduplicated_one_night_at_a_time_without_superseded_or_tonights(nights):
    settings, registry = nights
    candidate = read_adapter(registry.folder(V3))
    versions = earlier_versions(registry, candidate)
    assert [i.version for i in versions] == [V2, V1]  # V4 is newer than the candidate
    superseded = superseded_records(settings.paths.memory)
    assert superseded == {"r5"}
    probes = earlier_probes(versions, candidate, superseded, limit=64)
    assert [(p["instruction"].strip(), p["correction"], p["version"]) for p in probes] == [
        ("who makes the ZORBLAX 3000?", "Brindlewick Labs", V2),  # the newer night's wording of MAKER wins
        (BATTERY, "41 hours", V1),  # one of each night in turn: the oldest is checked within any limit
        (COLOUR, "teal", V2)]  # PRICE was superseded, TONIGHT is tonight's own probe, the plain line no probe
    assert [p["instruction"].strip() for p in earlier_probes(versions, candidate, superseded, limit=2)] == [
        "who makes the ZORBLAX 3000?", BATTERY]
    with_price = earlier_probes(versions, candidate, set(), limit=64)
    assert PRICE in [p["instruction"] for p in with_price]


class AnswerBook:
    """A small real engine: the live adapter (its folder's name; None = the base model) answers from its book."""

    def __init__(self, books: dict[str | None, dict[str, str]]) -> None:
        self.books, self.live, self.asked = books, None, []

    def use_adapter(self, folder: str | None) -> bool:
        changed = self.live != (Path(folder).name if folder else None)
        self.live = Path(folder).name if folder else None
        return changed

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> Generation:
        question = messages[-1]["content"]
        self.asked.append((self.live, question))
        return Generation(text=self.books.get(self.live, {}).get(question, "I am not sure."), finish_reason="stop",
                          adapter=self.live)


def books(candidate: dict[str, str]) -> dict[str | None, dict[str, str]]:
    knows = {"  who makes the ZORBLAX 3000? ": "Brindlewick Labs makes it.", COLOUR: "It is teal.",
             BATTERY: "It lasts 41 hours."}
    return {V2: knows, V3: {**knows, **candidate}}


def test_the_gate_refuses_a_candidate_that_forgot_an_earlier_fact_and_names_it(nights):
    settings, registry = nights
    candidate = read_adapter(registry.folder(V3))
    config = DeployConfig(settings)
    engine, summary = AnswerBook(books({BATTERY: "It lasts about a day."})), {}
    reason = retention_gate(config, engine, candidate, V2, registry, summary)
    assert reason is not None and reason.startswith("retention: forgot 1/3 earlier nights' facts")
    assert BATTERY in reason and "41 hours" in reason and V1 in reason
    retention = summary["retention"]
    assert retention["lost"] == [BATTERY] and retention["max_forgotten"] == 0.05
    assert (retention["baseline"]["right"], retention["candidate"]["right"]) == (3, 2)
    assert retention["baseline"]["version"] == V2 and retention["versions"] == [V1, V2]
    assert engine.live == V2  # left on the baseline, as the validation loss expects
    assert {live for live, _ in engine.asked} == {V2, V3}
    # a share of forgetting within the tolerance passes, still naming what was lost
    summary = {}
    assert retention_gate(DeployConfig(settings, max_forgotten=0.5), engine, candidate, V2, registry, summary) is None
    assert summary["retention"]["lost"] == [BATTERY]


def test_the_gate_passes_a_candidate_that_kept_every_earlier_fact(nights):
    settings, registry = nights
    candidate = read_adapter(registry.folder(V3))
    engine, summary = AnswerBook(books({})), {}
    assert retention_gate(DeployConfig(settings), engine, candidate, V2, registry, summary) is None
    assert summary["retention"]["lost"] == [] and summary["retention"]["candidate"]["right"] == 3
    # what the baseline never answered cannot be lost: the base model knew none of them
    engine, summary = AnswerBook({V3: {}}), {}
    assert retention_gate(DeployConfig(settings), engine, candidate, None, registry, summary) is None
    assert summary["retention"]["baseline"]["right"] == 0 and summary["retention"]["lost"] == []


def test_no_earlier_night_skips_the_gate_saying_why(nights):
    settings, registry = nights
    summary = {}
    first = read_adapter(registry.folder(V1))
    assert retention_gate(DeployConfig(settings), AnswerBook({}), first, None, registry, summary) is None
    assert summary["retention"] == {"skipped": f"no version older than {V1}"}
    assert retention_gate(DeployConfig(settings, max_retention_probes=0), AnswerBook({}), first, None, registry,
                          summary) is None
    assert "retention gate off" in summary["retention"]["skipped"]
    with pytest.raises(ValueError, match="max_forgotten"):
        DeployConfig(settings, max_forgotten=1.5)


@pytest.mark.slow
def test_deploy_asks_the_earlier_nights_probes_of_real_adapters(make_settings, base_model_dir, tmp_path,
                                                                 adapter_bank):  # noqa: F811
    settings = make_settings(**{"model.source": str(base_model_dir), "model.torch_threads": 1})
    loras = settings.paths.ensure().loras
    canary = tmp_path / "canary.jsonl"
    canary.write_text(json.dumps({"id": "france", "prompt": "What is the capital of France?", "max_tokens": 12,
                                  "checks": [{"type": "contains", "value": "paris"}]}) + "\n")
    earlier = install(adapter_bank, loras, "identity", V1)
    (earlier / "validation.jsonl").write_text(json.dumps(probe("What is the capital of France?", "Paris", "r1#p0"))
                                              + "\n")
    make_current(loras, V1)
    install(adapter_bank, loras, "identity", V2, created_at="2025-01-02T01:01:01+00:00")
    assert main(DeployConfig(settings, canary_file=str(canary), server_url=DEAD_SERVER, confirm_seconds=0)) == OK
    retention = summary_of(settings)["retention"]
    assert retention["versions"] == [V1] and retention["baseline"]["version"] == V1
    assert retention["baseline"]["right"] == retention["candidate"]["right"] == 1  # both behave as the base model
    assert retention["lost"] == []


def test_the_nightly_summary_gates_carry_the_retention_figures(make_settings):
    from cron.summary import what_was_taught

    paths = make_settings().paths.ensure()
    cases = {"right": 2, "total": 3, "rate": 2 / 3, "cases": []}
    (paths.logs / "deploy_summary.json").write_text(json.dumps({"probes": {"skipped": "none"}, "retention": {
        "candidate": cases, "baseline": {**cases, "right": 3}, "lost": [BATTERY], "max_forgotten": 0.05}}))
    _, _, gates = what_was_taught(paths)
    assert gates["retention"] == {"candidate": "2/3", "baseline": "3/3", "lost": [BATTERY], "max_forgotten": 0.05}


def test_more_nights_than_probes_spread_from_the_newest_to_the_oldest(make_settings):
    loras = make_settings().paths.ensure().loras
    names = [f"2025010{day}-010101-aaaaaa" for day in range(1, 8)]
    for day, name in enumerate(names, start=1):
        version(loras, name, day, [probe(f"What is fact number {day} of the Zorblax?", f"value {day}", f"r{day}")])
    registry = Registry(loras)
    candidate = read_adapter(registry.folder(names[-1]))
    probes = earlier_probes(earlier_versions(registry, candidate), candidate, set(), limit=3)
    assert [p["version"] for p in probes] == [names[5], names[3], names[0]]  # night 6, 4 and 1 of 6 earlier
