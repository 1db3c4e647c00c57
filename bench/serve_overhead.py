"""Serving overhead: the full HTTP path (council server, its defaults, memory on) vs calling the same instant
provider directly through litellm, at 1 and 32 concurrent clients, and issue 17's targets. Latencies in ms.

    .venv/bin/python -m bench.serve_overhead [--requests 400] [--profile DIR]

The provider answers at once (``bench/instant_provider.py``), so the time is Council's own: HTTP, validation,
the query embedding, memory search, prompt rendering, litellm, confidence, the durable record, metrics.
Targets: added p50 at 1 client <= 10 ms; at 32 clients >= 200 requests/s or >= 0.8 of the direct rate,
whichever is lower. ``--profile DIR`` samples the server with py-spy (``pip install py-spy``) during the
32-client run and writes ``DIR/serve-32.txt`` (collapsed stacks) and the top frames to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from bench.common import free_port, http_caller, print_table, run_load, start_server  # noqa: E402
from bench.instant_provider import InstantLLM  # noqa: E402
from bench.profile import summarize  # noqa: E402

CONFIG = """
providers = { instant = "bench.instant_provider:InstantLLM" }
[council]
agent0 = "instant/fast"
heads = {}
"""
ADDED_P50_MS, MIN_RPS, MIN_RATIO = 10.0, 200.0, 0.8


def question(i: int) -> str:
    return f"Question number {i}: what is {i} plus {i * 7}?"


def start_profiler(pid: int, out: Path) -> subprocess.Popen:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([spy, "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", str(out), "--threads",
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main(requests: int, profile: Path | None) -> bool:
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
                    spy = None
                    if profile and clients == 32:
                        profile.mkdir(parents=True, exist_ok=True)
                        spy = start_profiler(server.pid, profile / "serve-32.txt")
                        time.sleep(1)
                    ours = await run_load(call, clients, requests)
                    if spy:
                        spy.send_signal(2)
                        spy.wait(60)
                    base = await run_load(direct, clients, requests)
                    rows.append((str(clients), ours, base))
        finally:
            server.terminate()
            server.wait(10)
    print_table("full HTTP path (memory on, instant provider) vs provider via litellm directly", rows)
    (_, one, one_base), (_, many, many_base) = rows
    added = one["p50"] - one_base["p50"]
    need = min(MIN_RPS, MIN_RATIO * many_base["rps"])
    met = [added <= ADDED_P50_MS, many["rps"] >= need]
    print(f"\ntarget: added p50 at 1 client <= {ADDED_P50_MS:.0f} ms: {added:.2f} ms "
          f"{'MET' if met[0] else 'NOT MET'}")
    print(f"target: 32 clients >= {need:.0f} requests/s (min of {MIN_RPS:.0f} and {MIN_RATIO} x direct "
          f"{many_base['rps']:.0f}): {many['rps']:.1f} {'MET' if met[1] else 'NOT MET'}")
    if profile:
        print(f"\nprofile of the server at 32 clients ({profile / 'serve-32.txt'}):")
        print(summarize(profile / "serve-32.txt"))
    return all(met)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--profile", type=Path, default=None, help="folder for a py-spy profile of the server")
    args = parser.parse_args()
    raise SystemExit(0 if asyncio.run(main(args.requests, args.profile)) else 1)
