"""``/v1/embeddings`` and ``/v1/completions`` on the real embedded models over real HTTP (raw and through the
official openai client), OpenAI-shaped 404/405 for unknown paths and methods, and the 401 that comes at once
while the models are still loading."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest

from council.server import keys
from council.server.app import create_app
from council.server.protocol.completions import Completion, CompletionChunk
from council.server.protocol.embeddings import MAX_INPUTS, CreateEmbeddingResponse

ASK = "What is the capital of France?"
KEY = "sekrit-key"


@pytest.fixture
def settings(make_settings, base_model_dir):
    return make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                            "model.max_new_tokens": 16})


@pytest.fixture
async def server(aiohttp_server, settings):
    return await aiohttp_server(create_app(settings))


@pytest.fixture
async def client(aiohttp_client, server):
    return await aiohttp_client(server)


def openai_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)


async def error_of(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert error["type"] and error["message"] and error["code"]
    return error


def sse_events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


# --- /v1/embeddings -------------------------------------------------------------------------------------------

async def test_embeddings_float_and_base64_are_the_memory_embedders_vectors(client, server):
    texts = ["How do I reverse a list in Python?", "Reversing a Python list", "The weather in Paris is mild."]
    resp = await client.post("/v1/embeddings", json={"model": "council", "input": texts})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["object"] == "list" and body["model"] == "council"
    assert CreateEmbeddingResponse.model_validate(body).dump() == body
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
    floats = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert floats.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-4)
    expected = server.app[keys.SENTENCE_MODEL].embed(texts)
    np.testing.assert_allclose(floats, expected, atol=1e-6)
    assert floats[0] @ floats[1] > floats[0] @ floats[2] + 0.2  # the paraphrase is nearer than the weather

    resp = await client.post("/v1/embeddings", json={"model": "council", "input": texts, "encoding_format": "base64",
                                                     "dimensions": 384, "user": "alice"})
    assert resp.status == 200, await resp.text()
    encoded = [d["embedding"] for d in (await resp.json())["data"]]
    assert all(isinstance(e, str) for e in encoded)
    decoded = np.array([np.frombuffer(base64.b64decode(e), dtype="<f4") for e in encoded])
    np.testing.assert_array_equal(decoded, floats)


async def test_embeddings_single_string_batch_and_usage(client, server):
    resp = await client.post("/v1/embeddings", json={"model": "local/smollm2", "input": "hello world"})
    body = await resp.json()
    assert resp.status == 200 and len(body["data"]) == 1 and body["model"] == "local/smollm2"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # [CLS] hello world [SEP]

    texts = [f"sentence number {i} about topic {i % 7}" for i in range(100)]
    resp = await client.post("/v1/embeddings", json={"model": "council", "input": texts})
    body = await resp.json()
    assert [d["index"] for d in body["data"]] == list(range(100))
    single = server.app[keys.SENTENCE_MODEL].embed([texts[42]])[0]
    np.testing.assert_allclose(body["data"][42]["embedding"], single, atol=1e-6)
    tokens = body["usage"]["prompt_tokens"]
    assert tokens == body["usage"]["total_tokens"] and 100 * 8 <= tokens <= 100 * 10

    resp = await client.post("/v1/embeddings", json={"model": "council", "input": "word " * 1000})
    assert (await resp.json())["usage"]["prompt_tokens"] == 256  # what the embedder reads of a long text


BAD_EMBEDDINGS = [
    ({"model": "council"}, 400, "missing_field", "input"),
    ({"model": "council", "input": ""}, 400, "invalid_value", "input"),
    ({"model": "council", "input": "   "}, 400, "invalid_value", "input"),
    ({"model": "council", "input": []}, 400, "invalid_value", "input"),
    ({"model": "council", "input": ["fine", ""]}, 400, "invalid_value", "input[1]"),
    ({"model": "council", "input": ["fine", 3]}, 400, "invalid_type", "input[1]"),
    ({"model": "council", "input": [1, 2, 3]}, 400, "unsupported_input", "input"),
    ({"model": "council", "input": [[1, 2], [3]]}, 400, "unsupported_input", "input"),
    ({"model": "council", "input": 42}, 400, "invalid_type", "input"),
    ({"model": "council", "input": {"text": "hi"}}, 400, "invalid_type", "input"),
    ({"model": "council", "input": ["x"] * (MAX_INPUTS + 1)}, 400, "invalid_value", "input"),
    ({"model": "nope", "input": "hi"}, 404, "model_not_found", "model"),
    ({"model": 7, "input": "hi"}, 400, "invalid_type", "model"),
    ({"model": "council", "input": "hi", "encoding_format": "int8"}, 400, "invalid_value", "encoding_format"),
    ({"model": "council", "input": "hi", "dimensions": 128}, 400, "invalid_value", "dimensions"),
    ({"model": "council", "input": "hi", "dimensions": "384"}, 400, "invalid_type", "dimensions"),
    ({"model": "council", "input": "hi", "dimensions": 384.0}, 400, "invalid_type", "dimensions"),
    ({"model": "council", "input": "hi", "dimensions": 0}, 400, "invalid_value", "dimensions"),
    ({"model": "council", "input": "hi", "user": 5}, 400, "invalid_type", "user"),
    ({"model": "council", "input": None}, 400, "missing_field", "input"),
    ({"model": "council", "input": "hi", "dimensions": True}, 400, "invalid_type", "dimensions"),
    ({"model": "council", "input": "hi", "temperature": 0.5}, 400, "unknown_parameter", "temperature"),
    (b"{not json", 400, "invalid_json", None),
    (b"[\"hi\"]", 400, "invalid_json", None),
    (b'{"model": "council", "input": "\\ud83d"}', 400, "invalid_encoding", "input"),
]


async def check_bad_bodies(client, path: str, cases: list) -> None:
    """Each case answered with its OpenAI-shaped 4xx (one server for all: the models load once)."""
    for body, status, code, param in cases:
        data = body if isinstance(body, bytes) else json.dumps(body)
        resp = await client.post(path, data=data, headers={"Content-Type": "application/json"})
        error = await error_of(resp, status)
        assert (error["code"], error["param"]) == (code, param), (str(body)[:80], error)
        if code == "unsupported_input":
            assert "only text" in error["message"]


async def test_embeddings_bad_input_is_an_openai_shaped_4xx(client):
    await check_bad_bodies(client, "/v1/embeddings", BAD_EMBEDDINGS)


# --- /v1/completions ------------------------------------------------------------------------------------------

async def test_completion_is_answered_by_the_council_and_recorded(client):
    resp = await client.post("/v1/completions", json={"model": "council", "prompt": [ASK], "max_tokens": 16,
                                                      "temperature": 0, "echo": False, "best_of": 1,
                                                      "logprobs": 0, "suffix": None, "n": 1})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    record_id = resp.headers["x-council-record-id"]
    assert body["id"] == f"cmpl-{record_id}" and body["object"] == "text_completion"
    assert body["model"] == "council" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] in ("stop", "length")
    assert "Paris" in choice["text"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"]
    assert body["council"]["record_id"] == record_id and 0.0 <= body["council"]["confidence"] <= 1.0
    assert Completion.model_validate(body).dump() == body  # the declared shape, nothing more or less
    assert float(resp.headers["x-council-confidence"]) == pytest.approx(body["council"]["confidence"], abs=1e-4)
    record = await (await client.get(f"/v1/records/{record_id}")).json()
    assert record["query"] == ASK and record["answer"] == choice["text"]
    assert record["messages"] == [{"role": "user", "content": ASK}]


async def test_completion_streams_text_completion_chunks(client):
    resp = await client.post("/v1/completions", json={"prompt": ASK, "max_tokens": 16, "stream": True,
                                                      "stream_options": {"include_usage": True}})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await resp.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert {c["id"] for c in chunks} == {f"cmpl-{resp.headers['x-council-record-id']}"}
    usage_chunk, final = chunks[-1], chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert final["choices"][0]["finish_reason"] in ("stop", "length") and "council" in final
    texts = [c["choices"][0]["text"] for c in chunks[:-2]]
    assert len(texts) > 3 and all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert all(c["choices"][0].keys() == {"text", "index", "logprobs", "finish_reason"} for c in chunks[:-1])
    assert all(c["usage"] is None for c in chunks[:-1])
    assert [CompletionChunk.model_validate(c).object for c in chunks] == ["text_completion"] * len(chunks)
    record = await (await client.get(f"/v1/records/{final['council']['record_id']}")).json()
    assert record["answer"] == "".join(texts) and "Paris" in record["answer"]


@pytest.mark.slow
async def test_completion_streams_the_decided_answer(aiohttp_client, aiohttp_server, make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                                "model.max_new_tokens": 16, "council.stream_mode": "decided"})
    client = await aiohttp_client(await aiohttp_server(create_app(settings)))
    resp = await client.post("/v1/completions", json={"prompt": ASK, "stream": True})
    assert resp.status == 200 and "x-council-confidence" in resp.headers
    events = sse_events(await resp.text())
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and "usage" not in chunks[0]
    record = await (await client.get(f"/v1/records/{chunks[-1]['council']['record_id']}")).json()
    assert record["answer"] == "".join(c["choices"][0]["text"] for c in chunks) and len(chunks) > 3


BAD_COMPLETIONS = [
    ({"model": "council"}, 400, "missing_field", "prompt"),
    ({"prompt": ""}, 400, "invalid_value", "prompt"),
    ({"prompt": 5}, 400, "invalid_type", "prompt"),
    ({"prompt": [1, 2, 3]}, 400, "unsupported_input", "prompt"),
    ({"prompt": [[1, 2], [3]]}, 400, "unsupported_input", "prompt"),
    ({"prompt": ["one", "two"]}, 400, "unsupported_parameter", "prompt"),
    ({"prompt": []}, 400, "invalid_value", "prompt"),
    ({"prompt": "hi", "echo": True}, 400, "unsupported_parameter", "echo"),
    ({"prompt": "hi", "suffix": "end"}, 400, "unsupported_parameter", "suffix"),
    ({"prompt": "hi", "best_of": 3}, 400, "unsupported_parameter", "best_of"),
    ({"prompt": "hi", "logprobs": 2}, 400, "unsupported_parameter", "logprobs"),
    ({"prompt": "hi", "logprobs": -1}, 400, "invalid_value", "logprobs"),
    ({"prompt": "hi", "logprobs": True}, 400, "invalid_type", "logprobs"),
    ({"prompt": "hi", "n": 2}, 400, "unsupported_parameter", "n"),
    ({"prompt": "hi", "temperature": 3}, 400, "invalid_value", "temperature"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, 400, "invalid_value", "stream_options"),
    ({"prompt": "hi", "messages": []}, 400, "unknown_parameter", "messages"),
    ({"prompt": "hi", "stream": True, "stream_options": {"include_usage": True, "foo": 1}}, 400,
     "unknown_parameter", "stream_options.foo"),
    ({"prompt": ["a", "b"]}, 400, "unsupported_parameter", "prompt"),
    ({"prompt": ["a", 3]}, 400, "invalid_type", "prompt[1]"),
    ({"prompt": None}, 400, "missing_field", "prompt"),
    ({"prompt": "hi", "max_tokens": "ten"}, 400, "invalid_type", "max_tokens"),
    ({"prompt": "hi", "temperature": True}, 400, "invalid_type", "temperature"),
    ({"prompt": "hi", "echo": "yes"}, 400, "invalid_type", "echo"),
    ({"prompt": "hi", "n": 0}, 400, "invalid_value", "n"),
    ({"prompt": "hi", "model": "nope"}, 404, "model_not_found", "model"),
    ({"prompt": "hi", "model": "nope", "stream": True}, 404, "model_not_found", "model"),
    (b"{\"prompt\": NaN}", 400, "invalid_json", None),
]


async def test_completions_bad_input_is_an_openai_shaped_4xx(client):
    await check_bad_bodies(client, "/v1/completions", BAD_COMPLETIONS)


# --- the official openai client -------------------------------------------------------------------------------

async def test_openai_client_embeddings_and_completions(server):
    client = openai_client(server)
    texts = ["a red apple", "a green pear"]
    floats = await client.embeddings.create(model="council", input=texts, encoding_format="float")
    default = await client.embeddings.create(model="council", input=texts)  # the client asks for base64
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 384
    np.testing.assert_allclose([d.embedding for d in default.data], [d.embedding for d in floats.data], atol=0)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="council", input=[[1, 2, 3]])
    assert caught.value.body["code"] == "unsupported_input"

    completion = await client.completions.create(model="council", prompt=ASK, max_tokens=16)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-rec_")
    assert "Paris" in completion.choices[0].text and completion.usage.total_tokens > 0
    assert completion.model_extra["council"]["record_id"] == completion.id.removeprefix("cmpl-")
    stream = await client.completions.create(model="council", prompt=ASK, max_tokens=16, stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream]
    assert "Paris" in "".join(pieces)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model="council", prompt=["one", "two"])
    assert caught.value.body["param"] == "prompt"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.completions.create(model="gpt-3.5-turbo-instruct", prompt=ASK)
    assert caught.value.body["code"] == "model_not_found"


# --- unknown paths and methods, 401 while starting ------------------------------------------------------------

async def test_unknown_v1_path_names_the_endpoints_and_wrong_method_is_405(client, server):
    served = {f"{r.method} {r.resource.canonical}" for r in server.app.router.routes()
              if r.resource.canonical.startswith("/v1/") and r.method != "HEAD"}
    assert {"POST /v1/embeddings", "POST /v1/completions", "POST /v1/chat/completions"} <= served
    for method, path in (("POST", "/v1/no-such-endpoint"), ("GET", "/v1/nope/deeper"), ("DELETE", "/v1"),
                         ("PUT", "/v1/")):
        error = await error_of(await client.request(method, path), 404)
        assert error["code"] == "unknown_url" and error["type"] == "invalid_request_error"
        assert f"({method} {path})" in error["message"]
        assert all(endpoint in error["message"] for endpoint in served)
    error = await error_of(await client.get("/nowhere"), 404)
    assert error["code"] == "not_found"  # outside /v1/ no endpoint list

    resp = await client.get("/v1/embeddings")
    error = await error_of(resp, 405)
    assert error["code"] == "method_not_allowed" and error["type"] == "invalid_request_error"
    assert "allowed: POST" in error["message"] and resp.headers["Allow"] == "POST"
    resp = await client.post("/v1/models")
    error = await error_of(resp, 405)
    assert "GET" in error["message"] and "GET" in resp.headers["Allow"]


@pytest.mark.slow
async def test_a_wrong_key_gets_its_401_while_the_models_load(aiohttp_client, aiohttp_server, make_settings,
                                                              base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "server.api_key": KEY})
    client = await aiohttp_client(await aiohttp_server(create_app(settings, background_start=True)))
    good = {"Authorization": f"Bearer {KEY}"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for path in ("/v1/embeddings", "/v1/completions", "/v1/chat/completions"):
            error = await error_of(await client.post(path, json={"input": "hi"}, headers=headers), 401)
            assert error["type"] == "authentication_error"
    error = await error_of(await client.get("/v1/nope", headers=good), 404)  # unknown paths need no models
    assert error["code"] == "unknown_url"
    assert (await client.get("/livez")).status == 200  # open paths stay open
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["status"] == "starting"  # so all the above came early

    resp = await client.post("/v1/embeddings", json={"input": "hi"}, headers=good)  # waits for the models
    assert resp.status == 200 and len((await resp.json())["data"][0]["embedding"]) == 384
    assert (await client.get("/readyz")).status == 200
