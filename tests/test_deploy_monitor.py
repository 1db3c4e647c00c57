"""The monitoring window's rollback decision against a small real aiohttp server whose /health we control,
the pre-swap baseline it is judged against, and the server-side window (a real ``ServerStats``, and a real
Council app with scripted models) that counts only the requests the live adapter answered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from council.server.app import create_app
from council.server.stats import ServerStats
from deploy.monitor import (
    LATENCY_FLOOR_MS,
    Baseline,
    ServerClient,
    Thresholds,
    confirm_adapter,
    judge,
    measure_baseline,
    watch,
)
from tests.fakes import Script, install_scripted

VERSION = "20250101-010101-aaaaaa"


@dataclass
class FakeServer:
    """What /health reports; /v1/chat/completions counts as traffic in the window: answered by the adapter
    (``requests``/``successes``) unless ``in_scope`` is False, then by the base model (``served`` only)."""

    adapter: str | None = VERSION
    requests: int = 0
    successes: int = 0
    p95: float | None = None
    base_requests: int = 0  # answered by the base model (outside the adapter's scope) or a remote one
    base_successes: int = 0
    in_scope: bool = True
    chat_p95: float = 120.0
    chat_status: int = 200
    token: str = ""
    chats: list[dict[str, Any]] = field(default_factory=list)
    reloads: int = 0

    def health(self) -> dict[str, Any]:
        def figures(requests: int, successes: int, p95: float | None) -> dict[str, Any]:
            rate = round(successes / requests, 4) if requests else None
            return {"requests": requests, "success_rate": rate, "p95_latency_ms": p95 if requests else None}

        served = figures(self.requests + self.base_requests, self.successes + self.base_successes, self.p95)
        return {"status": "ok", "adapter": self.adapter, "adapter_error": None,
                "window": {"since": 1.0, "adapter": self.adapter, "served": served,
                           **figures(self.requests, self.successes, self.p95)}}

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
            if self.in_scope:
                self.requests += 1
                self.successes += self.chat_status == 200
            else:
                self.base_requests += 1
                self.base_successes += self.chat_status == 200
            self.p95 = self.chat_p95
            return web.json_response({"choices": []}, status=self.chat_status)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_post("/admin/reload", reload)
        app.router.add_post("/v1/chat/completions", chat)
        return app


LIMITS = Thresholds(min_requests=5, min_success_rate=0.85, max_p95_latency_ms=1000)  # absolute limits set
PRE_SWAP = Baseline(requests=40, success_rate=0.9, p95_latency_ms=400.0)


async def run_watch(server, window=1.0, sample=0.2, limits=LIMITS, **kwargs):
    client = ServerClient(f"http://127.0.0.1:{server.port}", kwargs.pop("api_key", ""), timeout=2)
    return await asyncio.to_thread(watch, client, VERSION, window, sample, limits, **kwargs)


def test_judge_thresholds():
    assert judge({"requests": 4, "success_rate": 0.0, "p95_latency_ms": 9e9}, LIMITS) is None
    assert "success rate 0.80" in judge({"requests": 5, "success_rate": 0.8, "p95_latency_ms": 10}, LIMITS)
    assert "p95 latency 1500" in judge({"requests": 9, "success_rate": 1.0, "p95_latency_ms": 1500}, LIMITS)
    assert judge({"requests": 9, "success_rate": 0.9, "p95_latency_ms": 999}, LIMITS) is None


def test_judge_against_the_pre_swap_baseline():
    relative = Thresholds(min_requests=5)  # the defaults: absolute limits off, 0.15 drop, 3x p95
    assert relative.min_success_rate == 0 and relative.max_p95_latency_ms == 0
    why = judge({"requests": 10, "success_rate": 0.7, "p95_latency_ms": 500}, relative, PRE_SWAP)
    assert "success rate 0.70 fell more than 0.15 below the pre-swap 0.90" in why
    assert judge({"requests": 10, "success_rate": 0.8, "p95_latency_ms": 1200}, relative, PRE_SWAP) is None
    why = judge({"requests": 10, "success_rate": 0.8, "p95_latency_ms": 1300}, relative, PRE_SWAP)
    assert "p95 latency 1300 ms > 1250 ms (3.0x the pre-swap 400 ms + 50)" in why
    assert judge({"requests": 4, "success_rate": 0.0, "p95_latency_ms": 9e9}, relative, PRE_SWAP) is None
    tiny = Baseline(requests=30, success_rate=1.0, p95_latency_ms=0.5)  # the floor keeps it from flaking
    assert judge({"requests": 9, "success_rate": 1.0, "p95_latency_ms": LATENCY_FLOOR_MS}, relative, tiny) is None
    assert judge({"requests": 9, "success_rate": 1.0, "p95_latency_ms": LATENCY_FLOOR_MS + 5}, relative, tiny)


def test_slow_hardware_without_regression_is_not_rolled_back():
    """The figures the old absolute defaults (0.85, 1000 ms) rolled back are fine when the base did as badly."""
    slow = {"requests": 10, "success_rate": 0.7, "p95_latency_ms": 6000.0}
    old_absolute = Thresholds(min_requests=5, min_success_rate=0.85, max_p95_latency_ms=1000)
    assert judge(slow, old_absolute) is not None
    cpu = Baseline(requests=30, success_rate=0.75, p95_latency_ms=5000.0)
    assert judge(slow, Thresholds(min_requests=5), cpu) is None
    assert "fell more than" in judge({**slow, "success_rate": 0.55}, Thresholds(min_requests=5), cpu)


def test_without_baseline_only_the_absolute_limits_apply():
    bad = {"requests": 10, "success_rate": 0.1, "p95_latency_ms": 9e9}
    skipped = Baseline(skipped="only 0 request(s) served before the swap")
    assert judge(bad, Thresholds(), None) is None and judge(bad, Thresholds(), skipped) is None
    assert "success rate 0.10 < 0.85" in judge(bad, LIMITS, skipped)  # an absolute limit the user set


async def test_baseline_is_the_served_figures_before_the_swap(aiohttp_server):
    fake = FakeServer(adapter="old", base_requests=30, base_successes=27, p95=250.0)
    client = ServerClient(f"http://127.0.0.1:{(await aiohttp_server(fake.app())).port}", timeout=2)
    baseline = await asyncio.to_thread(measure_baseline, client, 5, ["Hi"], "council", 16)
    assert (baseline.requests, baseline.success_rate, baseline.p95_latency_ms) == (30, 0.9, 250.0)
    assert baseline.adapter == "old" and baseline.skipped is None and baseline.probes_sent == 0 and not fake.chats


async def test_probes_measure_the_baseline_of_an_idle_server(aiohttp_server):
    fake = FakeServer(adapter="old", chat_p95=80.0)
    client = ServerClient(f"http://127.0.0.1:{(await aiohttp_server(fake.app())).port}", timeout=2)
    baseline = await asyncio.to_thread(measure_baseline, client, 5, ["What is 2 + 2?", "Hi"], "council", 16)
    assert (baseline.requests, baseline.success_rate, baseline.p95_latency_ms) == (5, 1.0, 80.0)
    assert baseline.probes_sent == 5 and baseline.skipped is None
    assert [c["messages"][0]["content"] for c in fake.chats[:3]] == ["What is 2 + 2?", "Hi", "What is 2 + 2?"]


async def test_no_baseline_says_why(aiohttp_server):
    client = ServerClient(f"http://127.0.0.1:{(await aiohttp_server(FakeServer(adapter='old').app())).port}")
    idle = await asyncio.to_thread(measure_baseline, client, 5)
    assert idle.requests == 0 and "only 0 request(s) served before the swap" in idle.skipped and "probe" in idle.skipped
    down = await asyncio.to_thread(measure_baseline, ServerClient("http://127.0.0.1:9", timeout=1), 5)
    assert down.skipped.startswith("no server answered /health before the swap")


async def test_regression_against_baseline_rolls_back(aiohttp_server):
    fake = FakeServer(requests=10, successes=7, p95=300.0)
    result = await run_watch(await aiohttp_server(fake.app()), limits=Thresholds(), baseline=PRE_SWAP)
    assert result.decision == "rollback" and "below the pre-swap 0.90" in result.reason
    fake = FakeServer(requests=10, successes=9, p95=300.0)
    result = await run_watch(await aiohttp_server(fake.app()), window=0.4, limits=Thresholds(), baseline=PRE_SWAP)
    assert result.decision == "keep" and "(pre-swap: success rate 0.9, p95 400.0 ms)" in result.reason
    fake = FakeServer(requests=10, successes=2, p95=9000.0)
    result = await run_watch(await aiohttp_server(fake.app()), window=0.2, limits=Thresholds(),
                             baseline=Baseline(skipped="no server answered /health before the swap (x)"))
    assert result.decision == "keep" and "relative checks skipped: no server answered" in result.reason


async def test_answers_the_base_model_gave_are_not_judged(aiohttp_server):
    """Every probe falls outside the adapter's scope and fails on the base model: 0 adapter requests."""
    fake = FakeServer(in_scope=False, chat_status=500)
    result = await run_watch(await aiohttp_server(fake.app()), window=0.6, sample=0.1, probes=["Hi"],
                             baseline=PRE_SWAP)
    assert result.decision == "keep" and result.requests == 0 and result.served == 5
    assert "only 0 request(s) answered by" in result.reason and "5 served in all" in result.reason
    assert result.probes_sent == 5  # topped up to min_requests served once, not again every sample
    assert fake.health()["window"]["served"]["success_rate"] == 0.0


