"""Shared helpers for benchmarks: a council server subprocess on a free port and a bounded load loop."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, config: str, port: int, log_level: str = "WARNING") -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    (home / "council.toml").write_text(config)
    env = dict(os.environ, PYTHONPATH=str(REPO), COUNCIL_HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.Popen([sys.executable, "-m", "council.cli", "--log-level", log_level, "serve",
                             "--port", str(port)], env=env, cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline:  # the port opens at once; /readyz says 200 once the models have loaded
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return proc
        except (OSError, urllib.error.URLError):
            if proc.poll() is not None:
                raise RuntimeError("server exited during start") from None
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server was not ready in 120 s")


@contextmanager
def running_server(home: Path, config: str, port: int, log_level: str = "WARNING") -> Iterator[subprocess.Popen]:
    """``start_server`` for the block's duration; stopped (SIGTERM, then SIGKILL after 30 s) on exit."""
    proc = start_server(home, config, port, log_level)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def run_load(call: Callable[[int], Awaitable[None]], clients: int, total: int) -> dict[str, float]:
    """``total`` calls spread over ``clients`` concurrent workers; latency percentiles and throughput."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99) - 1],
            "rps": len(latencies) / elapsed}


def http_caller(session: aiohttp.ClientSession, url: str, body_for: Callable[[int], dict]) -> Callable:
    async def call(i: int) -> None:
        async with session.post(url, json=body_for(i)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
            await resp.read()

    return call


def print_table(title: str, rows: list[tuple[str, dict[str, float], dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'clients':>8} | {'ours p50':>9} {'base p50':>9} {'added':>8} | {'ours p99':>9} {'base p99':>9} | "
          f"{'ours rps':>9} {'base rps':>9} {'ratio':>6}")
    for label, ours, base in rows:
        print(f"{label:>8} | {ours['p50']:9.2f} {base['p50']:9.2f} {ours['p50'] - base['p50']:8.2f} | "
              f"{ours['p99']:9.2f} {base['p99']:9.2f} | {ours['rps']:9.1f} {base['rps']:9.1f} "
              f"{ours['rps'] / base['rps']:6.2f}")
