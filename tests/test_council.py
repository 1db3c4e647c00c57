"""Council routing, memory, feedback and metrics through the real HTTP app with scripted providers."""

from __future__ import annotations

import pytest

from council.server.app import create_app
from tests.fakes import Script, install_scripted

ASK = {"messages": [{"role": "user", "content": "What is the boiling point of water at sea level?"}]}
HEADS = {"math": "scripted/math", "knowledge": "scripted/knowledge"}


def settings_with(make_settings, **extra):
    return make_settings(**{"council.agent0": "scripted/agent0", "council.heads": HEADS, **extra})


async def chat(client, body=ASK, status=200):
    resp = await client.post("/v1/chat/completions", json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def test_confident_agent0_answers_alone(aiohttp_client, make_settings):
    provider = install_scripted({"agent0": Script("100 C.", 0.95), "*": Script("head", 0.99)})
    client = await aiohttp_client(create_app(settings_with(make_settings)))
    data = await chat(client)
    assert data["choices"][0]["message"]["content"] == "100 C."
    assert data["council"]["route"] == ["agent0", "winner:agent0"] and data["council"]["success"] is True
    assert [model for model, _ in provider.calls] == ["agent0"]


async def test_unsure_agent0_escalates_to_most_confident_head(aiohttp_client, make_settings):
    provider = install_scripted({"agent0": Script("maybe 90", 0.4), "math": Script("100 C", 0.8),
                                 "knowledge": Script("100 degrees Celsius", 0.9)})
    client = await aiohttp_client(create_app(settings_with(make_settings)))
    data = await chat(client)
    assert data["choices"][0]["message"]["content"] == "100 degrees Celsius"
    assert data["council"]["route"] == ["agent0", "math", "knowledge", "winner:knowledge"]
    assert data["council"]["confidence"] == pytest.approx(0.9, abs=1e-3)
    assert sorted(model for model, _ in provider.calls) == ["agent0", "knowledge", "math"]
    system_prompts = {model: msgs[0]["content"] for model, msgs in provider.calls}
    assert system_prompts["math"].startswith("You are a careful mathematician")


async def test_tie_goes_to_agent0_then_configured_order(aiohttp_client, make_settings):
    install_scripted({"agent0": Script("a0", 0.5), "math": Script("m", 0.5), "knowledge": Script("k", 0.5)})
    client = await aiohttp_client(create_app(settings_with(make_settings)))
    data = await chat(client)
    assert data["choices"][0]["message"]["content"] == "a0" and data["council"]["success"] is False


async def test_failing_head_falls_back_and_all_failing_is_503(aiohttp_client, make_settings):
    install_scripted({"agent0": Script("unsure", 0.3), "math": Script(error="math backend down"),
                      "backup": Script("backup says 100 C", 0.85), "knowledge": Script(error="down too")})
    settings = settings_with(make_settings, **{"council.fallbacks": {"scripted/math": ["scripted/backup"]}})
    client = await aiohttp_client(create_app(settings))
    data = await chat(client)
    assert data["choices"][0]["message"]["content"] == "backup says 100 C"
    assert data["council"]["model"] == "scripted/backup" and "knowledge" in data["council"]["skipped"]

    install_scripted({"*": Script(error="everything is down")})
    failed = await chat(client, status=503)
    assert failed["error"]["code"] == "models_unavailable" and "every" in failed["error"]["message"]


async def test_no_logprobs_falls_back_to_self_rating(aiohttp_client, make_settings):
    def respond(model, messages):
        if "CONFIDENCE" in messages[-1]["content"]:
            return Script("CONFIDENCE: 8", None)
        return Script("100 C", None)

    install_scripted(respond=respond)
    client = await aiohttp_client(create_app(settings_with(make_settings, **{"council.heads": {}})))
    data = await chat(client)
    assert data["council"]["confidence"] == pytest.approx(0.8) and data["council"]["success"] is True


async def test_memory_context_feedback_and_restart(aiohttp_client, make_settings):
    provider = install_scripted({"agent0": Script("Water boils at 100 degrees Celsius.", 0.95)})
    settings = settings_with(make_settings, **{"council.heads": {}})
    client = await aiohttp_client(create_app(settings))
    first = await chat(client)
    record_id = first["council"]["record_id"]
    second = await chat(client, {"messages": [{"role": "user", "content": "At sea level, what is water's boiling point?"}]})
    assert second["council"]["context_ids"] == [record_id]
    assert "Water boils at 100 degrees Celsius." in provider.calls[-1][1][0]["content"]

    resp = await client.post("/v1/feedback", json={"record_id": record_id, "thumbs": "down",
                                                   "correction": "100 °C (212 °F)."})
    assert resp.status == 200 and (await resp.json())["success"] is False
    again = await client.post("/v1/feedback", json={"record_id": record_id, "rating": 1})
    assert again.status == 200
    stored = await (await client.get(f"/v1/records/{record_id}")).json()
    assert stored["success"] is False and stored["feedback"]["correction"] == "100 °C (212 °F)."
    assert stored["feedback"]["rating"] == 1 and stored["failure_source"] == "correction"
    third = await chat(client, {"messages": [{"role": "user", "content": "What's water's boiling point at sea level?"}]})
    # a correction is knowledge at once: the corrected exchange leads the context, with the user's answer
    assert third["council"]["context_ids"][0] == record_id
    assert "The answer is 100 °C (212 °F)." in provider.calls[-1][1][0]["content"]

    await client.close()
    client = await aiohttp_client(create_app(settings))
    kept = await (await client.get(f"/v1/records/{record_id}")).json()
    assert kept["feedback"]["correction"] == "100 °C (212 °F)." and kept["answer"] == first["choices"][0]["message"]["content"]


async def test_feedback_bad_input(aiohttp_client, make_settings):
    install_scripted({"*": Script("x", 0.9)})
    client = await aiohttp_client(create_app(settings_with(make_settings, **{"council.heads": {}})))
    record_id = (await chat(client))["council"]["record_id"]
    cases = [({"record_id": "rec_missing", "thumbs": "down"}, 404), ({"record_id": record_id, "thumbs": "sideways"}, 400),
             ({"record_id": record_id, "rating": 9}, 400), ({"record_id": record_id}, 400), ({"thumbs": "up"}, 400)]
    for body, status in cases:
        resp = await client.post("/v1/feedback", json=body)
        assert resp.status == status and "error" in await resp.json(), body
    assert (await client.post("/v1/feedback", data=b"{oops")).status == 400
    assert (await client.get("/v1/records/rec_missing")).status == 404


async def test_metrics_and_window(aiohttp_client, make_settings):
    install_scripted({"agent0": Script("sure", 0.95)})
    client = await aiohttp_client(create_app(settings_with(make_settings, **{"council.heads": {}})))
    for _ in range(3):
        await chat(client)
    health = await (await client.get("/health")).json()
    assert health["window"]["requests"] == 3 and health["window"]["success_rate"] == 1.0
    assert health["window"]["p95_latency_ms"] > 0 and health["memory"]["records"] == 3
    text = await (await client.get("/metrics")).text()
    assert 'council_requests_total{head="agent0"} 3.0' in text
    assert "council_memory_records 3.0" in text and "council_confidence_bucket" in text
