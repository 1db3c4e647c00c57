"""A server process killed with SIGKILL mid-burst loses no acknowledged record; a lost index is rebuilt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from bench.common import free_port, start_server
from council.memory.store import MemoryStore

CONFIG = """
providers = { scripted = "tests.fakes:ScriptedLLM" }
[council]
agent0 = "scripted/any"
heads = {}
"""


def _start(home: Path, port: int) -> subprocess.Popen:
    return start_server(home, CONFIG, port)


async def _burst(port: int, acknowledged: list[str], stop_after: float) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.time() + stop_after

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while time.time() < deadline + 5:
                body = {"messages": [{"role": "user", "content": f"client {n} question {i}"}]}
                try:
                    async with session.post(url, json=body) as resp:
                        if resp.status == 200:
                            acknowledged.append((await resp.json())["council"]["record_id"])
                except (aiohttp.ClientError, TimeoutError):
                    return
                i += 1

    await asyncio.gather(*(client(n) for n in range(8)))


@pytest.mark.slow
async def test_sigkill_mid_burst_loses_no_acknowledged_record(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = _start(home, port)
    acknowledged: list[str] = []
    burst = asyncio.create_task(_burst(port, acknowledged, stop_after=3))
    while len(acknowledged) < 20:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    await burst
    assert len(acknowledged) >= 20

    store = MemoryStore.open(home / "memory")
    try:
        missing = [rid for rid in acknowledged if store.get(rid) is None]
        assert missing == [] and store.count() >= len(acknowledged)
    finally:
        store.close()

    (home / "memory" / "index.faiss").unlink(missing_ok=True)
    proc = _start(home, port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                health = await resp.json()
        assert health["memory"]["records"] >= len(acknowledged)
    finally:
        proc.terminate()
        proc.wait(10)
    assert (home / "memory" / "index.faiss").exists()
