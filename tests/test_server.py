"""The serving core over real HTTP: the embedded model through the official openai client, bad input,
prompt edits, adapter hot swap and overload."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import openai
import pytest

from council.server.app import create_app
from tests.conftest import REPO
from tests.fakes import Script, install_scripted


@pytest.fixture
def prompts_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", folder)
    return folder


@pytest.fixture
def local_settings(make_settings, base_model_dir, prompts_copy):
    return make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "prompts_dir": str(prompts_copy),
                            "model.max_new_tokens": 24})


@pytest.fixture
async def local_server(aiohttp_server, local_settings):
    return await aiohttp_server(create_app(local_settings))


def client_for(server, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=api_key, max_retries=0)


async def test_openai_client_non_stream_and_stream(local_server):
    client = client_for(local_server)
    models = await client.models.list()
    assert "council" in [m.id for m in models.data]
    reply = await client.chat.completions.create(
        model="council", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=16)
    assert "Paris" in reply.choices[0].message.content
    council = reply.model_extra["council"]
    assert 0.0 < council["confidence"] <= 1.0 and council["record_id"].startswith("rec_")
    stream = await client.chat.completions.create(
        model="council", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=16,
        stream=True)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "Paris" in "".join(pieces) and len(pieces) > 3


async def test_raw_stream_ends_with_done_and_carries_headers(local_server, aiohttp_client):
    client = await aiohttp_client(local_server)
    resp = await client.post("/v1/chat/completions", json={
        "model": "local/smollm2", "stream": True, "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}]})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["x-council-record-id"].startswith("rec_")
    assert "x-council-confidence" not in resp.headers  # live: sent before the confidence is known
    events = [line for line in (await resp.text()).splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["council"]["record_id"] == resp.headers["x-council-record-id"]
    assert 0.0 <= last["council"]["confidence"] <= 1.0 and last["council"]["route"][:2] == ["agent0", "stream"]
    record = await (await client.get(f"/v1/records/{last['council']['record_id']}")).json()
    assert record["confidence"] == pytest.approx(last["council"]["confidence"], abs=1e-4)  # durable before [DONE]
    assert record["answer"] == "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                                       for e in events[:-1])


BAD_BODIES = [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"model": "council"}).encode(), 400, "missing_field"),
    (json.dumps({"model": "council", "messages": []}).encode(), 400, "invalid_value"),
    (json.dumps({"model": "council", "messages": "hi"}).encode(), 400, "invalid_type"),
    (json.dumps({"model": 7, "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "invalid_type"),
    (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "model_not_found"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400, "invalid_value"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).encode(), 400, "invalid_value"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}).encode(), 400, "invalid_type"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}).encode(), 400, "invalid_value"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400, "invalid_type"),
]


async def test_bad_input_gets_openai_errors_and_server_keeps_serving(aiohttp_client, make_settings):
    install_scripted({"*": Script("fine", 0.95)})
    settings = make_settings(**{"council.agent0": "scripted/a", "council.heads": {}, "server.max_body_bytes": 4096})
    client = await aiohttp_client(create_app(settings))
    for body, status, code in BAD_BODIES:
        resp = await client.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
        payload = await resp.json()
        assert resp.status == status, (body, payload)
        assert payload["error"]["code"] == code and payload["error"]["message"] and payload["error"]["type"]
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 10_000}]})
    resp = await client.post("/v1/chat/completions", data=big)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"
    ok = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert ok.status == 200 and (await ok.json())["choices"][0]["message"]["content"] == "fine"


async def test_bearer_auth_guards_everything_but_health(aiohttp_client, make_settings):
    install_scripted({"*": Script("fine", 0.95)})
    settings = make_settings(**{"council.agent0": "scripted/a", "council.heads": {}, "server.api_key": "s3cret"})
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/health")).status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        resp = await client.get("/v1/models", headers=headers)
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"
        assert "s3cret" not in await resp.text()
    resp = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert resp.status == 200


def _echo_system(model: str, messages: list[dict]) -> Script:
    return Script(messages[0]["content"], 0.95)


async def test_template_edit_applies_and_broken_template_keeps_last_good(aiohttp_client, make_settings, prompts_copy):
    install_scripted(respond=_echo_system)
    settings = make_settings(**{"council.agent0": "scripted/echo", "council.heads": {},
                                "prompts_dir": str(prompts_copy)})
    client = await aiohttp_client(create_app(settings))
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    first = await (await client.post("/v1/chat/completions", json=ask)).json()
    assert first["choices"][0]["message"]["content"].startswith("You are a helpful AI assistant")
    template = prompts_copy / "system.j2"
    template.write_text("Version two speaking.")
    os.utime(template, ns=(1, 10**18))
    second = await (await client.post("/v1/chat/completions", json=ask)).json()
    assert second["choices"][0]["message"]["content"] == "Version two speaking."
    template.write_text("Broken {% if %} template")
    os.utime(template, ns=(1, 2 * 10**18))
    third = await client.post("/v1/chat/completions", json=ask)
    assert third.status == 200 and (await third.json())["choices"][0]["message"]["content"] == "Version two speaking."
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded" and "system.j2:1" in health["prompt_errors"]["system.j2"]


def _train_tiny_adapter(base_model_dir: Path, folder: Path) -> None:
    """A real LoRA adapter, a few steps on one sentence: enough to change greedy output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt + "Zanzibar Zanzibar Zanzibar.", return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(12):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)


