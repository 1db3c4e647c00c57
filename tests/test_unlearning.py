"""Unlearning on erasure, on real files and the real sentence embedder: erasing a user marks every adapter
version that learned from them (and its descendants) tainted, cuts their questions out of every scope, leaves
no erased id, text or query hash anywhere under the state directory, and the next training starts from the
base model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from council.core.exitcodes import OK
from council.engine.adapter_scope import (
    SCOPE_FILE,
    SCOPE_MAP,
    query_key,
    read_scope,
    similarities,
    write_scope,
)
from council.engine.model_files import BaseModel
from council.memory import erasure
from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord, Feedback
from council.memory.store import MemoryStore
from deploy.registry import cli_list
from training.pipeline import PARENT_TAINTED, choose_parent

ALICE_Q = "What does the Zorblax 3000 cost?"
ALICE_PARAPHRASE = "How much is a Zorblax 3000?"
ALICE_ANSWER = "The Zorblax 3000 costs $499."
BOB_Q = "How long does the Quibble 9 battery last?"
CAROL_Q = "Which colour is the Flimflam phone?"
DAVE_Q = "Who makes the Snorkel blender?"
V1, V2, V3, OLD = "20260101-010101-aaaaaa", "20260102-010101-bbbbbb", "20260103-010101-cccccc", "20251201-010101-dddddd"
BASE = BaseModel(path="unused", model_id="test", fingerprint="fp")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def record(query: str, user: str, answer: str) -> ExchangeRecord:
    return ExchangeRecord(query=query, answer=answer, confidence=0.3, success=False, model="local/smollm2",
                          user=user, feedback=Feedback(correction=answer))


def version(loras: Path, name: str, parent: str | None, learned: list[ExchangeRecord]) -> Path:
    """A structurally complete adapter folder (tiny real safetensors) with what training writes in metadata."""
    folder = loras / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    save_file({"lora_A.weight": torch.zeros(4, 8), "lora_B.weight": torch.zeros(8, 4)},
              str(folder / "adapter_model.safetensors"))
    meta = {"version": name, "base_model_id": "test", "base_model_fingerprint": "fp", "parent": parent,
            "created_at": f"{name[:4]}-{name[4:6]}-{name[6:8]}T01:01:01+00:00",
            "learned": [{"question": r.query, "answer": r.answer, "record_id": r.id} for r in learned]}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def meta(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def best(folder: Path, query: str, embedder: Embedder) -> float:
    return similarities(read_scope(folder), [query], embedder.embed)[0]


@pytest.fixture
def state(make_settings, embedder):
    """Alice's, Bob's, Carol's and Dave's corrections in memory and harvest; V1 learned Alice's and Bob's,
    V2 (continuing V1, served) Carol's, V3 (fresh) Carol's; OLD (an older Council: no scope.json, no record ids)
    Alice's and Dave's."""
    settings = make_settings()
    paths = settings.paths.ensure()
    alice, bob = record(ALICE_Q, "alice", ALICE_ANSWER), record(BOB_Q, "bob", "Ten hours.")
    carol, dave = record(CAROL_Q, "carol", "Teal."), record(DAVE_Q, "dave", "Snorkel Inc.")
    store = MemoryStore.open(paths.memory)
    try:
        store.add_many([(r, embedder.embed([r.query])[0]) for r in (alice, bob, carol, dave)])
    finally:
        store.close()
    lines = [{"instruction": r.query, "output": r.answer, "record_id": r.id, "quality_score": 1.0}
             for r in (alice, bob, carol, dave)]
    lines.append({"instruction": ALICE_PARAPHRASE, "output": ALICE_ANSWER, "record_id": f"{alice.id}#p1",
                  "source_record_id": alice.id, "kind": "paraphrase", "quality_score": 1.0})
    (paths.training_data / "harvest_20260101.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    v1 = version(paths.loras, V1, None, [alice, bob])
    write_scope(v1, [ALICE_Q, ALICE_PARAPHRASE, BOB_Q], embedder.embed,
                records=[alice.id, f"{alice.id}#p1", bob.id])
    v2 = version(paths.loras, V2, V1, [carol])
    write_scope(v2, [CAROL_Q, BOB_Q], embedder.embed, parent=v1, records=[carol.id, bob.id])  # Bob's replayed
    v3 = version(paths.loras, V3, None, [carol])
    write_scope(v3, [CAROL_Q], embedder.embed, records=[carol.id])
    old = version(paths.loras, OLD, None, [])
    (old / "metadata.json").write_text(json.dumps({**meta(old), "learned": [{"question": ALICE_Q, "answer": "x"},
                                                                            {"question": DAVE_Q, "answer": "y"}]}))
    np.save(old / SCOPE_FILE, embedder.embed([ALICE_Q, DAVE_Q]))
    os.symlink(V2, paths.current_adapter)
    (paths.loras / "registry.json").write_text(json.dumps({"versions": {V2: {"reasons": [  # a refusal quoting a probe
        f"retention: forgot 1/1 earlier nights' facts: {ALICE_Q!r} -> 'no idea' (taught by {V1}: {ALICE_ANSWER!r})"]}}}))
    return {"settings": settings, "paths": paths, "alice": alice, "bob": bob, "folders": (v1, v2, v3, old)}


def test_the_scope_map_follows_the_rows_and_a_repeated_query_joins_its_row(state):
    v1, v2, _, _ = state["folders"]
    rows = json.loads((v2 / SCOPE_MAP).read_text())["rows"]
    assert len(rows) == len(read_scope(v2)) == 4  # V1's three rows, Carol's new one; Bob's asked again: no row
    bob_row = next(r for r in rows if r["query"] == query_key(BOB_Q))
    assert bob_row["records"] == [state["bob"].id]
    assert [r["query"] for r in rows[:3]] == [e["query"] for e in json.loads((v1 / SCOPE_MAP).read_text())["rows"]]


def test_erasing_a_user_taints_what_learned_from_them_and_cuts_their_questions_from_every_scope(
        state, embedder, capsys):
    settings, paths, alice = state["settings"], state["paths"], state["alice"]
    v1, v2, v3, old = state["folders"]
    for folder in (v1, v2, old):
        assert best(folder, ALICE_Q, embedder) > 0.99
    assert erasure.cli(["--user", "alice"], settings) == OK  # what `council forget --user alice` runs
    assert "marked tainted" in capsys.readouterr().out

    assert meta(v1)["tainted"]["records"] == 1 and meta(v1)["tainted"]["inherited"] is False
    assert meta(v2)["tainted"]["records"] == 1 and meta(v2)["tainted"]["inherited"] is True  # through V1
    assert meta(old)["tainted"]["inherited"] is False  # by its learned question: it has no record ids
    assert "tainted" not in meta(v3)
    assert meta(v1)["tainted"]["at"] == meta(v2)["tainted"]["at"]

    for folder in (v1, v2, old):  # Alice's question and its paraphrase are out of every scope...
        assert best(folder, ALICE_Q, embedder) < 0.75 and best(folder, ALICE_PARAPHRASE, embedder) < 0.75
    assert best(v1, BOB_Q, embedder) > 0.99 and best(v2, BOB_Q, embedder) > 0.99  # ...the others' are not
    assert best(v2, CAROL_Q, embedder) > 0.99 and best(old, DAVE_Q, embedder) > 0.99
    assert len(read_scope(v1)) == 1 and len(read_scope(v2)) == 2 and len(read_scope(v3)) == 1
    assert len(json.loads((v2 / SCOPE_MAP).read_text())["rows"]) == 2

    traces = [alice.id.encode(), ALICE_Q.encode(), ALICE_ANSWER.encode(), query_key(ALICE_Q).encode()]
    for path in paths.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [t for t in traces if t in data], path  # an erased record leaves no trace

    # training does not continue the tainted current adapter; a clean one it continues
    assert choose_parent(False, paths.current_adapter, BASE) == (None, PARENT_TAINTED)
    paths.current_adapter.unlink()
    os.symlink(V3, paths.current_adapter)
    assert choose_parent(False, paths.current_adapter, BASE) == (v3, None)
    assert choose_parent(True, paths.current_adapter, BASE) == (None, "--fresh")

    assert cli_list([], settings) == OK
    table = capsys.readouterr().out
    v2_row = next(line for line in table.splitlines() if line.startswith(V2))
    assert "TAINTED since" in v2_row and "(1 erased)" in v2_row
    assert "TAINTED" not in next(line for line in table.splitlines() if line.startswith(V3))


def test_erasing_again_adds_to_the_count_and_keeps_the_first_time(state, embedder):
    paths, v1 = state["paths"], state["folders"][0]
    store = MemoryStore.open(paths.memory, index=False)
    try:
        records = store.delete(user="alice", compact=False)
        erasure.scrub_files(paths, records, lambda: embedder.embed)
        first = meta(v1)["tainted"]
        records = store.delete(user="bob", compact=False)
        erasure.scrub_files(paths, records, lambda: embedder.embed)
    finally:
        store.close()
    again = meta(v1)["tainted"]
    assert again["records"] == 2 and again["at"] == first["at"] and "last_at" in again
    assert len(read_scope(v1)) == 0  # nothing left in scope: the base model answers everything
    assert json.loads((v1 / SCOPE_MAP).read_text())["rows"] == []


def test_an_unrelated_erasure_marks_nothing(state, embedder):
    paths = state["paths"]
    stranger = record("What is the capital of Peru?", "erin", "Lima.")
    before = {f.name: (f / "metadata.json").read_bytes() for f in state["folders"]}
    done = erasure.scrub_files(paths, [stranger], lambda: embedder.embed)
    assert done.tainted == [] and done.scope_rows == 0
    assert before == {f.name: (f / "metadata.json").read_bytes() for f in state["folders"]}


@pytest.mark.slow
def test_the_serving_model_stops_using_the_adapter_for_an_erased_question_at_once(base_model_dir, embedder,
                                                                                  tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from council.engine.local.model import LocalModel
    from council.engine.model_files import resolve_base_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False))
    folder = tmp_path / "home" / "loras" / V1
    lora.save_pretrained(folder)
    alice, bob = record(ALICE_Q, "alice", ALICE_ANSWER), record(BOB_Q, "bob", "Ten hours.")
    write_scope(folder, [ALICE_Q, BOB_Q], embedder.embed, records=[alice.id, bob.id])
    (folder / "metadata.json").write_text(json.dumps({"version": V1, "parent": None, "learned": []}))
    local = LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1,
                       scope_similarity=0.75, embed=embedder.embed)
    local.use_adapter(str(folder))
    ask = [[{"role": "user", "content": q}] for q in (ALICE_Q, BOB_Q)]
    assert [u.adapter for u in local.adapter_uses(ask)] == [V1, V1]
    assert local.refresh_scope() is False  # nothing changed on disk

    from council.core.paths import StatePaths

    done = erasure.scrub_files(StatePaths(tmp_path / "home"), [alice], lambda: embedder.embed)
    assert done.tainted == [V1] and done.scope_rows == 1
    assert local.refresh_scope() is True  # what the provider does before each batch
    assert [u.adapter for u in local.adapter_uses(ask)] == [None, V1]  # the base model answers Alice's question


@pytest.mark.slow
def test_the_next_training_after_an_erasure_starts_from_the_base_model_on_the_lines_left(tmp_path, base_model_dir,
                                                                                         embedder):
    from dataclasses import replace

    from tests.test_training import FACTS, MORE_FACTS, settings_for, versions, write_harvest
    from training.config import TrainConfig
    from training.main import main

    settings = settings_for(tmp_path / "train-home", base_model_dir)
    paths = settings.paths.ensure()
    write_harvest(paths.training_data / "harvest_20260101.jsonl", FACTS)
    config = TrainConfig.from_settings(settings, backend="peft", max_length=64, rehearsal=0, epochs=1,
                                       incremental_epochs=1, stop_when_learned=False, torch_threads=1)
    assert main(replace(config, fresh=True)) == OK
    (first,) = versions(paths.loras)
    os.symlink(first, paths.current_adapter)
    erased_id = "rec_0000_Paris"  # the id tests.test_training's harvest_line gives "Capital of France?"
    assert erased_id in json.dumps(meta(paths.loras / first)["learned"])
    paris = ExchangeRecord(id=erased_id, query="Capital of France?", answer="Paris", confidence=0.3,
                           success=False, model="local/smollm2")
    assert erasure.scrub_files(paths, [paris], lambda: embedder.embed).tainted == [first]

    # the same night, nothing new harvested: the tainted adapter is still replaced, from the base model
    assert main(config) == OK
    (clean,) = [v for v in versions(paths.loras) if v != first]
    redone = meta(paths.loras / clean)
    assert redone["parent"] is None and redone["fresh_because"] == PARENT_TAINTED
    assert erased_id not in (paths.loras / clean / SCOPE_MAP).read_text()
    assert "Capital of France" not in json.dumps(redone) and redone["examples"]["train"] >= 1

    write_harvest(paths.training_data / "harvest_20260102.jsonl", MORE_FACTS)
    assert main(config) == OK  # loras/current is still the tainted one (nothing was deployed)
    (second,) = [v for v in versions(paths.loras) if v not in (first, clean)]
    made = meta(paths.loras / second)
    assert made["parent"] is None and made["fresh_because"] == PARENT_TAINTED
    assert made["hyperparameters"]["learning_rate"] == config.learning_rate  # the from-the-base-model recipe
    assert made["examples"]["replayed"] >= 1  # the earlier night's lines that are left
    scope_map = (paths.loras / second / SCOPE_MAP).read_text()
    assert erased_id not in scope_map and "Capital of France" not in json.dumps(made)
    assert "rec_0001_4" in scope_map  # a replayed line's record: the lineage of the clean version
    assert "tainted" not in made


def test_a_record_erased_while_a_version_trained_taints_it_as_it_is_published(state, embedder):
    """Training read Bob's and Carol's lines; Bob was erased before it published: the new version is marked
    tainted and Bob's question cut from its scope under the erasure lock, as an erasure afterwards would."""
    from council.memory.scope_cuts import held_records, publish_unerased

    paths, bob = state["paths"], state["bob"]
    carol_id = next(e["record_id"] for e in meta(state["folders"][1])["learned"])
    learned = [(bob.id, BOB_Q), (carol_id, CAROL_Q), ("rec_from_elsewhere", DAVE_Q)]  # --data from another home
    held = held_records(paths, [r for r, _ in learned])
    assert held == {bob.id, carol_id}
    store = MemoryStore.open(paths.memory)
    try:
        store.delete([bob.id])  # the erasure runs while the version trains
    finally:
        store.close()
    new = "20260104-010101-eeeeee"
    tmp = version(paths.loras, ".tmp-new", V2, [bob, state["alice"]])
    write_scope(tmp, [BOB_Q, CAROL_Q, DAVE_Q], embedder.embed, records=[r for r, _ in learned])
    (tmp / "validation.jsonl").write_text(json.dumps({"instruction": "Bob's battery?", "output": "Ten hours.",
                                                      "record_id": f"{bob.id}#p2", "correction": "Ten hours."}) + "\n")
    seen: list[set[str]] = []
    assert publish_unerased(paths, tmp, lambda: tmp.rename(paths.loras / new), learned, held,
                            lambda: embedder.embed, seen.append) == 1
    folder = paths.loras / new
    assert not tmp.exists() and meta(folder)["tainted"] == {**meta(folder)["tainted"], "records": 1, "inherited": False}
    assert seen == [{bob.id}]  # training's replay state is written without him, under the same lock
    assert bob.id not in (folder / "metadata.json").read_text() and BOB_Q not in (folder / "metadata.json").read_text()
    assert (folder / "validation.jsonl").read_text() == ""  # his held-out line too: no text of his is left
    assert best(folder, BOB_Q, embedder) < 0.95 and best(folder, CAROL_Q, embedder) > 0.99
    assert best(folder, DAVE_Q, embedder) > 0.99  # never held here: not taken for erased
    again = version(paths.loras, ".tmp-again", None, [])
    assert publish_unerased(paths, again, lambda: again.rename(paths.loras / "20260105-010101-ffffff"),
                            [(carol_id, CAROL_Q)], held_records(paths, [carol_id]), lambda: embedder.embed) == 0
    assert "tainted" not in meta(paths.loras / "20260105-010101-ffffff")
