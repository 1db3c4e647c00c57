"""The monitoring window's rollback decision against a small real aiohttp server whose /health we control."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from deploy.monitor import ServerClient, Thresholds, confirm_adapter, judge, watch

VERSION = "20250101-010101-aaaaaa"


@dataclass
class FakeServer:
    """What /health reports; /v1/chat/completions counts as traffic in the window."""

    adapter: str | None = VERSION
    requests: int = 0
    successes: int = 0
    p95: float | None = None
    chat_status: int = 200
    token: str = ""
    chats: list[dict[str, Any]] = field(default_factory=list)
    reloads: int = 0

    def health(self) -> dict[str, Any]:
        rate = round(self.successes / self.requests, 4) if self.requests else None
        return {"status": "ok", "adapter": self.adapter, "adapter_error": None,
                "window": {"since": 1.0, "requests": self.requests, "success_rate": rate,
                           "p95_latency_ms": self.p95}}

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            return web.json_response(self.health())

        async def reload(request: web.Request) -> web.Response:
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": {"message": "bad token"}}, status=401)
            self.reloads += 1
            return web.json_response(self.health())

        async def chat(request: web.Request) -> web.Response:
            self.chats.append(await request.json())
            self.requests += 1
            self.successes += self.chat_status == 200
            self.p95 = 120.0
            return web.json_response({"choices": []}, status=self.chat_status)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_post("/admin/reload", reload)
        app.router.add_post("/v1/chat/completions", chat)
        return app


LIMITS = Thresholds(min_requests=5, min_success_rate=0.85, max_p95_latency_ms=1000)


async def run_watch(server, window=1.0, sample=0.2, **kwargs):
    client = ServerClient(f"http://127.0.0.1:{server.port}", kwargs.pop("api_key", ""), timeout=2)
    return await asyncio.to_thread(watch, client, VERSION, window, sample, LIMITS, **kwargs)


def test_judge_thresholds():
    assert judge({"requests": 4, "success_rate": 0.0, "p95_latency_ms": 9e9}, LIMITS) is None
    assert "success rate 0.80" in judge({"requests": 5, "success_rate": 0.8, "p95_latency_ms": 10}, LIMITS)
    assert "p95 latency 1500" in judge({"requests": 9, "success_rate": 1.0, "p95_latency_ms": 1500}, LIMITS)
    assert judge({"requests": 9, "success_rate": 0.9, "p95_latency_ms": 999}, LIMITS) is None


async def test_error_rate_triggers_rollback(aiohttp_server):
    fake = FakeServer(requests=10, successes=6, p95=200.0)
    result = await run_watch(await aiohttp_server(fake.app()))
    assert result.decision == "rollback"
    assert "success rate 0.60 < 0.85" in result.reason
    assert result.requests == 10 and result.success_rate == 0.6


async def test_latency_triggers_rollback(aiohttp_server):
    fake = FakeServer(requests=6, successes=6, p95=2500.0)
    result = await run_watch(await aiohttp_server(fake.app()))
    assert result.decision == "rollback" and "p95 latency 2500 ms" in result.reason


async def test_healthy_window_keeps_candidate(aiohttp_server):
    fake = FakeServer(requests=20, successes=19, p95=300.0)
    result = await run_watch(await aiohttp_server(fake.app()), window=0.6, sample=0.2)
    assert result.decision == "keep" and result.reason.startswith("healthy: 20 requests")
    assert len(result.samples) >= 3  # sampled through the whole window, the last one at its end
    assert all(s["adapter"] == VERSION for s in result.samples)


async def test_no_traffic_keeps_candidate_and_says_so(aiohttp_server):
    fake = FakeServer()
    result = await run_watch(await aiohttp_server(fake.app()), window=0.4)
    assert result.decision == "keep"
    assert "only 0 request(s)" in result.reason and result.probes_sent == 0


async def test_probes_fill_an_idle_window(aiohttp_server):
    fake = FakeServer(token="sekret")
    server = await aiohttp_server(fake.app())
    result = await run_watch(server, window=0.4, probes=["What is 2 + 2?", "Hi"], probe_model="council",
                             api_key="sekret")
    assert result.probes_sent == 5 and result.probe_failures == 0
    assert [c["messages"][0]["content"] for c in fake.chats[:3]] == ["What is 2 + 2?", "Hi", "What is 2 + 2?"]
    assert fake.chats[0]["model"] == "council" and fake.chats[0]["temperature"] == 0
    assert result.decision == "keep" and result.requests == 5


async def test_failing_probes_trigger_rollback(aiohttp_server):
    fake = FakeServer(chat_status=500)
    result = await run_watch(await aiohttp_server(fake.app()), window=1.0, probes=["Hi"])
    assert result.probe_failures == 5
    assert result.decision == "rollback" and "success rate 0.00" in result.reason


async def test_server_dying_mid_window_triggers_rollback(aiohttp_server):
    fake = FakeServer()
    server = await aiohttp_server(fake.app())

    async def kill_soon() -> None:
        await asyncio.sleep(0.3)
        await server.close()

    killer = asyncio.create_task(kill_soon())
    result = await run_watch(server, window=5.0, sample=0.2, down_after=2)
    await killer
    assert result.decision == "rollback" and "stopped answering /health" in result.reason
    assert result.samples[0]["adapter"] == VERSION
    assert [s["reachable"] for s in result.samples[-2:]] == [False, False]


async def test_server_serving_another_adapter_triggers_rollback(aiohttp_server):
    fake = FakeServer(adapter=None)  # e.g. the server could not load the candidate and kept the base
    result = await run_watch(await aiohttp_server(fake.app()))
    assert result.decision == "rollback" and "instead of" in result.reason


@pytest.mark.parametrize("token", ["", "sekret"])
async def test_confirm_adapter_reloads_with_bearer_token(aiohttp_server, token):
    fake = FakeServer(token=token)
    server = await aiohttp_server(fake.app())
    client = ServerClient(f"http://127.0.0.1:{server.port}", token)
    reachable, confirmed, health = await asyncio.to_thread(confirm_adapter, client, VERSION, 1.0)
    assert (reachable, confirmed, fake.reloads) == (True, True, 1)
    reachable, confirmed, _ = await asyncio.to_thread(confirm_adapter, client, "other", 0.3)
    assert (reachable, confirmed) == (True, False)


def test_confirm_adapter_without_server():
    client = ServerClient("http://127.0.0.1:9", timeout=1)
    assert confirm_adapter(client, VERSION, 1.0) == (False, False, None)
    assert client.last_error
