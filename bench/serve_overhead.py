"""Serving overhead: the full HTTP path (council server, memory on) vs calling the same instant provider
directly through litellm, at 1 and 32 concurrent clients. Latencies in ms.

    .venv/bin/python bench/serve_overhead.py [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from bench.common import free_port, http_caller, print_table, run_load, start_server  # noqa: E402
from bench.instant_provider import InstantLLM  # noqa: E402

CONFIG = """
providers = { instant = "bench.instant_provider:InstantLLM" }
[council]
agent0 = "instant/fast"
heads = {}
"""


def question(i: int) -> str:
    return f"Question number {i}: what is {i} plus {i * 7}?"


async def main(requests: int) -> None:
    litellm.custom_provider_map = [{"provider": "instant", "custom_handler": InstantLLM()}]
    litellm.utils.custom_llm_setup()

    async def direct(i: int) -> None:
        await litellm.acompletion(model="instant/fast", messages=[{"role": "user", "content": question(i)}])

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "home", CONFIG, port)
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                call = http_caller(session, url, lambda i: {"model": "council",
                                                            "messages": [{"role": "user", "content": question(i)}]})
                await run_load(call, 4, 40)  # warm-up
                await run_load(direct, 4, 40)
                rows = []
                for clients in (1, 32):
                    ours = await run_load(call, clients, requests)
                    base = await run_load(direct, clients, requests)
                    rows.append((str(clients), ours, base))
        finally:
            server.terminate()
            server.wait(10)
    print_table("full HTTP path (memory on, instant provider) vs provider via litellm directly", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    asyncio.run(main(parser.parse_args().requests))
