"""Harvest with the REAL embedded SmolLM2 behind the ``local`` litellm provider: 3 autogen members, 2 records.

One record carries a user's correction: harvest must keep it (a line whose output agrees with the correction)
and mark it harvested only once that line is in the day's file. The other was thumbed down: its rewrite is
kept only above ``min_quality``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from autogen_core.models import UserMessage

from council.core import exitcodes
from council.core.config import LOCAL_MODEL
from council.engine.provider import register_local_provider, unregister_provider
from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord, Feedback
from council.memory.store import MemoryStore
from harvest.config import HarvestConfig
from harvest.main import harvest
from harvest.model_client import LiteLLMChatClient
from harvest.output import written_ids

pytestmark = pytest.mark.slow
DAY = datetime(2026, 11, 21, tzinfo=UTC)
HARVEST_FIELDS = {"instruction", "input", "output", "reasoning", "quality_score", "record_id", "votes", "models",
                  "source", "created_at"}


async def test_real_model_council_end_to_end(make_settings, base_model_dir, monkeypatch):
    settings = make_settings(**{"model.source": str(base_model_dir)})
    path = settings.paths.training_data / "harvest_20261121.jsonl"
    in_file_when_marked: dict[str, bool] = {}  # record id -> was its line in the harvest file at every marking
    mark_harvested = MemoryStore.mark_harvested

    def watched_mark(store, record_ids, when):  # noqa: ANN001, ANN202
        written = written_ids(path)
        for record_id in record_ids:
            in_file_when_marked[record_id] = in_file_when_marked.get(record_id, True) and record_id in written
        return mark_harvested(store, record_ids, when)

    monkeypatch.setattr(MemoryStore, "mark_harvested", watched_mark)
    records = [
        ExchangeRecord("What is the capital of France?", "The capital of France is Lyon.", 0.4, False, LOCAL_MODEL,
                       created_at=DAY + timedelta(hours=9), feedback=Feedback(correction="Paris")),
        ExchangeRecord("How many legs does a spider have?", "Spiders have six legs.", 0.2, False, LOCAL_MODEL,
                       created_at=DAY + timedelta(hours=10), feedback=Feedback(thumbs="down")),
    ]
    store = MemoryStore.open(settings.paths.memory)
    store.add_many([(r, v) for r, v in zip(records, Embedder().embed([r.query for r in records]), strict=True)])
    store.close()
    provider = await register_local_provider(settings)
    try:
        client = LiteLLMChatClient(LOCAL_MODEL, max_tokens=8)
        probe = await client.create([UserMessage(content="Say hello.", source="user")])
        assert probe.logprobs and all(t.logprob <= 0 for t in probe.logprobs)
        assert probe.usage.completion_tokens == len(probe.logprobs)
    finally:
        unregister_provider("local", provider)
        provider.close()
    # harvest registers (and sizes the queue of) its own local provider, as `council harvest` does
    report = await harvest(HarvestConfig(settings=settings, since=DAY, until=DAY + timedelta(days=1), max_tokens=64))

    assert report.failure is None and report.errors == 0
    assert report.attempted == 2
    assert report.kept + report.rejected_low_quality + report.no_candidate == 2
    # The user's correction is always kept (quality judges the council's rewrites, not the user's words), so a
    # corrected record always yields a line, and the run wrote data.
    assert report.kept >= 1 and report.exit_code == exitcodes.OK, report.to_dict()
    assert path.is_file(), f"harvest kept nothing: {report.to_dict()}"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({row["record_id"] for row in rows}) == len(rows)
    # one main line per kept record; extra lines written for a kept correction name it in source_record_id
    by_id = {row["record_id"]: row for row in rows if "source_record_id" not in row}
    assert len(by_id) == report.kept and set(by_id) <= {r.id for r in records}
    assert {row["source_record_id"] for row in rows if "source_record_id" in row} <= {records[0].id}
    assert records[0].id in by_id, f"the corrected record has no line: {rows}"
    assert "paris" in by_id[records[0].id]["output"].lower()  # a rewrite agreeing with "Paris", or "Paris" itself
    for row in by_id.values():
        assert HARVEST_FIELDS <= set(row)
        assert row["output"].strip() and row["instruction"] == next(r.query for r in records if r.id == row["record_id"])
        assert 0.0 <= row["quality_score"] <= 1.0
        if row["record_id"] != records[0].id:  # a council rewrite: reasoned and above the bar
            assert row["reasoning"].strip() and row["quality_score"] >= 0.7
        assert row["models"] == [LOCAL_MODEL] * 3 and row["votes"]["cast"] == 3
    store = MemoryStore.open(settings.paths.memory)
    try:
        marked = [store.get(r.id).harvested_at is not None for r in records]
    finally:
        store.close()
    assert sum(marked) == report.kept + report.rejected_low_quality  # no-candidate records wait for a later run
    assert marked[0] and in_file_when_marked[records[0].id]  # marked, and only once its line was in the file
    for record_id in by_id:
        assert in_file_when_marked[record_id], f"{record_id} was marked before its line was written"
    assert set(in_file_when_marked) == {r.id for r, m in zip(records, marked, strict=True) if m}
    summary = json.loads((settings.paths.logs / "harvest_last.json").read_text())
    assert summary["attempted"] == 2 and summary["kept"] == report.kept
