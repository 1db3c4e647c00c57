"""The OpenAI wire format as real clients send it, on the real embedded model over real HTTP: nullable fields,
token limits, streamed usage, top_logprobs, model objects, refused parameters, system-only conversations,
and errors that are always OpenAI-shaped JSON."""

from __future__ import annotations

import json

import openai
import pytest

from council.server.app import create_app

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def server(aiohttp_server, make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                                "model.max_new_tokens": 16})
    return await aiohttp_server(create_app(settings))


@pytest.fixture
def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)


async def post(server, body: dict | bytes):
    import aiohttp

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions", data=data,
            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_null_means_not_set(server):
    status, _, text = await post(server, {"model": "council", "messages": ASK, "stream": None, "n": None,
                                          "logprobs": None, "temperature": None, "top_p": None, "stop": None,
                                          "seed": None, "user": None, "max_tokens": 4, "tools": None,
                                          "response_format": None, "top_logprobs": None, "stream_options": None})
    assert status == 200, text
    assert json.loads(text)["choices"][0]["message"]["content"]


async def test_max_completion_tokens_null_leaves_max_tokens(client):
    reply = await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=5,
                                                 extra_body={"max_completion_tokens": None})
    assert reply.usage.completion_tokens <= 5
    reply = await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=12,
                                                 max_completion_tokens=3)
    assert reply.usage.completion_tokens <= 3  # the newer field wins


async def test_stream_include_usage_sends_a_last_chunk_without_choices(client):
    stream = await client.chat.completions.create(model="council", messages=ASK, max_tokens=6, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk(client):
    stream = await client.chat.completions.create(model="council", messages=ASK, max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)


async def test_top_logprobs_are_real_sorted_alternatives(client):
    reply = await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=6, logprobs=True,
                                                 top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content
    for token in content:
        alternatives = token.top_logprobs
        assert len(alternatives) == 3
        values = [t.logprob for t in alternatives]
        assert values == sorted(values, reverse=True)
        assert len({t.token for t in alternatives}) == 3
        assert token.logprob <= values[0] + 1e-6  # greedy picks the most likely, so it is the first
        assert bytes(token.bytes).decode("utf-8", "replace") == token.token
    assert "".join(t.token for t in content) == reply.choices[0].message.content


async def test_top_logprobs_bytes_of_a_token_that_holds_part_of_a_character(client):
    """Byte-level BPE splits many characters across tokens: their bytes are the raw UTF-8 pieces."""
    reply = await client.chat.completions.create(
        model="local/smollm2", max_tokens=16, logprobs=True, top_logprobs=2,
        messages=[{"role": "user", "content": "Repeat exactly: 日本語 🙂"}])
    content = reply.choices[0].logprobs.content
    joined = b"".join(bytes(t.bytes) for t in content)
    assert joined.decode("utf-8", "replace") == reply.choices[0].message.content or \
        joined.decode("utf-8", "ignore") in reply.choices[0].message.content + "\ufffd"
    for token in content:
        for alternative in token.top_logprobs:
            assert isinstance(alternative.bytes, list)


async def test_top_logprobs_in_stream_chunks(client):
    stream = await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=5, stream=True,
                                                  logprobs=True, top_logprobs=2)
    entries = [entry for chunk in [c async for c in stream] if chunk.choices and chunk.choices[0].logprobs
               for entry in chunk.choices[0].logprobs.content]
    assert entries and all(len(entry.top_logprobs) == 2 for entry in entries)


@pytest.mark.parametrize("body, param", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
     "response_format.json_schema.schema.type"),
    ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "params": {}}}]}, "tools[0].function.params"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": "yes"},
     "parallel_tool_calls"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi", "colour": "red"}]}, "messages[0].colour"),
    ({"messages": [{"role": "tool", "content": "5"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                          "function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "extra": 1}]}]},
     "messages[0].content[0].extra"),
    ({"max_tokens": "ten", "max_completion_tokens": 5}, "max_tokens"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"n": 2}, "n"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"logit_bias": {"12": 101}}, "logit_bias.12"),
    ({"logit_bias": {"abc": 1}}, "logit_bias.abc"),
    ({"logit_bias": {"999999999": 1}}, "logit_bias"),
    ({"logit_bias": {"1" * 5000: 1}}, "logit_bias"),
    ({"response_format": "text"}, "response_format"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages[0].content[0].text"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [*ASK, {"role": "assistant"}]}, "messages[1].content"),
    ({"service_tier": "ultra"}, "service_tier"),
    ({"moderation": {"model": "x"}}, "moderation"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                                  "function": {"name": "g"}}},
     "tool_choice.function.name"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
async def test_refused_by_name(server, body, param):
    status, content_type, text = await post(server, {"model": "local/smollm2", "messages": ASK, "max_tokens": 2,
                                                     **body})
    assert status == 400, text
    assert content_type.startswith("application/json")
    assert json.loads(text)["error"]["param"] == param


async def test_openai_client_sees_refusals_as_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="council", messages=ASK, response_format={"type": "xml"})
    assert caught.value.body["param"] == "response_format.type"


