"""Adapter swap under steady load: time from the atomic ``loras/current`` swap until /health reports the new
adapter and until the first answer is generated with it, and requests that failed during the swaps.
Baseline: the same swap done by a server restart (stop, start, first answer).

    .venv/bin/python -m bench.swap_bench [--swaps 6] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402

from bench.common import REPO, free_port, start_server  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from deploy.swap import point_current  # noqa: E402

ASK = {"model": "local/smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]}


def make_adapters(base_dir: str, loras: Path, names: list[str]) -> None:
    """Real LoRA adapters (random A, zero B) — distinct versions the server must load."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                       "o_proj"]))
    for name in names:
        peft_model.save_pretrained(loras / name)


async def main(swaps: int, clients: int, log_level: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        base = resolve_base_model("", REPO / ".council" / "test-cache" / "models")
        loras = home / "loras"
        names = [f"2026010{i}-000000-abcdef" for i in range(2)]
        make_adapters(base.path, loras, names)
        port = free_port()
        config = f'[model]\nsource = "{base.path}"\n[council]\nheads = {{}}\n'
        server = start_server(home, config, port, log_level)
        url = f"http://127.0.0.1:{port}"
        failures, answers = 0, []
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            async def load() -> None:
                nonlocal failures
                while not stop.is_set():
                    async with session.post(f"{url}/v1/chat/completions", json=ASK) as resp:
                        if resp.status != 200:
                            failures += 1
                            continue
                        body = await resp.json()
                        answers.append((time.perf_counter(), body["council"]["adapter"]))

            async def health_adapter() -> str | None:
                async with session.get(f"{url}/health") as resp:
                    return (await resp.json())["adapter"]

            while not answers:
                await session.post(f"{url}/v1/chat/completions", json=ASK)
                answers.append((time.perf_counter(), None))
            workers = [asyncio.create_task(load()) for _ in range(clients)]
            to_health, to_answer = [], []
            for i in range(swaps):
                version = names[i % 2]
                await asyncio.sleep(1.0)
                swapped = time.perf_counter()
                point_current(loras, version)
                while await health_adapter() != version:
                    await asyncio.sleep(0.01)
                to_health.append(time.perf_counter() - swapped)
                while not any(t > swapped and a == version for t, a in answers):
                    await asyncio.sleep(0.01)
                to_answer.append(min(t for t, a in answers if t > swapped and a == version) - swapped)
            stop.set()
            await asyncio.gather(*workers)
        restart_started = time.perf_counter()
        server.terminate()
        server.wait(30)
        server = start_server(home, config, port)
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.post(f"{url}/v1/chat/completions", json=ASK) as resp:
                    if resp.status == 200:
                        break
        restart = time.perf_counter() - restart_started
        server.terminate()
        server.wait(30)
    ms = [round(1000 * x) for x in to_health]
    print(json.dumps({"swaps": swaps, "clients": clients, "requests": len(answers), "failed_requests": failures}))
    print(f"swap -> /health reports it (ms):      {ms}  max {max(ms)}")
    print(f"swap -> first answer with it (ms):    {[round(1000 * x) for x in to_answer]}  max "
          f"{round(1000 * max(to_answer))}")
    print(f"baseline, restart -> first answer:    {round(1000 * restart)} ms  "
          f"(ratio restart / hot swap: {restart / max(to_answer):.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--log-level", default="WARNING", help="the server's; INFO shows each swap's load time")
    args = parser.parse_args()
    asyncio.run(main(args.swaps, args.clients, args.log_level))