def test_stats_window_counts_only_what_the_live_adapter_answered():
    stats = ServerStats()
    stats.adapter_live("v1")
    for _ in range(3):  # outside v1's scope: the base model answered, slowly and badly
        stats.observe("local", False, 0.2, 5000.0, None, escalated=False, adapter=None, live="v1")
    stats.observe("local", True, 0.9, 30.0, None, escalated=False, adapter="v0", live="v1")  # began before the swap
    for _ in range(2):
        stats.observe("local", True, 0.9, 10.0, None, escalated=False, adapter="v1", live="v1")
    window = stats.window.to_dict()
    assert (window["adapter"], window["requests"], window["success_rate"]) == ("v1", 2, 1.0)
    assert window["p95_latency_ms"] == 10.0
    assert window["served"]["requests"] == 6 and window["served"]["success_rate"] == 0.5
    assert window["served"]["p95_latency_ms"] == 5000.0
    assert stats.registry.get_sample_value("council_window_requests") == 2
    assert stats.registry.get_sample_value("council_window_served_requests") == 6
    stats.observe("local", True, 0.9, 12.0, None, escalated=False, adapter="v2", live="v2")  # v2 went live
    window = stats.window.to_dict()
    assert (window["adapter"], window["requests"], window["served"]["requests"]) == ("v2", 1, 1)
    stats.observe("agent0", False, 0.3, 20.0, None, escalated=False, adapter=None, live=None)  # back to the base
    window = stats.window.to_dict()  # no adapter live: the window counts every request
    assert window["requests"] == window["served"]["requests"] == 1 and window["success_rate"] == 0.0


