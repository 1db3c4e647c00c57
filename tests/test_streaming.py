"""Streaming streams: on a real ``council serve`` with the embedded model and its defaults, the first content
chunk of a streamed answer arrives long before the whole answer (``council.stream_mode = "live"``), in many
chunks spread over time; ``"decided"`` sends it only once the council has decided."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from bench.common import free_port, running_server

pytestmark = pytest.mark.slow
ASK = {"model": "council", "stream": True, "max_tokens": 48,
       "messages": [{"role": "user", "content": "Describe a sunny day at the beach in three sentences."}]}


async def timed_stream(port: int) -> tuple[float, float, list[float], dict]:
    """(seconds to the first content chunk, seconds to [DONE], arrival time of each content chunk, last chunk)."""
    arrivals, last = [], {}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=ASK) as resp:
            assert resp.status == 200
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    arrivals.append(time.perf_counter() - started)
                if chunk.get("council"):
                    last = chunk
        done = time.perf_counter() - started
    return arrivals[0], done, arrivals, last


@pytest.mark.parametrize("mode", ["live", "decided"])
async def test_first_token_against_whole_answer(mode: str, base_model_dir: Path, tmp_path: Path):
    port = free_port()
    config = f'[model]\nsource = "{base_model_dir}"\n[council]\nstream_mode = "{mode}"\n'
    with running_server(tmp_path / "home", config, port):
        await timed_stream(port)  # warm-up: the first generation pays one-off costs
        first, whole, arrivals, last = await timed_stream(port)
    print(f"stream_mode={mode}: first content chunk {first * 1000:.0f} ms, whole answer {whole * 1000:.0f} ms, "
          f"{len(arrivals)} content chunks")  # shown with -s
    assert len(arrivals) > 10 and last["council"]["record_id"].startswith("rec_")
    if mode == "live":
        assert first < 0.25 * whole, (first, whole)
        assert arrivals[-1] - arrivals[0] > 0.5 * (whole - first)  # spread over the answer, not sent at the end
        assert last["council"]["route"][:2] == ["agent0", "stream"]
    else:
        assert first > 0.8 * whole, (first, whole)  # decided: nothing before the council is done
