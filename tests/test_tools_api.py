"""Tool calls and structured outputs through the real server, the real embedded model and the openai client:
calls with ids and finish_reason "tool_calls", streamed as OpenAI streams them, a tool's result answered in
words, JSON held to its schema plain and streamed, and records that keep what they were asked with."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from council.server.app import create_app

pytestmark = pytest.mark.slow
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"], "additionalProperties": False}}},
           {"type": "function", "function": {"name": "get_time"}}]  # no description, no parameters
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                         "country": {"type": "string", "maxLength": 20}},
        "required": ["name", "country"], "additionalProperties": False}


@pytest.fixture
async def server(aiohttp_server, make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                                "model.max_new_tokens": 64})
    return await aiohttp_server(create_app(settings))


@pytest.fixture
def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)


async def test_required_tool_call_is_a_call_and_its_record_keeps_the_tools(client, server):
    reply = await client.chat.completions.create(model="council", messages=ASK, tools=WEATHER,
                                                 tool_choice="required", parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name in ("get_weather", "get_time") and isinstance(json.loads(call.function.arguments), dict)
    record_id = reply.model_extra["council"]["record_id"]
    record = (await client.get(f"/records/{record_id}", cast_to=object))
    assert record["tools"][0]["function"]["name"] == "get_weather" and record["tool_calls"][0]["id"] == call.id
    assert record["answer"].startswith("<tool_call>")  # the call as the model writes it: what training learns
    corrected = await client.post("/feedback", cast_to=object, body={
        "record_id": record_id, "correction": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'})
    assert corrected["success"] is False


async def test_a_named_tool_streams_as_openai_streams_a_call(client):
    stream = await client.chat.completions.create(
        model="council", messages=ASK, tools=WEATHER, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "get_weather" and calls[0].function.arguments == ""
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert "city" in json.loads(arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(d.content for d in deltas)


async def test_a_tool_result_is_answered_in_words(client):
    first = await client.chat.completions.create(model="council", messages=ASK, tools=WEATHER,
                                                 tool_choice="required", parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    reply = await client.chat.completions.create(model="council", messages=history, tools=WEATHER)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content
    assert not reply.choices[0].message.content.startswith("<")


@pytest.mark.parametrize("stream", [False, True])
async def test_json_schema_answers_validate(client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": CITY, "strict": True}}
    ask = [{"role": "user", "content": "Name a city in Japan."}]
    if stream:
        chunks = [c async for c in await client.chat.completions.create(
            model="council", messages=ask, response_format=fmt, stream=True)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reply = await client.chat.completions.create(model="council", messages=ask, response_format=fmt)
        text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert finish == "stop"
    jsonschema.validate(json.loads(text), CITY)


async def test_corrections_must_be_answers_of_the_kind_asked_and_cut_answers_are_failures(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": CITY}}
    reply = await client.chat.completions.create(model="council", messages=[{"role": "user", "content": "A city?"}],
                                                 response_format=fmt, max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.model_extra["council"]["success"] is False
    record_id = reply.model_extra["council"]["record_id"]
    for bad in ("not json at all", '{"name": "Kyoto"}'):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post("/feedback", cast_to=object, body={"record_id": record_id, "correction": bad})
        assert caught.value.body["param"] == "correction"
    good = await client.post("/feedback", cast_to=object, body={
        "record_id": record_id, "correction": '{"name": "Kyoto", "country": "Japan"}'})
    assert good["feedback"]["correction"]
    call = await client.chat.completions.create(model="council", messages=ASK, tools=WEATHER, tool_choice="required")
    call_id = call.model_extra["council"]["record_id"]
    with pytest.raises(openai.BadRequestError):
        await client.post("/feedback", cast_to=object, body={"record_id": call_id, "correction": (
            '<tool_call>\n{"name": "get_news", "arguments": {}}\n</tool_call>')})
    with pytest.raises(openai.BadRequestError):
        await client.post("/feedback", cast_to=object, body={"record_id": call_id, "correction": (
            '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>')})


NESTED: dict = {"type": "string"}
for _ in range(300):  # deeper than Python's recursion allows a schema walker: a 400, never a 500
    NESTED = {"type": "object", "properties": {"a": NESTED}}


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "5"}]},
     "messages[1].tool_call_id"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools[0].function.parameters.type"),
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "$defs": "x"}}}]},
     "tools[0].function.parameters.$defs"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                            "required": "a"}}}]},
     "tools[0].function.parameters.required"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": NESTED}}]},
     "tools[0].function.parameters"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": NESTED}}},
     "response_format.json_schema.schema"),
    ({"tools": WEATHER, "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice.type"),
])
async def test_refused_with_the_field_to_fix(client, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**{"model": "council", "messages": ASK, **body})
    assert caught.value.body["param"] == param
