"""Every request stands alone: a request that breaks the sampler, tokenizer, embedder or an adapter fails by
itself, in every batch Council forms, and its batch-mates are answered exactly as if they had been alone."""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import torch

from council.core.errors import InvalidRequestError
from council.engine.base import GenerationRequest
from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model
from council.engine.sampling import SamplingParams
from council.memory.embedder import BatchingEmbedder, Embedder
from council.server.app import create_app

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model(base_model_dir: Path) -> LocalModel:
    return LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1)


def test_bad_rows_fail_alone_and_the_rest_match_solo_runs(model):
    good = [GenerationRequest(ASK, 8), GenerationRequest([{"role": "user", "content": "Name a colour."}], 8,
                                                         SamplingParams(temperature=0.7, seed=3))]
    solo = [model.generate_batch([request])[0] for request in good]
    bad = [
        GenerationRequest(ASK, 8, SamplingParams(temperature=math.nan)),  # no finite distribution
        GenerationRequest(ASK, 8, SamplingParams(temperature=1e-40)),  # greedy, not NaN
        GenerationRequest(ASK, 8, SamplingParams(seed=2**64 - 1)),  # the largest seed torch takes; OpenAI's
        # negatives map onto it
        GenerationRequest(ASK, 8, SamplingParams(seed=-1)),
        GenerationRequest(ASK, 8, SamplingParams(logit_bias={10**9: 5.0})),  # a token the model does not have
        GenerationRequest([{"role": "user", "content": "word " * 9000}], 8),  # longer than the context
        GenerationRequest(ASK, 8, SamplingParams(temperature=0.5, top_p=0.0)),  # nucleus of one token: greedy
    ]
    results = model.generate_batch([good[0], *bad, good[1]])
    assert results[0].text == solo[0].text and results[-1].text == solo[1].text
    nan, tiny, big_seed, negative_seed, bias, too_long, top_p_zero = results[1:-1]
    assert isinstance(nan, ValueError)
    assert tiny.text == solo[0].text and top_p_zero.text == solo[0].text
    assert big_seed.text and negative_seed.text and negative_seed.text == big_seed.text  # -1 is 2**64 - 1
    assert isinstance(bias, InvalidRequestError) and bias.param == "logit_bias"
    assert isinstance(too_long, InvalidRequestError) and too_long.code == "context_length_exceeded"


def test_a_failing_forward_pass_fails_only_the_request_that_breaks_it(model):
    """A row whose prompt breaks the model (a token id past the embedding table): the batch is decoded again
    one request at a time and only that request fails."""
    good = GenerationRequest(ASK, 6)
    solo = model.generate_batch([good])[0].text
    original = model.encode_chat

    def encode(messages):
        ids = original(messages)
        return ids + [10**7] if messages[-1]["content"] == "poison" else ids

    model.encode_chat = encode
    try:
        results = model.generate_batch([good, GenerationRequest([{"role": "user", "content": "poison"}], 6), good])
    finally:
        model.encode_chat = original
    assert results[0].text == solo and results[2].text == solo
    assert isinstance(results[1], Exception)


async def test_embedding_batch_mates_survive_a_text_the_embedder_rejects():
    batching = BatchingEmbedder(Embedder(), max_wait_ms=50)
    try:
        results = await asyncio.gather(batching.embed_one("hello there"), batching.embed_one("broken \ud83d here"),
                                       batching.embed_one("general kenobi"), return_exceptions=True)
    finally:
        await batching.close()
    assert isinstance(results[1], Exception)
    assert results[0].shape == (384,) and results[2].shape == (384,)
    assert np.isclose(float(np.linalg.norm(results[0])), 1.0, atol=1e-4)


@pytest.fixture
async def server(aiohttp_server, make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                                "model.max_new_tokens": 12, "server.adapter_poll_seconds": 0.05})
    return await aiohttp_server(create_app(settings)), settings


async def test_concurrent_requests_with_edge_values_all_answer(server):
    srv, _ = server
    url = f"http://127.0.0.1:{srv.port}/v1/chat/completions"
    bodies = [{"messages": ASK, "max_tokens": 6, "model": "local/smollm2"} for _ in range(3)]
    bodies += [{"messages": ASK, "max_tokens": 6, "model": "local/smollm2", "temperature": 1e-40},
               {"messages": ASK, "max_tokens": 6, "model": "local/smollm2", "temperature": 0.9, "top_p": 0},
               {"messages": ASK, "max_tokens": 6, "model": "local/smollm2", "seed": -(2**63)},
               {"messages": ASK, "max_tokens": 6, "model": "local/smollm2", "seed": 2**64}]
    async with aiohttp.ClientSession() as session:
        async def send(body):
            async with session.post(url, json=body) as resp:
                return resp.status, await resp.json()
        results = await asyncio.gather(*(send(b) for b in bodies))
    assert [status for status, _ in results] == [200] * 6 + [400]
    assert results[-1][1]["error"]["param"] == "seed"
    texts = {body["choices"][0]["message"]["content"] for _, body in results[:5]}
    assert len(texts) == 1  # greedy, tiny temperature and top_p 0 all decode the same


