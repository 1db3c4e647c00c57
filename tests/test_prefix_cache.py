"""Prefix reuse on the real embedded model: prompts that begin with the same few-shot history answer exactly
as when every prompt is prefilled from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.engine.base import GenerationRequest
from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model

pytestmark = pytest.mark.slow

SHOTS = [{"role": "system", "content": "You fix wrong answers. Reply as REASONING: ... ANSWER: ..."}]
for question, reply in [("What is 2+2?", "REASONING: Two plus two is four. ANSWER: 4"),
                        ("What is the capital of Italy?", "REASONING: Italy's capital city is Rome. ANSWER: Rome"),
                        ("Which planet is largest?", "REASONING: Jupiter is the biggest planet. ANSWER: Jupiter")]:
    SHOTS += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Who wrote Hamlet?"]


def asks(questions: list[str], tokens: int = 16) -> list[GenerationRequest]:
    return [GenerationRequest([*SHOTS, {"role": "user", "content": q}], tokens) for q in questions]


def model(base_model_dir: Path, entries: int) -> LocalModel:
    return LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1,
                      prefix_cache_entries=entries)


def test_reused_prefixes_answer_exactly_as_full_prefill(base_model_dir):
    plain, cached = model(base_model_dir, 0), model(base_model_dir, 4)
    expected = plain.generate_batch(asks(QUESTIONS)) + plain.generate_batch(asks(QUESTIONS[:1], 8))
    got = cached.generate_batch(asks(QUESTIONS)) + cached.generate_batch(asks(QUESTIONS[:1], 8))
    assert [g.text for g in got] == [e.text for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert [t.logprob for t in g.logprobs] == pytest.approx([t.logprob for t in e.logprobs], abs=2e-3)
    assert len(cached.prefix_cache) == 1 and len(plain.prefix_cache) == 0
    history = len(cached.encode_history(asks(QUESTIONS)[0].messages, cached.encode_chat(asks(QUESTIONS)[0].messages)))
    assert history > 100 and cached.prefix_cache.reused_tokens == 4 * history  # 3 rows, then 1


def test_a_one_off_history_is_not_cached_until_it_repeats(base_model_dir):
    cached = model(base_model_dir, 4)
    one_off = [GenerationRequest([{"role": "system", "content": "Context: " + "the sky is blue. " * 10},
                                  {"role": "user", "content": "What colour is the sky?"}], 4)]
    cached.generate_batch(one_off)
    assert len(cached.prefix_cache) == 0
    cached.generate_batch(one_off)
    assert len(cached.prefix_cache) == 1
    cached.use_adapter(None)  # no change: the base model already serves
    cached._set_live(None, None)  # an adapter change drops every entry
    assert len(cached.prefix_cache) == 0
