"""The `local` litellm provider on the real embedded model, called the way the product calls it."""

from __future__ import annotations

import asyncio
import math

import litellm
import pytest

from council.errors import OverloadedError
from council.provider import PROVIDER, register_local_provider, unregister_provider
from council.router import council_error_in

ASK = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]


@pytest.fixture
async def provider(make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "model.max_queue": 2})
    handler = await register_local_provider(settings)
    yield handler
    unregister_provider(PROVIDER, handler)
    handler.close()


async def test_completion_has_per_token_logprobs_and_honours_limits(provider):
    reply = await litellm.acompletion(model="local/smollm2", messages=ASK, max_tokens=6, temperature=0)
    tokens = reply.choices[0].logprobs.content
    assert len(tokens) == 6 and reply.choices[0].finish_reason == "length"
    assert all(t.logprob <= 0 for t in tokens) and "".join(t.token for t in tokens).strip()
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 5
    stopped = await litellm.acompletion(model="local/smollm2", messages=ASK, max_tokens=30, stop=["4"])
    assert "4" not in stopped.choices[0].message.content and "3" in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


async def test_streaming_yields_the_same_text_as_non_streaming(provider):
    full = await litellm.acompletion(model="local/smollm2", messages=ASK, max_tokens=12, temperature=0)
    stream = await litellm.acompletion(model="local/smollm2", messages=ASK, max_tokens=12, temperature=0,
                                       stream=True)
    pieces, logprobs = [], []
    async for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        extra = getattr(chunk.choices[0].delta, "provider_specific_fields", None) or {}
        logprobs += extra.get("logprobs", [])
    assert "".join(pieces) == full.choices[0].message.content
    assert len([p for p in pieces if p]) > 3 and all(lp <= 0 for lp in logprobs)


async def test_sampling_with_seed_is_reproducible_and_differs_from_greedy(provider):
    story = [{"role": "user", "content": "Write one sentence about a cat."}]
    runs = [await litellm.acompletion(model="local/smollm2", messages=story, max_tokens=16, temperature=1.5,
                                      seed=7) for _ in range(2)]
    assert runs[0].choices[0].message.content == runs[1].choices[0].message.content
    logprob_sum = sum(t.logprob for t in runs[0].choices[0].logprobs.content)
    assert math.isfinite(logprob_sum)


async def test_queue_limit_refuses_instead_of_hanging(provider):
    calls = [litellm.acompletion(model="local/smollm2", messages=ASK, max_tokens=12) for _ in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) >= 2 and all(isinstance(council_error_in(r), OverloadedError) for r in refused)
    assert provider.worker.pending == 0


async def test_unknown_local_model_is_a_clear_error(provider):
    with pytest.raises(Exception) as caught:
        await litellm.acompletion(model="local/gpt-9", messages=ASK)
    assert council_error_in(caught.value).code == "model_not_found"
