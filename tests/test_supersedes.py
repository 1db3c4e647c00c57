"""Knowledge updates: a user's newer correction of the same question (the memory's similarity decides) supersedes
their older one everywhere: the records show ``supersedes`` / ``superseded_by``, recall answers the newest value,
harvest skips the old record and training's replay of earlier nights drops its lines. A different question about
the same product, or another user's correction, supersedes nothing. Real embedder, real SQLite, a real server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from council.engine.adapter_scope import SCOPE_MAP, query_key, read_scope, write_scope
from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord
from council.memory.store import MemoryStore, superseded_records
from council.server.app import create_app
from harvest.selection import select
from tests.fakes import Script, install_scripted
from training.artifacts import mark_consumed
from training.data import HarvestData, read_harvest
from training.replay import replay_examples

PRICE = "How much does the Zorblax 3000 cost?"
PRICE_AGAIN = "What's the price of the Zorblax 3000?"
BATTERY = "How long does the Zorblax 3000 battery last?"
OTHER_MODEL = "How much does the Zorblax 4000 cost?"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


async def _ask(client, question: str, user: str) -> dict:
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}],
                                                           "user": user})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["council"]


async def _correct(client, question: str, user: str, correction: str) -> str:
    record_id = (await _ask(client, question, user))["record_id"]
    resp = await client.post("/v1/feedback", json={"record_id": record_id, "correction": correction})
    assert resp.status == 200, await resp.text()
    return record_id


async def _record(client, record_id: str) -> dict:
    resp = await client.get(f"/v1/records/{record_id}")
    assert resp.status == 200
    return await resp.json()


async def test_a_reworded_correction_supersedes_the_old_one_and_recall_answers_the_new(aiohttp_client,
                                                                                      make_settings, embedder):
    provider = install_scripted({"*": Script("It costs $100 and lasts a week.", 0.95)})  # sure and wrong
    settings = make_settings(**{"council.agent0": "scripted/agent0", "council.heads": {}})
    client = await aiohttp_client(create_app(settings))
    old = await _correct(client, PRICE, "alice", "$499")
    battery = await _correct(client, BATTERY, "alice", "41 hours")
    bobs = await _correct(client, PRICE, "bob", "$599")  # another user's: alice's stays current
    assert (await _record(client, old))["superseded_by"] is None and (await _record(client, bobs))["supersedes"] == []
    adapter = settings.paths.loras / "20261201-000000-aaaaaa"  # a version that learned the old price and the battery
    adapter.mkdir(parents=True)
    write_scope(adapter, [PRICE, BATTERY], embedder.embed, records=[old, battery])
    new = await _correct(client, PRICE_AGAIN, "alice", "$699")
    # the adapter's old price is out of its scope at once: the base model answers, with "$699" recalled
    assert len(read_scope(adapter)) == 1 and json.loads((adapter / SCOPE_MAP).read_text())["rows"] == [
        {"query": query_key(BATTERY), "records": [battery]}]

    shown = await _record(client, new)
    assert shown["supersedes"] == [old] and shown["superseded_by"] is None
    assert (await _record(client, old))["superseded_by"] == new
    assert (await _record(client, battery))["superseded_by"] is None  # another question about the same product
    assert (await _record(client, bobs))["superseded_by"] is None  # bob's correction is his own
    listed = {r["id"]: r for r in (await (await client.get("/v1/records?user=alice")).json())["data"]}
    assert listed[old]["superseded_by"] == new and listed[new]["supersedes"] == [old]

    asked = await _ask(client, PRICE, "alice")  # the question again, in the first words
    prompt = provider.calls[-1][1][0]["content"]
    assert "$699" in prompt and "$499" not in prompt
    assert new in asked["context_ids"] and old not in asked["context_ids"]
    asked = await _ask(client, BATTERY, "alice")
    assert battery in asked["context_ids"] and "41 hours" in provider.calls[-1][1][0]["content"]


def _add(store: MemoryStore, embedder: Embedder, query: str, user: str | None, when: datetime) -> str:
    record = ExchangeRecord(query=query, answer="It costs $100.", confidence=0.95, success=True,
                            model="local/smollm2", user=user, created_at=when)
    store.add(record, embedder.embed([query])[0])
    return record.id


def test_scope_numbers_erasure_and_harvest(embedder, tmp_path):
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    store = MemoryStore.open(tmp_path / "memory")
    try:
        def correct(query: str, user: str | None, value: str, any_user: bool = False) -> ExchangeRecord:
            record_id = _add(store, embedder, query, user, t0 + timedelta(minutes=len(store.window(t0, t0 + timedelta(
                days=1)))))
            return store.apply_feedback(record_id, correction=value, supersede_similarity=0.92, any_user=any_user)

        alice = correct(PRICE, "alice", "$499")
        other_model = correct(OTHER_MODEL, "alice", "$899")  # 0.93 alike, but another number: its own question
        bob = correct(PRICE_AGAIN, "bob", "$599", any_user=True)  # memory.share = "all": everyone's corrections
        assert bob.supersedes == [alice.id] and store.get(alice.id).superseded_by == bob.id
        assert store.get(other_model.id).superseded_by is None
        plain = store.apply_feedback(_add(store, embedder, PRICE, "carol", t0), correction="$1",
                                     supersede_similarity=None)  # no setting given: supersedes nothing
        assert plain.supersedes == [] and store.get(bob.id).superseded_by is None

        hits = store.search(embedder.embed([PRICE])[0], 3, 0.6, share="all", user="alice")
        assert alice.id not in [r.id for r, _ in hits] and bob.id in [r.id for r, _ in hits]
        chosen = select(store, t0 - timedelta(days=1), t0 + timedelta(days=1), 10, 0.99)
        leads = [r.id for g in chosen.groups for r in [g.lead, *g.duplicates]]
        assert alice.id not in leads and bob.id in leads and chosen.found == 3
        assert superseded_records(tmp_path / "memory") == {alice.id}

        store.delete([bob.id])  # the newest correction erased: the one it superseded is current again
        assert store.get(alice.id).superseded_by is None and superseded_records(tmp_path / "memory") == set()
        hits = store.search(embedder.embed([PRICE])[0], 3, 0.6, share="all", user="alice")
        assert alice.id in [r.id for r, _ in hits]
    finally:
        store.close()
    assert superseded_records(tmp_path / "nowhere") == set()


def _line(question: str, answer: str, record_id: str, held_out: bool = False) -> str:
    return json.dumps({"instruction": question, "input": "", "output": answer, "reasoning": "", "quality_score": 0.9,
                       "record_id": record_id, "source": "correction", "held_out": held_out})


def test_replay_drops_the_lines_of_superseded_corrections(embedder, make_settings):
    paths = make_settings().paths.ensure()
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    store = MemoryStore.open(paths.memory)
    try:
        old = _add(store, embedder, PRICE, "alice", t0)
        store.apply_feedback(old, correction="$499", supersede_similarity=0.92)
        battery = _add(store, embedder, BATTERY, "alice", t0)
        store.apply_feedback(battery, correction="41 hours", supersede_similarity=0.92)
        new = _add(store, embedder, PRICE_AGAIN, "alice", t0 + timedelta(days=1))
        assert store.apply_feedback(new, correction="$699", supersede_similarity=0.92).supersedes == [old]
    finally:
        store.close()
    nights = {"harvest_20261101.jsonl": [_line(PRICE, "$499", old), _line("Zorblax 3000 price?", "$499", f"{old}#p1"),
                                         _line(BATTERY, "41 hours", battery)],
              "harvest_20261102.jsonl": [_line(PRICE_AGAIN, "$699", new),
                                         _line("Zorblax 3000 cost?", "$699", f"{new}#p1", held_out=True)]}
    for name, lines in nights.items():
        (paths.training_data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    mark_consumed(paths.training_data, read_harvest(sorted(paths.training_data.glob("harvest_*.jsonl")), 0.7).files)

    replayed = replay_examples(paths, HarvestData(), 0.7, 0.5, 8, continuing=True).lines  # budget 4: all 3
    assert sorted(e["record_id"] for e in replayed) == sorted([battery, new])  # no $499 line, no held-out one
    assert all("$499" not in e["output"] for e in replayed)
