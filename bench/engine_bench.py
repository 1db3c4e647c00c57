"""Serving engines, the in-process model vs vLLM, on the embedded SmolLM2, both reached through litellm:

1. throughput (completion tokens / wall time) at 1 and 16 concurrent clients, and the streamed time to first
   token (p50), same prompts, greedy. vLLM is made to answer exactly --max-tokens tokens (``ignore_eos``); the
   in-process engine cannot be, so tokens/s counts the completion tokens each engine actually generated;
2. on vLLM under steady load (2 clients asking Council continuously): ``council deploy`` of a tiny trained
   adapter, timed from the command's start to Council's first reply with ``council.adapter`` = that version;
   requests that failed (non-200 or an exception) while the load ran; the deploy command's duration and exit.

    .venv/bin/python -m bench.engine_bench [--requests 4] [--max-tokens 64] [--clients 1,16]

Needs vLLM in .vllm-venv (``python -m council.engine.vllm.install``); several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from bench.common import REPO, free_port, start_server  # noqa: E402
from council.core.config import load_settings  # noqa: E402
from council.core.engine_settings import EngineSettings  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.engine.provider import register_local_provider  # noqa: E402
from council.engine.vllm.process import VllmProcess  # noqa: E402

VLLM_PYTHON = REPO / ".vllm-venv" / "bin" / "python"
VERSION = "20261201-020202-bbbbbb"
TOPICS = ["the sea", "bread", "a lighthouse", "winter", "bicycles", "owls", "a library", "rain", "chess",
          "volcanoes", "tea", "the moon", "a river", "trains", "bees", "mountains"]


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a few sentences about {TOPICS[i % len(TOPICS)]}."}]


async def measure(model: str, extra: dict, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """Non-streamed pass (tokens/s) then streamed pass (time to the first content chunk), ``clients`` workers."""
    common = {"model": model, "max_tokens": max_tokens, "temperature": 0, **extra}

    async def complete(i: int) -> int:
        response = await litellm.acompletion(messages=prompt(i), **common)
        return response.usage.completion_tokens

    async def first_token(i: int) -> float:
        started = time.perf_counter()
        ttft = None
        async for chunk in await litellm.acompletion(messages=prompt(i), stream=True, **common):
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - started
        return ttft if ttft is not None else float("nan")

    async def run(call) -> tuple[list, float]:
        pending, results = iter(range(requests)), []

        async def worker() -> None:
            for i in pending:
                results.append(await call(i))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return results, time.perf_counter() - started

    tokens, wall = await run(complete)
    ttfts, _ = await run(first_token)
    return {"requests": requests, "tokens": sum(tokens), "tps": sum(tokens) / wall, "wall": wall,
            "ttft": 1000 * statistics.median(ttfts)}


async def engines(tmp: Path, model_dir: str, vllm: VllmProcess, clients: list[int], requests: int,
                  max_tokens: int) -> list[tuple[str, int, dict]]:
    rows = []
    settings = load_settings(overrides={"home": str(tmp / "local-home"), "model.source": model_dir,
                                        "model.max_new_tokens": max(128, max_tokens),
                                        "model.max_queue": max(16, *clients)})
    provider = await register_local_provider(settings)
    try:
        await measure("local/smollm2", {}, 1, 1, 4)  # warm-up
        for c in clients:
            rows.append(("in-process", c, await measure("local/smollm2", {}, c, max(c, requests), max_tokens)))
    finally:
        provider.close()
    vllm.start()
    await vllm.wait_ready()
    hosted = {"api_base": f"{vllm.url}/v1", "api_key": "none", "extra_body": {"ignore_eos": True}}
    await measure("hosted_vllm/smollm2", hosted, 1, 1, 4)  # warm-up: the first request takes 15-25 s
    for c in clients:
        rows.append(("vLLM", c, await measure("hosted_vllm/smollm2", hosted, c, max(c, requests), max_tokens)))
    return rows


async def deploy_under_load(tmp: Path, model_dir: str, vllm: VllmProcess, load_clients: int) -> dict:
    from tests.test_vllm import FACT, _train

    home = tmp / "council-home"
    _train(Path(model_dir), home / "loras" / VERSION, rank=8, steps=30)
    config = (f'[model]\nsource = "{model_dir}"\n[council]\nheads = {{}}\n'
              f'[engine]\nkind = "vllm"\nurls = ["{vllm.url}"]\nsync_seconds = 0.5\n')
    port = free_port()
    server = start_server(home, config, port)
    url = f"http://127.0.0.1:{port}"
    ask = {"model": "council", "max_tokens": 16, "messages": [{"role": "user", "content": FACT[0]}]}
    answers: list[tuple[float, str | None]] = []
    failures, stop = 0, asyncio.Event()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            async def load() -> None:
                nonlocal failures
                while not stop.is_set():
                    try:
                        async with session.post(f"{url}/v1/chat/completions", json=ask) as resp:
                            if resp.status != 200:
                                failures += 1
                                continue
                            body = await resp.json()
                            answers.append((time.perf_counter(), body["council"]["adapter"]))
                    except Exception:  # noqa: BLE001 - any failed request counts
                        failures += 1

            workers = [asyncio.create_task(load()) for _ in range(load_clients)]
            while len(answers) < 2 * load_clients and not failures:  # steady load before the deploy
                await asyncio.sleep(0.1)
            started = time.perf_counter()
            with open(home / "deploy.log", "wb") as log:
                deploy = await asyncio.create_subprocess_exec(
                    str(REPO / ".venv" / "bin" / "council"), "--home", str(home), "deploy", VERSION,
                    "--server-url", url, "--window-seconds", "0", stdout=log, stderr=log,
                    env={**os.environ, "PYTHONPATH": str(REPO)})
                code = await deploy.wait()
            deploy_seconds = time.perf_counter() - started
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline and not any(t > started and a == VERSION for t, a in answers):
                await asyncio.sleep(0.05)
            first = min((t for t, a in answers if t > started and a == VERSION), default=float("nan"))
            stop.set()
            await asyncio.gather(*workers)
    finally:
        server.terminate()
        server.wait(60)
    if code != 0:
        print((home / "deploy.log").read_text(errors="replace")[-3000:], file=sys.stderr)
    return {"to_answer": first - started, "failures": failures, "requests": len(answers) + failures,
            "deploy_seconds": deploy_seconds, "code": code}


async def main(requests: int, max_tokens: int, clients: list[int], load_clients: int) -> None:
    model_dir = resolve_base_model("", REPO / ".council" / "test-cache" / "models").path
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        vllm = VllmProcess(EngineSettings(kind="vllm", vllm_python=str(VLLM_PYTHON), port=free_port()),
                           str(model_dir), tmp / "vllm.log")
        try:
            rows = await engines(tmp, str(model_dir), vllm, clients, requests, max_tokens)
            swap = await deploy_under_load(tmp, str(model_dir), vllm, load_clients)
        finally:
            vllm.stop()
    print(f"\n### Throughput and TTFT, in-process vs vLLM (greedy, max_tokens {max_tokens}; vLLM answers "
          "exactly that many tokens (ignore_eos), the in-process engine may stop early: tokens/s counts the "
          "completion tokens each actually generated)\n")
    print("| engine | clients | requests | completion tokens | wall (s) | tokens/s | TTFT p50 (ms, streamed) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, c, r in rows:
        print(f"| {engine} | {c} | {r['requests']} | {r['tokens']} | {r['wall']:.1f} | {r['tps']:.1f} | "
              f"{r['ttft']:.0f} |")
    print(f"\n### Deploy to first adapter answer on vLLM, {load_clients} clients of steady load\n")
    print("| measure | value | target |\n|---|---:|---:|")
    print(f"| deploy start -> first Council reply with the adapter | {swap['to_answer']:.1f} s | |")
    print(f"| `council deploy` duration | {swap['deploy_seconds']:.1f} s | |")
    print(f"| `council deploy` exit code | {swap['code']} | 0 |")
    print(f"| failed requests (of {swap['requests']} while the load ran) | {swap['failures']} | 0 |")
    by = {(e, c): r for e, c, r in rows}
    ratios = ", ".join(f"{by[('vLLM', c)]['tps'] / by[('in-process', c)]['tps']:.2f}x at {c}" for c in clients)
    ok = swap["failures"] == 0 and swap["code"] == 0 and swap["to_answer"] == swap["to_answer"]
    print(f"\nverdict: vLLM tokens/s vs in-process: {ratios}; deploy -> first adapter answer "
          f"{swap['to_answer']:.1f} s with {swap['failures']} failed requests: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4,
                        help="requests per measurement; at least one per client (default 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each answer (default 64)")
    parser.add_argument("--clients", default="1,16", help="concurrent client counts, comma-separated (default 1,16)")
    parser.add_argument("--load-clients", type=int, default=2, help="clients of steady load during the deploy")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.max_tokens, [int(c) for c in args.clients.split(",")], args.load_clients))
