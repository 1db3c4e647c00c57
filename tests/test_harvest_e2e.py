"""Harvest with the REAL embedded SmolLM2 behind the ``local`` litellm provider: 3 autogen members, 2 records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from autogen_core.models import UserMessage

from council import exitcodes
from council.config import LOCAL_MODEL
from council.embedder import Embedder
from council.memory import MemoryStore
from council.provider import register_local_provider, unregister_provider
from council.schema import ExchangeRecord, Feedback
from harvest.main import HarvestConfig, harvest
from harvest.model_client import LiteLLMChatClient

pytestmark = pytest.mark.slow
DAY = datetime(2026, 11, 21, tzinfo=UTC)
HARVEST_FIELDS = {"instruction", "input", "output", "reasoning", "quality_score", "record_id", "votes", "models",
                  "source", "created_at"}


async def test_real_model_council_end_to_end(make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir)})
    records = [
        ExchangeRecord("What is the capital of France?", "The capital of France is Lyon.", 0.4, False, LOCAL_MODEL,
                       created_at=DAY + timedelta(hours=9), feedback=Feedback(correction="Paris")),
        ExchangeRecord("How many legs does a spider have?", "Spiders have six legs.", 0.2, False, LOCAL_MODEL,
                       created_at=DAY + timedelta(hours=10)),
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

        report = await harvest(HarvestConfig(settings=settings, since=DAY, until=DAY + timedelta(days=1),
                                             max_tokens=64))
    finally:
        unregister_provider("local", provider)
        provider.close()

    assert report.failure is None and report.errors == 0
    assert report.exit_code in (exitcodes.OK, exitcodes.NOTHING_TO_DO)
    assert report.attempted == 2
    assert report.kept + report.rejected_low_quality + report.no_candidate == 2
    path = settings.paths.training_data / "harvest_20261121.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert len(rows) == report.kept
    corrected = {records[0].id: "paris"}
    for row in rows:
        assert set(row) == HARVEST_FIELDS
        assert row["output"].strip()
        if row["record_id"] in corrected:  # a rewrite that agrees with the correction, or the correction itself
            assert corrected[row["record_id"]] in row["output"].lower()
        else:
            assert row["reasoning"].strip()
        assert 0.7 <= row["quality_score"] <= 1.0
        assert row["models"] == [LOCAL_MODEL] * 3 and row["votes"]["cast"] == 3
    store = MemoryStore.open(settings.paths.memory)
    try:
        marked = [store.get(r.id).harvested_at is not None for r in records]
    finally:
        store.close()
    assert sum(marked) == report.kept + report.rejected_low_quality  # no-candidate records wait for a later run
    written = {row["record_id"] for row in rows}
    assert all(m for r, m in zip(records, marked, strict=True) if r.id in written)
    summary = json.loads((settings.paths.logs / "harvest_last.json").read_text())
    assert summary["attempted"] == 2 and summary["kept"] == report.kept
