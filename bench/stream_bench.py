"""Streaming latency on the embedded SmolLM2 with the README's defaults (``council.stream_mode = "live"``):

1. a real ``council serve`` (config only ``[model] source`` = the converted embedded model), ``POST
   /v1/chat/completions`` at 1 and 8 concurrent clients, streamed (TTFT = the first SSE chunk with non-empty
   ``choices[0].delta.content``, total = ``data: [DONE]``) and not streamed (TTFT = total = the JSON reply;
   that path may also ask the specialist heads when Agent-0 is unsure, as users' plain requests do);
2. the baseline: the same prompts streamed straight through litellm to the in-process engine in this process
   (``local/smollm2``, greedy), at 1 client, run before the server starts so the two never compete.

Distinct prompts within a cell (the same ones in every cell, so later cells may recall earlier exchanges from
memory, as a server in use would); a warm-up request first on each side. Latencies in ms.

    .venv/bin/python -m bench.stream_bench [--requests 8] [--max-tokens 64]

Several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from bench.common import REPO, free_port, running_server  # noqa: E402
from council.core.config import load_settings  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.engine.provider import PROVIDER, register_local_provider, unregister_provider  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "How do bees make honey?",
             "What is a prime number?", "Who wrote Hamlet?", "How far away is the moon?",
             "What does a compiler do?", "Why do cats purr?", "What is photosynthesis?",
             "How does a bicycle stay upright?", "What causes rain?", "What is the boiling point of water?",
             "How many legs does a spider have?", "What is a black hole?", "Why is the sea salty?",
             "What is the largest planet?"]
WARM_UP = [{"role": "user", "content": "Say hello."}]
CLIENTS = (1, 8)


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run_cell(call, clients: int, requests: int) -> dict[str, float]:
    """``requests`` calls over ``clients`` workers; each call returns (ttft, total) in seconds."""
    pending, results = iter(range(requests)), []

    async def worker() -> None:
        for i in pending:
            results.append(await call(i))

    await asyncio.gather(*(worker() for _ in range(clients)))
    ttfts = [1000 * t for t, _ in results]
    totals = [1000 * t for _, t in results]
    return {"ttft_p50": percentile(ttfts, 0.5), "ttft_p95": percentile(ttfts, 0.95),
            "total_p50": percentile(totals, 0.5)}


async def engine_baseline(folder: str, home: Path, requests: int, max_tokens: int) -> dict[str, float]:
    """The engine's own streamed TTFT through litellm, in this process, at 1 client."""
    settings = load_settings(overrides={"home": str(home), "model.source": folder})
    provider = await register_local_provider(settings)

    async def call(i: int, messages=None) -> tuple[float, float]:
        started, ttft = time.perf_counter(), None
        stream = await litellm.acompletion(model=f"{PROVIDER}/smollm2", messages=messages or prompt(i),
                                           stream=True, max_tokens=max_tokens, temperature=0)
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - started
        total = time.perf_counter() - started
        return (total if ttft is None else ttft), total

    try:
        await call(0, WARM_UP)
        return await run_cell(call, 1, requests)
    finally:
        provider.close()
        unregister_provider(PROVIDER, provider)


def server_caller(session: aiohttp.ClientSession, url: str, stream: bool, max_tokens: int):
    async def call(i: int, messages=None) -> tuple[float, float]:
        body = {"model": "council", "messages": messages or prompt(i), "max_tokens": max_tokens}
        if stream:
            body["stream"] = True
        started, ttft = time.perf_counter(), None
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
            if not stream:
                await resp.json()
                total = time.perf_counter() - started
                return total, total
            done = False
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(f"stream error: {chunk['error']}")
                choices = chunk.get("choices") or []
                if ttft is None and choices and (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
            if not done:
                raise RuntimeError("stream ended without data: [DONE]")
        total = time.perf_counter() - started
        return (total if ttft is None else ttft), total

    return call


async def main(requests: int, max_tokens: int) -> None:
    folder = resolve_base_model("", REPO / ".council" / "test-cache" / "models").path
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = await engine_baseline(folder, Path(tmp) / "engine-home", requests, max_tokens)
        config = f'[model]\nsource = "{folder}"\n'
        port = free_port()
        rows: list[tuple[str, int, dict[str, float]]] = [("engine (litellm, in-process)", 1, base)]
        with running_server(Path(tmp) / "home", config, port):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                streamed = server_caller(session, url, True, max_tokens)
                plain = server_caller(session, url, False, max_tokens)
                await streamed(0, WARM_UP)
                await plain(0, WARM_UP)
                for clients in CLIENTS:
                    rows.append(("council streamed (live)", clients, await run_cell(streamed, clients, requests)))
                    rows.append(("council not streamed", clients, await run_cell(plain, clients, requests)))
    print(f"\nstreaming latency, embedded SmolLM2, defaults, {requests} requests per cell, max_tokens {max_tokens}"
          f" ({time.perf_counter() - started:.0f} s in all)\n")
    print("| mode | clients | TTFT p50 (ms) | TTFT p95 (ms) | total p50 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for mode, clients, r in rows:
        print(f"| {mode} | {clients} | {r['ttft_p50']:.0f} | {r['ttft_p95']:.0f} | {r['total_p50']:.0f} |")
    ours = next(r for mode, c, r in rows if mode.startswith("council streamed") and c == 1)
    print(f"\nCouncil live-stream TTFT overhead over the engine's own at 1 client: "
          f"{ours['ttft_p50'] - base['ttft_p50']:.0f} ms (target ~50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per (mode, clients) cell")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.max_tokens))