@pytest.mark.parametrize("role", ["system", "developer"])
async def test_system_only_conversation_is_answered(client, role):
    reply = await client.chat.completions.create(
        model="council", max_tokens=8, messages=[{"role": role, "content": "Say hello to the user."}])
    assert reply.choices[0].message.content


@pytest.mark.parametrize("model", ["council", "local/smollm2"])
async def test_get_model_by_id(client, model):
    got = await client.models.retrieve(model)
    assert got.id == model and got.object == "model"


async def test_get_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("no/such-model")
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": "broken \ud83d here"}], "messages[0].content"),
    ([{"role": "user", "content": "hi \udc00"}, {"role": "assistant", "content": "ok"},
      {"role": "user", "content": "and now?"}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "text", "text": "x\udfff"}]}], "messages[0].content[0].text"),
])
async def test_unpaired_surrogates_are_refused_naming_the_text(server, messages, param):
    body = json.dumps({"model": "local/smollm2", "messages": messages}).encode()  # ensure_ascii keeps \\ud83d
    status, content_type, text = await post(server, body)
    assert status == 400 and content_type.startswith("application/json"), text
    assert json.loads(text)["error"]["param"] == param


async def test_non_finite_numbers_are_invalid_json(server):
    status, _, text = await post(server, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}')
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"


async def test_deeply_nested_body_is_a_400(server):
    status, _, text = await post(server, b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 400 and json.loads(text)["error"]["type"] == "invalid_request_error"


async def test_logit_bias_and_penalties_change_the_answer(client, base_model_dir):
    from transformers import AutoTokenizer

    plain = (await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=8)
             ).choices[0].message.content
    first = AutoTokenizer.from_pretrained(base_model_dir).encode(plain, add_special_tokens=False)[0]
    biased = await client.chat.completions.create(model="local/smollm2", messages=ASK, max_tokens=8,
                                                  logit_bias={str(first): -100})
    assert not biased.choices[0].message.content.startswith(plain[:4])
    repeat = [{"role": "user", "content": "Write the word 'go' ten times."}]
    free = (await client.chat.completions.create(model="local/smollm2", messages=repeat, max_tokens=16)
            ).choices[0].message.content
    penalised = (await client.chat.completions.create(model="local/smollm2", messages=repeat, max_tokens=16,
                                                      frequency_penalty=2.0)).choices[0].message.content
    assert penalised != free


async def test_an_unexpected_error_is_a_json_500_with_a_request_id(aiohttp_server, make_settings, caplog):
    settings = make_settings(**{"providers": {"nochoices": "tests.fakes:NoChoicesLLM"},
                                "council.agent0": "nochoices/any", "council.heads": {}, "council.memory_k": 0})
    server = await aiohttp_server(create_app(settings))
    status, content_type, text = await post(server, {"messages": ASK})
    assert status == 500 and content_type.startswith("application/json")
    error = json.loads(text)["error"]
    request_id = error["message"].split("request id ")[1]
    assert request_id.startswith("req_") and "Traceback" not in text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # logged once, with its traceback
    status, _, _ = await post(server, {"messages": ASK, "model": "council", "max_tokens": 1, "n": 1})
    assert status == 500  # the server is still up and answers the same way


async def test_tools_with_tool_choice_none_are_answered_in_text(client):
    reply = await client.chat.completions.create(
        model="council", messages=ASK, max_tokens=4, tool_choice="none",
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


async def test_stream_logprobs_cover_tokens_that_hold_part_of_a_character(client):
    messages = [{"role": "user", "content": "Write the word café, an emoji 🎉 and some Japanese 日本語."}]
    plain = await client.chat.completions.create(model="local/smollm2", messages=messages, max_tokens=12,
                                                 logprobs=True, top_logprobs=1)
    stream = await client.chat.completions.create(model="local/smollm2", messages=messages, max_tokens=12,
                                                  logprobs=True, top_logprobs=1, stream=True)
    chunks = [c async for c in stream]
    streamed = [entry for c in chunks if c.choices and c.choices[0].logprobs for entry in c.choices[0].logprobs.content]
    expected = plain.choices[0].logprobs.content
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in expected]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content


async def test_feedback_and_records_refuse_broken_text(server):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}"
        async with session.post(f"{url}/v1/feedback", data=b'{"record_id": "\\ud83d", "thumbs": "up"}') as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "record_id"
        async with session.post(f"{url}/v1/feedback", data=b"[]") as resp:
            assert resp.status == 400 and "JSON object" in (await resp.json())["error"]["message"]
        async with session.get(f"{url}/v1/records?user=%ff") as resp:  # undecodable bytes: replaced, no match
            assert resp.status == 200 and (await resp.json())["data"] == []


async def test_a_bearer_token_with_raw_bytes_is_a_401(aiohttp_server, make_settings):
    import asyncio

    settings = make_settings(**{"server.api_key": "123456", "council.heads": {}})
    server = await aiohttp_server(create_app(settings))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 123456\xff\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    head = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    assert b" 401 " in head