async def test_adapter_link_change_is_served_without_restart(local_server, local_settings, base_model_dir,
                                                             aiohttp_client):
    client = await aiohttp_client(local_server)
    ask = {"model": "local/smollm2", "max_tokens": 8,
           "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    before = await (await client.post("/v1/chat/completions", json=ask)).json()
    health = await (await client.get("/health")).json()
    assert health["adapter"] is None and health["window"]["requests"] == 1
    loras = local_settings.paths.loras
    await asyncio.to_thread(_train_tiny_adapter, base_model_dir, loras / "v1")
    (loras / "current").symlink_to("v1")
    for _ in range(40):
        health = await (await client.get("/health")).json()
        if health["adapter"] == "v1":
            break
        await asyncio.sleep(0.1)
    assert health["adapter"] == "v1" and health["window"]["adapter"] == "v1"
    assert health["window"]["requests"] == 0  # the window restarts when the adapter changes
    after = await (await client.post("/v1/chat/completions", json=ask)).json()
    assert (await (await client.get("/health")).json())["window"]["requests"] == 1
    assert after["council"]["adapter"] == "v1"
    assert "Zanzibar" in after["choices"][0]["message"]["content"]
    assert after["choices"][0]["message"]["content"] != before["choices"][0]["message"]["content"]
    (loras / "current").unlink()  # back to the base model: the watcher follows with no request and no reload
    for _ in range(40):
        health = await (await client.get("/health")).json()
        if health["adapter"] is None:
            break
        await asyncio.sleep(0.1)
    assert health["adapter"] is None and health["window"]["adapter"] is None
    reloaded = await (await client.post("/admin/reload")).json()
    assert reloaded["adapter"] is None


async def test_overload_returns_503_not_a_hang(aiohttp_client, make_settings, base_model_dir):
    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {}, "model.max_queue": 1})
    client = await aiohttp_client(create_app(settings))
    ask = {"model": "local/smollm2", "max_tokens": 24,
           "messages": [{"role": "user", "content": "Tell me a story about a dog."}]}
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=ask) for _ in range(4)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) >= 1 and 503 in statuses
    rejected = next(r for r in responses if r.status == 503)
    assert (await rejected.json())["error"]["code"] == "overloaded" and rejected.headers["Retry-After"]


async def test_store_false_answers_without_recording(local_server):
    """``store: false`` (OpenAI's "keep this output"): the answer comes, and nothing of it is kept: no record to
    recall, page, give feedback on or harvest; streamed too. Unset or true records as always."""
    client = client_for(local_server)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    kept = await client.chat.completions.create(model="council", messages=question, max_tokens=8, store=True)
    skipped = await client.chat.completions.create(model="council", messages=question, max_tokens=8, store=False)
    assert "Paris" in skipped.choices[0].message.content
    assert kept.model_extra["council"]["stored"] is True and skipped.model_extra["council"]["stored"] is False
    stream = await client.chat.completions.create(model="council", messages=question, max_tokens=8, store=False,
                                                  stream=True)
    assert "Paris" in "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    http = client.with_options(max_retries=0)
    page = await http.get("/records", cast_to=object)
    assert [r["id"] for r in page["data"]] == [kept.model_extra["council"]["record_id"]]
    with pytest.raises(openai.NotFoundError):
        await http.post("/feedback", cast_to=object,
                        body={"record_id": skipped.model_extra["council"]["record_id"], "thumbs": "down"})
