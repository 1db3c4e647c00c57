"""What reading a chat request costs: Council's typed protocol model against vLLM's own (its OpenAI server's
``ChatCompletionRequest``, pydantic too), on the same bodies, in one run.

Council's figures: ``protocol`` = JSON text -> ``ChatCompletionRequest`` (strict, unknown keys refused at every
level, Unicode checked); ``request`` = all of ``parse_chat_request`` (plus the internal request, and the grammar
checks of the tools and schema — against their metaschema, and by the grammar library — cached by their text, as
when an agent resends its tools; "first time" empties those caches). vLLM's: JSON text -> its model (``model_validate(json.loads(raw))``),
run by the vLLM venv's Python (``python -m council.engine.vllm.install`` makes it; skipped without it).
Prints µs per request (median of ``--repeats`` runs of ``--number`` parses).

    .venv/bin/python -m bench.protocol_bench [--number 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from council.engine import grammar
from council.server.protocol import chat_tools
from council.server.protocol.base import parse
from council.server.protocol.chat import ChatCompletionRequest
from council.server.validation import parse_chat_request

VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".vllm-venv" / "bin" / "python"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
           "required": ["city"]}


def bodies() -> dict[str, dict]:
    """Three requests: one question; a 40-message tool conversation with 8 tools; a JSON-schema answer."""
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "Look something up.",
                                               "parameters": WEATHER}} for i in range(8)]
    conversation: list[dict] = [{"role": "system", "content": "You are helpful."}]
    for i in range(13):
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "tool_1", "arguments": '{"city": "Oslo"}'}}
        conversation += [{"role": "user", "content": f"Weather {i}?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": f"call_{i}", "content": "12 C"}]
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {
        "type": "string"}}, "age": {"type": "integer", "minimum": 0}}, "required": ["name", "age"]}
    return {
        "one question": {"model": "council", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        "40 messages, 8 tools": {"model": "council", "messages": conversation, "tools": tools, "tool_choice": "auto",
                                 "temperature": 0.2},
        "json_schema": {"model": "council", "messages": [{"role": "user", "content": "A person."}],
                        "response_format": {"type": "json_schema", "json_schema": {"name": "person",
                                                                                   "schema": schema}}},
    }


def cold(raw: bytes, repeats: int) -> float:
    """µs of a request whose schemas and grammar were never seen (the caches emptied before each parse)."""
    runs = []
    for _ in range(max(repeats, 5)):
        chat_tools._schema_problem.cache_clear()
        grammar._grammar_error.cache_clear()
        start = time.perf_counter()
        parse_chat_request(raw)
        runs.append((time.perf_counter() - start) * 1e6)
    return statistics.median(runs)


def timed(fn, raw: bytes, number: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn(raw)
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


VLLM_SCRIPT = textwrap.dedent("""
    import json, statistics, sys, time
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    bodies, number, repeats = json.loads(sys.stdin.read())
    out = {}
    for name, body in bodies.items():
        raw = json.dumps(body)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                ChatCompletionRequest.model_validate(json.loads(raw))
            runs.append((time.perf_counter() - start) / number * 1e6)
        out[name] = statistics.median(runs)
    print(json.dumps(out))
""")


def vllm_times(cases: dict[str, dict], number: int, repeats: int) -> dict[str, float] | None:
    if not VLLM_PYTHON.exists():
        return None
    done = subprocess.run([str(VLLM_PYTHON), "-c", VLLM_SCRIPT], input=json.dumps([cases, number, repeats]),
                          capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000, help="parses per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the median is printed")
    args = parser.parse_args()
    cases = bodies()
    peer = vllm_times(cases, args.number, args.repeats)
    rows = ["| request | Council protocol (µs) | Council request, checks cached (µs) | the same, first time (µs) "
            "| vLLM protocol (µs) |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, body in cases.items():
        raw = json.dumps(body).encode()
        ours = timed(lambda r: parse(ChatCompletionRequest, r), raw, args.number, args.repeats)
        whole = timed(parse_chat_request, raw, max(1, args.number // 10), args.repeats)
        theirs = f"{peer[name]:.0f}" if peer else "(no .vllm-venv)"
        rows.append(f"| {name} | {ours:.0f} | {whole:.0f} | {cold(raw, args.repeats):.0f} | {theirs} |")
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
