"""A vanished client costs nothing: on a real ``council serve`` process (the CLI, its defaults), clients that
hang up stop their generations within a second and free their queue slots; a request that outlives
``server.request_timeout_seconds`` gets a 504 and stops too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from bench.common import free_port, running_server

pytestmark = pytest.mark.slow
LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]


@pytest.fixture(scope="module")
def live_server(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    home = tmp_path_factory.mktemp("disconnect") / "home"
    with running_server(home, f'[model]\nsource = "{base_model_dir}"\n', port):
        yield port


async def _pending(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
        return (await resp.json())["queue"]["pending"]


async def _hang_up_after(port: int, seconds: float, stream: bool) -> None:
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(seconds):
                async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                        json={"messages": LONG, "max_tokens": 128, "stream": stream}) as resp:
                    await resp.read()
        except TimeoutError:
            pass  # leaving the block closes the connection: the client is gone


async def test_clients_that_hang_up_free_their_slots_within_a_second(live_server):
    port = live_server
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_hang_up_after(port, 0.5, stream=i % 2 == 1) for i in range(6)))
        gone = time.perf_counter()
        freed = None
        while time.perf_counter() - gone < 10:
            if await _pending(session, port) == 0:
                freed = time.perf_counter() - gone
                break
            await asyncio.sleep(0.02)
        assert freed is not None and freed <= 1.0, f"slots freed after {freed} s"
        started = time.perf_counter()
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                "model": "local/smollm2", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say hi."}]}) as resp:
            assert resp.status == 200
        waited = time.perf_counter() - started
        print(f"disconnect: 6 slots freed {freed:.2f} s after the hang-ups; next request {waited:.2f} s")  # -s
        assert waited < 5.0, f"the next request waited {waited:.1f} s behind generations for nobody"


async def test_request_timeout_answers_504_and_stops_the_work(aiohttp_server, make_settings, base_model_dir):
    from council.server.app import create_app

    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {},
                                "server.request_timeout_seconds": 0.5})
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(f"http://127.0.0.1:{server.port}/v1/chat/completions",
                                json={"messages": LONG, "max_tokens": 128}) as resp:
            body = await resp.json()
        assert resp.status == 504 and body["error"]["code"] == "request_timeout"
        assert time.perf_counter() - started < 3.0
        for _ in range(50):
            if await _pending(session, server.port) == 0:
                break
            await asyncio.sleep(0.02)
        assert await _pending(session, server.port) == 0


async def test_a_head_timeout_leaves_no_orphan_in_the_queue(aiohttp_server, make_settings, base_model_dir):
    """Agent-0 timing out (``council.head_timeout_seconds``) cancels its local generation: the next request
    does not wait behind work nobody will read."""
    from council.server.app import create_app

    settings = make_settings(**{"model.source": str(base_model_dir), "council.heads": {},
                                "council.head_timeout_seconds": 1.5})
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        async with session.post(url, json={"messages": LONG, "max_tokens": 128}) as resp:
            assert resp.status == 503  # every model failed: Agent-0 timed out
        for _ in range(50):
            if await _pending(session, server.port) == 0:
                break
            await asyncio.sleep(0.02)
        assert await _pending(session, server.port) == 0
        async with session.post(url, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                                           "model": "local/smollm2"}) as resp:
            assert resp.status == 200  # behind an orphan (~8 s of decoding left) it would time out too