async def test_real_server_baseline_from_probes(aiohttp_server, make_settings):
    """A real Council app (scripted models): the probes reach the chat path and /health's served figures."""
    install_scripted({"agent0": Script("4", 0.95)})
    settings = make_settings(**{"council.agent0": "scripted/agent0", "council.heads": {}})
    client = ServerClient(f"http://127.0.0.1:{(await aiohttp_server(create_app(settings))).port}", timeout=30)
    for _ in range(100):
        if (await asyncio.to_thread(client.health) or {}).get("status") == "ok":
            break
        await asyncio.sleep(0.1)
    baseline = await asyncio.to_thread(measure_baseline, client, 3, ["What is 2 + 2?"], "council", 8)
    assert baseline.probes_sent == 3 and baseline.probe_failures == 0 and baseline.skipped is None
    assert (baseline.requests, baseline.success_rate, baseline.adapter) == (3, 1.0, None)
    assert baseline.p95_latency_ms > 0
    window = (await asyncio.to_thread(client.health))["window"]
    assert window["requests"] == window["served"]["requests"] == 3  # no adapter live: the window counts all


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


async def test_failing_probes_trigger_rollback_even_as_the_window_ends(aiohttp_server):
    """Probes slower than the window (a loaded CPU) still get one last sample, so they are judged."""
    fake = FakeServer(chat_status=500)
    result = await run_watch(await aiohttp_server(fake.app()), window=0.0, probes=["Hi"])
    assert result.probes_sent == result.probe_failures == result.requests == 5 and len(result.samples) == 2
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


def test_a_lost_vllm_replica_fails_the_window():
    from deploy.monitor import lost_replicas

    serving = {"url": "http://a:1", "up": True, "adapters": ["v1"], "live_loaded": True, "error": None}
    assert lost_replicas({"engine": {"engine": "vllm", "replicas": [serving]}}) is None
    assert lost_replicas({"engine": {"engine": "local", "queue": {}}}) is None
    down = {**serving, "url": "http://b:2", "up": False}
    why = lost_replicas({"engine": {"engine": "vllm", "replicas": [serving, down]}})
    assert why is not None and "http://b:2" in why and "1 of 2" in why
    forgot = {**serving, "url": "http://c:3", "live_loaded": False}
    assert "http://c:3" in lost_replicas({"engine": {"replicas": [forgot]}})