def _write_adapter(folder: Path, base_model_dir: Path, seed: int = 0) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False)).save_pretrained(folder)


def _break(kind: str, folder: Path) -> None:
    """Damage a copy of a good adapter in one of the ways a real folder breaks."""
    from safetensors.torch import load_file, save_file

    config, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if kind == "config-not-object":
        config.write_text("[1, 2, 3]")
    elif kind == "config-wrong-types":
        config.write_text(json.dumps(dict(json.loads(config.read_text()), r="four", target_modules=7)))
    elif kind == "config-not-json":
        config.write_text("{r: 4")
    elif kind == "weights-empty":
        weights.write_bytes(b"")
    elif kind == "weights-garbage":
        weights.write_bytes(os.urandom(4096))
    elif kind == "weights-nan":
        tensors = load_file(str(weights))
        save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, str(weights))
    elif kind == "weights-other-base":
        tensors = load_file(str(weights))
        save_file({k: torch.zeros(v.shape[0], v.shape[1] + 3) if "lora_A" in k else v for k, v in tensors.items()},
                  str(weights))
    elif kind == "weights-missing":
        weights.unlink()
    elif kind == "weights-unreadable":
        weights.unlink()
        weights.symlink_to(weights)  # a link loop: opening it fails with OSError, as root too
    elif kind == "weights-huge":  # finite, so only a forward pass shows the damage
        tensors = load_file(str(weights))
        save_file({k: torch.full_like(v, 1e30) for k, v in tensors.items()}, str(weights))
    elif kind == "weights-half-copied":  # every lora_B missing
        tensors = load_file(str(weights))
        save_file({k: v for k, v in tensors.items() if "lora_A" in k}, str(weights))
    elif kind.startswith("config-"):
        changes = {"config-alpha-infinite": {"lora_alpha": float("inf")}, "config-dora": {"use_dora": True},
                   "config-other-layers": {"layers_to_transform": [999]}, "config-bias": {"bias": "everything"},
                   "config-rank-pattern": {"rank_pattern": {"q_proj": "x"}}}[kind]
        config.write_text(json.dumps(dict(json.loads(config.read_text()), **changes)))


async def _health(session, port):
    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
        return await resp.json()


async def _wait_for(session, port, predicate, seconds: float = 20.0):
    for _ in range(int(seconds / 0.05)):
        health = await _health(session, port)
        if predicate(health):
            return health
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health never reached the expected state: {health}")


BROKEN = ["config-not-object", "config-wrong-types", "config-not-json", "weights-empty", "weights-garbage",
          "weights-nan", "weights-other-base", "weights-missing", "weights-unreadable", "weights-huge",
          "weights-half-copied", "config-alpha-infinite", "config-dora", "config-other-layers", "config-bias",
          "config-rank-pattern"]  # an empty scope.npy is not broken: erasure can empty one (test_unlearning.py)


async def test_broken_adapters_are_refused_and_the_live_one_keeps_answering(server, base_model_dir, tmp_path):
    import shutil

    srv, settings = server
    loras = settings.paths.loras
    good = tmp_path / "good"
    await asyncio.to_thread(_write_adapter, good, base_model_dir)
    shutil.copytree(good, loras / "v-good")
    current = settings.paths.current_adapter
    current.symlink_to(loras / "v-good")
    async with aiohttp.ClientSession() as session:
        await _wait_for(session, srv.port, lambda h: h["adapter"] == "v-good")
        url = f"http://127.0.0.1:{srv.port}/v1/chat/completions"
        body = {"model": "local/smollm2", "messages": ASK, "max_tokens": 6}
        async with session.post(url, json=body) as resp:
            expected = (await resp.json())["choices"][0]["message"]["content"]
        for kind in BROKEN:
            shutil.copytree(good, loras / f"v-{kind}")
            _break(kind, loras / f"v-{kind}")
            tmp_link = loras / "next"
            tmp_link.symlink_to(loras / f"v-{kind}")
            os.replace(tmp_link, current)
            health = await _wait_for(session, srv.port, lambda h: h["adapter_error"] is not None)
            assert health["status"] == "degraded" and health["adapter"] == "v-good", (kind, health)
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
            assert resp.status == 200, (kind, answer)
            assert answer["choices"][0]["message"]["content"] == expected, kind
            assert answer["council"]["adapter"] == "v-good"
            tmp_link = loras / "next"  # back to the good one: the watcher is still alive
            tmp_link.symlink_to(loras / "v-good")
            os.replace(tmp_link, current)
            await _wait_for(session, srv.port, lambda h: h["adapter_error"] is None and h["status"] == "ok")
