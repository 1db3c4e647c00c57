"""``POST /v1/responses`` on the real embedded model over real HTTP: the Response and its stream checked
against the ``openai`` package's own types, chaining with ``previous_response_id`` (and who may chain), stored
responses erased with their records, OpenAI-shaped errors, the ``openai`` client, and the ``openai-agents``
SDK on its default (Responses) path, function-tool round trips and structured output included; the input items
of a stored response (``GET /v1/responses/{id}/input_items``)."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from council.memory import erasure
from council.memory.responses import RESPONSES_DB, ResponseStore, StoredResponse, erase_responses
from council.server import keys
from council.server.app import create_app

pytestmark = pytest.mark.slow
EVENTS = TypeAdapter(ResponseStreamEvent)
ASK = "What is the capital of France?"


def settings_for(make_settings, base_model_dir, tokens: int):
    return make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "council.memory_k": 0,
                            "model.max_new_tokens": tokens})


@pytest.fixture
async def server(aiohttp_server, make_settings, base_model_dir):
    return await aiohttp_server(create_app(settings_for(make_settings, base_model_dir, 24)))


@pytest.fixture
async def tool_server(aiohttp_server, make_settings, base_model_dir):
    """Room for a whole call: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` is 25+ tokens."""
    return await aiohttp_server(create_app(settings_for(make_settings, base_model_dir, 64)))


def openai_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def client(server) -> openai.AsyncOpenAI:
    return openai_client(server)


@pytest.fixture
def tool_client(tool_server) -> openai.AsyncOpenAI:
    return openai_client(tool_server)


async def call(server, method: str, path: str, body: dict | bytes | None = None, **headers: str):
    """(status, headers, parsed JSON or raw text) of one request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.request(
            method, f"http://127.0.0.1:{server.port}{path}", data=data,
            headers={"Content-Type": "application/json", **headers}) as resp:
        text = await resp.text()
        is_json = resp.headers.get("Content-Type", "").startswith("application/json")
        return resp.status, resp.headers, json.loads(text) if is_json else text


async def create(server, body: dict, **headers: str) -> dict:
    status, _, reply = await call(server, "POST", "/v1/responses", {"model": "council", **body}, **headers)
    assert status == 200, reply
    return reply


async def record_messages(server, reply: dict) -> list[dict]:
    status, _, record = await call(server, "GET", f"/v1/records/{reply['council']['record_id']}")
    assert status == 200, record
    return record["messages"]


def sse(text: str) -> list[tuple[str, dict]]:
    """(event line, data) per server-sent event."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_plain_text_input_is_a_valid_response(server):
    status, headers, reply = await call(server, "POST", "/v1/responses", {"model": "council", "input": ASK})
    assert status == 200, reply
    parsed = Response.model_validate(reply)  # field for field, as the openai package types it
    assert parsed.id.startswith("resp_") and parsed.object == "response" and parsed.model == "council"
    assert parsed.status in ("completed", "incomplete")
    [message] = parsed.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].text == parsed.output_text
    assert parsed.output_text.strip()
    usage = parsed.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert reply["council"]["record_id"] == headers["x-council-record-id"]
    assert parsed.store is True and parsed.tools == [] and parsed.tool_choice == "auto"
    if parsed.status == "incomplete":
        assert parsed.incomplete_details.reason == "max_output_tokens"
    messages = await record_messages(server, reply)
    assert messages == [{"role": "user", "content": ASK}]


async def test_length_limit_is_incomplete(server):
    reply = await create(server, {"input": "Write a long story about a dragon.", "max_output_tokens": 2})
    assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "max_output_tokens"}
    assert reply["output"][0]["status"] == "incomplete" and reply["usage"]["output_tokens"] <= 2
    assert reply["max_output_tokens"] == 2


async def test_item_list_and_instructions_become_the_chat(server):
    items = [{"role": "developer", "content": "Answer in one word."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi, "},
                                                              {"type": "input_text", "text": "I am Ada."}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada.",
                                                                   "annotations": []}]},
             {"role": "user", "content": ASK}]
    reply = await create(server, {"input": items, "instructions": "You are terse.", "temperature": 0.0,
                                  "metadata": {"k": "v"}})
    assert reply["instructions"] == "You are terse." and reply["metadata"] == {"k": "v"}
    assert reply["temperature"] == 0.0
    assert await record_messages(server, reply) == [
        {"role": "system", "content": "You are terse."}, {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Hi, I am Ada."}, {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": ASK}]


async def test_previous_response_id_replays_the_conversation(server):
    first = await create(server, {"input": "My name is Ada.", "instructions": "Be kind."})
    first_answer = first["output"][0]["content"][0]["text"]
    second = await create(server, {"input": "What is my name?", "previous_response_id": first["id"]})
    assert second["previous_response_id"] == first["id"]
    messages = await record_messages(server, second)
    assert messages == [{"role": "user", "content": "My name is Ada."},  # the first turn's instructions stay there
                        {"role": "assistant", "content": first_answer},
                        {"role": "user", "content": "What is my name?"}]
    third = await create(server, {"input": "And again?", "previous_response_id": second["id"]})
    assert [m["content"] for m in await record_messages(server, third)][:3] == [m["content"] for m in messages]
    status, _, stored = await call(server, "GET", f"/v1/responses/{second['id']}")
    assert status == 200 and stored["id"] == second["id"] and stored["output"] == second["output"]


async def test_unstored_and_unknown_previous_ids_are_404(server):
    unstored = await create(server, {"input": ASK, "store": False})
    assert unstored["store"] is False
    for previous in (unstored["id"], "resp_nope"):
        status, _, reply = await call(server, "POST", "/v1/responses",
                                      {"model": "council", "input": "Go on.", "previous_response_id": previous})
        assert status == 404, reply
        assert reply["error"]["code"] == "previous_response_not_found"
        assert reply["error"]["param"] == "previous_response_id" and previous in reply["error"]["message"]
    status, _, reply = await call(server, "GET", f"/v1/responses/{unstored['id']}")
    assert status == 404 and reply["error"]["type"] == "invalid_request_error"
    status, _, reply = await call(server, "GET", f"/v1/records/{unstored['council']['record_id']}")
    assert status == 404  # store: false keeps nothing, the exchange's record included (as chat completions)


async def test_another_users_response_is_never_replayed(server):
    alice = await create(server, {"input": "My secret is 4417.", "user": "alice"})
    for body, headers in (({"user": "bob"}, {}), ({}, {"x-council-user": "bob"}), ({}, {})):
        status, _, reply = await call(server, "POST", "/v1/responses",
                                      {"model": "council", "input": "What is my secret?",
                                       "previous_response_id": alice["id"], **body}, **headers)
        assert status == 404 and reply["error"]["code"] == "previous_response_not_found", (body, headers, reply)
    own = await create(server, {"input": "What is my secret?", "previous_response_id": alice["id"]},
                       **{"x-council-user": "alice"})
    assert "My secret is 4417." in [m["content"] for m in await record_messages(server, own)]
    assert (await call(server, "GET", f"/v1/responses/{alice['id']}"))[0] == 404
    assert (await call(server, "GET", f"/v1/responses/{alice['id']}", **{"x-council-user": "bob"}))[0] == 404
    assert (await call(server, "DELETE", f"/v1/responses/{alice['id']}", **{"x-council-user": "bob"}))[0] == 404
    status, _, reply = await call(server, "DELETE", f"/v1/responses/{alice['id']}", **{"x-council-user": "alice"})
    assert status == 200 and reply == {"id": alice["id"], "object": "response.deleted", "deleted": True}
    assert (await call(server, "GET", f"/v1/responses/{alice['id']}", **{"x-council-user": "alice"}))[0] == 404


async def test_erasing_a_record_erases_every_response_that_holds_it(server):
    first = await create(server, {"input": "Remember the word walrus."})
    second = await create(server, {"input": "Which word?", "previous_response_id": first["id"]})
    other = await create(server, {"input": ASK})
    status, _, _ = await call(server, "DELETE", f"/v1/records/{first['council']['record_id']}")
    assert status == 200
    for gone in (first, second):
        assert (await call(server, "GET", f"/v1/responses/{gone['id']}"))[0] == 404
        assert (await call(server, "GET", f"/v1/responses/{gone['id']}/input_items"))[0] == 404
    assert (await call(server, "GET", f"/v1/responses/{other['id']}"))[0] == 200
    path = server.app[keys.RESPONSES].path
    assert b"walrus" not in path.read_bytes() + path.with_name(f"{RESPONSES_DB}-wal").read_bytes()


async def test_council_forget_user_erases_their_stored_responses(server):
    alice = await create(server, {"input": "Alice likes the word marmalade.", "user": "alice"})
    chained = await create(server, {"input": "Which word?", "user": "alice", "previous_response_id": alice["id"]})
    bob = await create(server, {"input": ASK, "user": "bob"})
    settings = server.app[keys.SETTINGS]
    await server.close()  # `council forget` runs while the server is stopped
    assert erasure.cli(["--user", "alice"], settings) == 0
    path = settings.paths.memory / RESPONSES_DB
    store = ResponseStore.open(path)
    try:
        assert store.get(alice["id"]) is None and store.get(chained["id"]) is None
        assert store.get(bob["id"]) is not None
    finally:
        store.close()
    assert b"marmalade" not in path.read_bytes()


def test_erase_responses_on_the_file_follows_chains(tmp_path):
    path = tmp_path / RESPONSES_DB
    store = ResponseStore.open(path)
    try:
        store.put(StoredResponse("resp_a", "u", "rec_1", ["rec_1"], [{"text": "zebra-one"}], {"id": "resp_a"}))
        store.put(StoredResponse("resp_b", "u", "rec_2", ["rec_1", "rec_2"], [], {"id": "resp_b"}))
        store.put(StoredResponse("resp_c", "u", "rec_3", ["rec_3"], [], {"id": "resp_c"}))
        assert erase_responses(path, ["rec_1"]) == 2  # another connection, as `council forget` opens it
        assert store.get("resp_a") is None and store.get("resp_b") is None and store.get("resp_c") is not None
        assert b"zebra-one" not in path.read_bytes() and not (tmp_path / f"{RESPONSES_DB}-wal").read_bytes()
        assert store.erase(["rec_3"]) == 1 and store.count() == 0
    finally:
        store.close()
    assert erase_responses(tmp_path / "missing.sqlite3", ["rec_1"]) == 0


async def input_items(server, response_id: str, query: str = "", **headers: str) -> dict:
    status, _, reply = await call(server, "GET", f"/v1/responses/{response_id}/input_items{query}", **headers)
    assert status == 200, reply
    ResponseItemList.model_validate(reply)  # field for field, as the openai package types it
    return reply


async def test_input_items_list_the_conversation_with_ids(server):
    first = await create(server, {"input": "My name is Ada.", "instructions": "Be kind."})
    items = [{"type": "message", "role": "developer", "content": "Answer briefly.", "id": "msg_client_1"},
             {"type": "function_call", "call_id": "call_1", "name": "get_name", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "Ada"},
             {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]}]
    second = await create(server, {"input": items, "previous_response_id": first["id"]})
    listed = await input_items(server, second["id"])
    assert listed["object"] == "list" and listed["has_more"] is False
    newest_first = listed["data"]
    assert [(i["type"], i.get("role")) for i in newest_first] == [
        ("message", "user"), ("function_call_output", None), ("function_call", None), ("message", "developer"),
        ("message", "assistant"), ("message", "user")]  # this turn's input, then the first turn's, newest first
    assert newest_first[0]["content"] == [{"type": "input_text", "text": "What is my name?"}]
    assert newest_first[3]["id"] == "msg_client_1"  # the client's id is kept
    assert newest_first[4]["id"] == first["output"][0]["id"]  # an earlier output keeps its id
    assert newest_first[4]["content"][0]["text"] == first["output"][0]["content"][0]["text"]
    assert newest_first[1]["output"] == "Ada" and newest_first[2]["name"] == "get_name"
    prefixes = [i["id"].split("_")[0] for i in newest_first]
    assert prefixes == ["msg", "fco", "fc", "msg", "msg", "msg"] and len({i["id"] for i in newest_first}) == 6
    assert (listed["first_id"], listed["last_id"]) == (newest_first[0]["id"], newest_first[-1]["id"])
    assert (await input_items(server, second["id"], "?order=asc"))["data"] == newest_first[::-1]
    again = await input_items(server, second["id"])
    assert again == listed  # the ids are stable
    page = await input_items(server, second["id"], "?limit=4&order=asc")
    assert page["data"] == newest_first[::-1][:4] and page["has_more"] is True
    rest = await input_items(server, second["id"], f"?limit=4&order=asc&after={page['last_id']}")
    assert rest["data"] == newest_first[::-1][4:] and rest["has_more"] is False
    assert (await input_items(server, first["id"], "?include[]="))["data"][0]["content"][0]["text"] == \
        "My name is Ada."


async def test_input_items_belong_to_their_user_and_check_the_query(server):
    alice = await create(server, {"input": ASK, "user": "alice"})
    path = f"/v1/responses/{alice['id']}/input_items"
    for headers in ({}, {"x-council-user": "bob"}):
        status, _, reply = await call(server, "GET", path, **headers)
        assert status == 404 and reply["error"]["code"] == "response_not_found", (headers, reply)
    assert (await call(server, "GET", "/v1/responses/resp_nope/input_items"))[0] == 404
    assert len((await input_items(server, alice["id"], **{"x-council-user": "alice"}))["data"]) == 1
    for query, param, code in [("limit=0", "limit", "invalid_value"), ("limit=101", "limit", "invalid_value"),
                               ("limit=abc", "limit", "invalid_type"), ("order=sideways", "order", "invalid_value"),
                               ("after=msg_nope", "after", "invalid_value"),
                               ("include=message.output_text.logprobs", "include", "unsupported_parameter"),
                               ("colour=red", "colour", "unknown_parameter")]:
        status, _, reply = await call(server, "GET", f"{path}?{query}", **{"x-council-user": "alice"})
        assert status == 400 and reply["error"]["param"] == param and reply["error"]["code"] == code, reply
        assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["message"]
    status, _, _ = await call(server, "DELETE", f"/v1/responses/{alice['id']}", **{"x-council-user": "alice"})
    assert status == 200
    assert (await call(server, "GET", path, **{"x-council-user": "alice"}))[0] == 404


def test_rows_without_item_ids_get_stable_ones(tmp_path):
    store = ResponseStore.open(tmp_path / RESPONSES_DB)
    try:
        items = [{"type": "message", "role": "user", "content": "hi"},
                 {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                 {"type": "function_call_output", "call_id": "c", "output": "x", "id": "fco_given"},
                 {"type": "message", "role": "assistant", "content": "ok", "id": "fco_given"}]
        store.put(StoredResponse("resp_old", None, "rec_1", ["rec_1"], items, {"id": "resp_old"}))
        ids = [item["id"] for item in store.get("resp_old").items]
        assert ids == [item["id"] for item in store.get("resp_old").items]
        assert [i.split("_")[0] for i in ids] == ["msg", "fc", "fco", "msg"] and ids[2] == "fco_given"
        assert len(set(ids)) == 4
    finally:
        store.close()


async def test_stream_sends_the_reference_events_in_order(server):
    status, headers, text = await call(server, "POST", "/v1/responses",
                                       {"model": "council", "input": ASK, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse(text)
    for name, data in events:
        assert name == data["type"]
        EVENTS.validate_python(data)  # each event, field for field
    types = [data["type"] for _, data in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 1
    last = types[-1]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done", last]
    assert last in ("response.completed", "response.incomplete")
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    text_done = next(d for _, d in events if d["type"] == "response.output_text.done")
    assert "".join(d["delta"] for _, d in events if d["type"] == "response.output_text.delta") == text_done["text"]
    assert final["output"][0]["content"][0]["text"] == text_done["text"]
    assert events[0][1]["response"]["status"] == "in_progress" and events[0][1]["response"]["output"] == []
    assert final["council"]["record_id"] == headers["x-council-record-id"]
    status, _, stored = await call(server, "GET", f"/v1/responses/{final['id']}")
    assert status == 200 and stored == final


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"input": ASK, "temperature_x": 1}, 400, "temperature_x", "unknown_parameter"),
    ({"input": [{"role": "user", "content": "hi", "colour": "red"}]}, 400, "input[0].colour", "unknown_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi", "x": 1}]}]}, 400,
     "input[0].content[0].x", "unknown_parameter"),
    ({"input": ASK, "tools": [{"type": "web_search"}]}, 400, "tools[0].type", "unsupported_parameter"),
    ({"input": ASK, "tools": [{"type": "function"}]}, 400, "tools[0].name", "missing_field"),
    ({}, 400, "input", "missing_field"),
    ({"input": []}, 400, "input", "invalid_value"),
    ({"input": 5}, 400, "input", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400,
     "input[0].content[0]", "unsupported_content"),
    ({"input": [{"role": "robot", "content": "hi"}]}, 400, "input[0].role", "invalid_value"),
    ({"input": [{"type": "reasoning", "summary": []}]}, 400, "input[0].type", "unsupported_parameter"),
    ({"input": ASK, "truncation": "auto"}, 400, "truncation", "unsupported_parameter"),
    ({"input": ASK, "reasoning": {"effort": "high"}}, 400, "reasoning", "unsupported_parameter"),
    ({"input": ASK, "include": ["message.output_text.logprobs"]}, 400, "include", "unsupported_parameter"),
    ({"input": ASK, "temperature": 5}, 400, "temperature", "invalid_value"),
    ({"input": ASK, "max_output_tokens": 0}, 400, "max_output_tokens", "invalid_value"),
    ({"input": ASK, "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format.schema",
     "missing_field"),
    ({"input": ASK, "tool_choice": {"type": "function", "name": "nope"}}, 400, "tool_choice.name", "invalid_value"),
    # Responses names, never chat's; the chat API's shapes refused by their nested key
    ({"input": ASK, "text": {"format": {"type": "json_schema", "name": "my schema", "schema": {}}}}, 400,
     "text.format.name", "invalid_value"),
    ({"input": ASK, "text": {"format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}}, 400,
     "text.format.json_schema", "unknown_parameter"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "zz", "output": "1"}],
      "instructions": "Be brief."}, 400, "input[1].call_id", "invalid_value"),
    ({"input": ASK, "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]}, 400,
     "tools[1].name", "invalid_value"),
    ({"input": ASK, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools[0].function",
     "unknown_parameter"),
    ({"input": ASK, "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "function": {
        "name": "f"}}}, 400, "tool_choice.function", "unknown_parameter"),
    ({"input": ASK, "tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]}, 400,
     "tools[0].parameters.type", "invalid_value"),
    ({"input": ASK, "tool_choice": "any"}, 400, "tool_choice", "invalid_value"),
    ({"input": ASK, "tool_choice": 3}, 400, "tool_choice", "invalid_type"),
    ({"input": ASK, "tool_choice": {"type": "web_search_preview"}}, 400, "tool_choice", "unsupported_parameter"),
    ({"input": ASK, "tool_choice": "required"}, 400, "tool_choice", "invalid_value"),
    ({"input": ASK, "truncation": "bogus"}, 400, "truncation", "invalid_value"),
    ({"input": ASK, "top_logprobs": -1}, 400, "top_logprobs", "invalid_value"),
    ({"input": ASK, "include": [5]}, 400, "include[0]", "invalid_type"),
    ({"input": ASK, "service_tier": "ultra"}, 400, "service_tier", "invalid_value"),
    ({"input": ASK, "prompt_cache_retention": "forever"}, 400, "prompt_cache_retention", "invalid_value"),
    ({"input": [{"role": "user", "content": ["hi"]}]}, 400, "input[0].content[0]", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"text": "hi"}]}]}, 400, "input[0].content[0].type", "missing_field"),
    ({"input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, 400, "input[0].content[0].type",
     "invalid_value"),
    ({"input": [{"role": "user", "content": []}]}, 400, "input[0].content", "invalid_value"),
    ({"input": " "}, 400, "input", "invalid_value"),
    ({"input": ASK, "model": "gpt-nope"}, 404, "model", "model_not_found"),
    ({"input": ASK, "previous_response_id": "resp_missing"}, 404, "previous_response_id",
     "previous_response_not_found"),
])
async def test_bad_requests_get_openai_errors(server, body, status, param, code):
    got, _, reply = await call(server, "POST", "/v1/responses", {"model": "council", **body})
    assert got == status, reply
    assert reply["error"]["param"] == param and reply["error"]["code"] == code, reply
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["message"]
    for chat_name in ("messages", "response_format", "max_completion_tokens", ".function."):
        assert chat_name not in reply["error"]["message"], reply  # the Responses names, never chat's


async def test_bad_json_is_a_400(server):
    status, _, reply = await call(server, "POST", "/v1/responses", b"{not json")
    assert status == 400 and reply["error"]["code"] == "invalid_json"


async def test_openai_client_parses_plain_and_streamed(client):
    reply = await client.responses.create(model="council", input=ASK, instructions="Be brief.")
    assert reply.output_text.strip() and reply.usage.output_tokens > 0
    again = await client.responses.retrieve(reply.id)
    assert again.output_text == reply.output_text
    items = [item async for item in client.responses.input_items.list(reply.id, limit=1)]  # pages via after
    assert [(item.type, item.role, item.content[0].text) for item in items] == [("message", "user", ASK)]
    stream = await client.responses.create(model="council", input=ASK, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    async with client.responses.stream(model="council", input=ASK) as events:
        deltas = [event.delta async for event in events if event.type == "response.output_text.delta"]
        final = await events.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.strip()
    await client.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(reply.id)


def _agents(client: openai.AsyncOpenAI):
    agents = pytest.importorskip("agents")
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_tracing_disabled(True)
    return agents


async def test_openai_agents_runner_plain_and_streamed(client):
    agents = _agents(client)
    agent = agents.Agent(name="helper", instructions="Answer with one word.", model="council",
                         model_settings=agents.ModelSettings(max_tokens=24))
    result = await agents.Runner.run(agent, "What is 2+2?")  # an answer cut at max_tokens would fail the run
    assert isinstance(result.final_output, str) and result.final_output.strip()
    streamed = agents.Runner.run_streamed(agent, "What is 2+2?")
    kinds = [event.type async for event in streamed.stream_events()]
    assert "raw_response_event" in kinds
    assert isinstance(streamed.final_output, str) and streamed.final_output.strip()


async def test_function_call_round_trip_on_the_wire(tool_server):
    server = tool_server
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}, "strict": True}
    first = await create(server, {"input": "What is the weather in Paris?", "tools": [tool],
                                  "tool_choice": "required"})
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("fc_")
    assert isinstance(json.loads(calls[0]["arguments"]).get("city"), str)
    Response.model_validate(first)
    second = await create(server, {"previous_response_id": first["id"], "tools": [tool], "input": [
        {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "Sunny, 21 C"}]})
    assert second["output"][-1]["type"] == "message"
    messages = await record_messages(server, second)
    assert messages[-1] == {"role": "tool", "tool_call_id": calls[0]["call_id"], "content": "Sunny, 21 C"}
    status, _, text = await call(server, "POST", "/v1/responses", {"model": "council", "stream": True, "tools": [
        tool], "tool_choice": "required", "parallel_tool_calls": False, "input": "Weather in Rome?"})
    types = [EVENTS.validate_python(data).type for _, data in sse(text)]
    assert types[2:6] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done"]


async def test_openai_agents_function_tool(tool_client):
    agents = _agents(tool_client)
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"Sunny in {city}"

    agent = agents.Agent(name="weather", instructions="Use the tool, then answer.", model="council",
                         tools=[get_weather], model_settings=agents.ModelSettings(tool_choice="required"))
    result = await agents.Runner.run(agent, "What is the weather in Paris?")
    assert seen and isinstance(result.final_output, str)
    streamed = agents.Runner.run_streamed(agent, "What is the weather in Rome?")
    [event async for event in streamed.stream_events()]
    assert len(seen) == 2 and isinstance(streamed.final_output, str)


class City(BaseModel):
    name: str
    country: str


async def test_openai_agents_structured_output(tool_client):
    agents = _agents(tool_client)
    agent = agents.Agent(name="cities", instructions="Name a city.", model="council", output_type=City)
    result = await agents.Runner.run(agent, "The capital of France?")
    assert isinstance(result.final_output, City)
