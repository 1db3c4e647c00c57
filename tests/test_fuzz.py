"""Property-based test of the chat endpoint on a real ``council serve`` process and the real embedded model.

Hypothesis builds request bodies, valid ones and ones with exactly one defect, and sends them four at a
time so that they share embedding and generation batches. Every valid body must get a 200, every invalid one
an OpenAI-shaped 4xx JSON error, and the server must stay healthy throughout: no 5xx, ever.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.common import free_port, running_server

pytestmark = pytest.mark.slow
EXAMPLES = 80  # x 4 bodies each
SEEN: dict[str, int] = {"bodies": 0, "valid": 0, "invalid": 0, "5xx": 0}

text = st.text(min_size=1, max_size=30)  # hypothesis leaves out surrogates unless asked
content = st.one_of(text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=2))
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]), "content": content}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": content}),  # null only beside tool_calls
)
OPTIONAL: dict[str, st.SearchStrategy] = {
    "model": st.sampled_from(["council", "local/smollm2"]),
    "temperature": st.one_of(st.floats(0, 2), st.sampled_from([0, 1e-40, 2])),
    "top_p": st.one_of(st.floats(0, 1), st.just(0)),
    "max_tokens": st.integers(1, 3),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.one_of(text, st.lists(text, max_size=4)),
    "n": st.just(1),
    "frequency_penalty": st.floats(-2, 2),
    "presence_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(st.integers(0, 40000).map(str), st.floats(-100, 100), max_size=3),
    "user": text,
    "response_format": st.just({"type": "text"}),
    "tool_choice": st.just("none"),
    "store": st.booleans(),
    "metadata": st.dictionaries(st.sampled_from(["a", "b"]), text, max_size=2),
}
# One defect each: (field, bad value); a value of ... removes the field.
DEFECTS = [
    ("temperature", 2.01), ("temperature", "hot"), ("top_p", 1.5), ("seed", 2**63), ("seed", -(2**63) - 1),
    ("seed", 1.5), ("max_tokens", 0), ("max_tokens", "3"), ("max_completion_tokens", -1), ("n", 2), ("n", 0),
    ("messages", []), ("messages", "hi"), ("messages", ...), ("messages", [{"role": "robot", "content": "x"}]),
    ("messages", [{"role": "user", "content": 5}]), ("messages", [{"role": "user", "content": "a \ud800 b"}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
    ("frobnicate", True), ("tools", [{"type": "function", "function": {"name": "a b"}}]),
    ("response_format", {"type": "xml"}), ("tool_choice", "required"), ("top_logprobs", 21), ("logit_bias", {"abc": 1}),
    ("logit_bias", {"5": 500}), ("stop", [1, 2]), ("stream", "yes"), ("logprobs", 1), ("model", 7),
    ("model", "no/such-model"), ("presence_penalty", -3), ("user", 12), ("metadata", "x"),
    ("messages", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]),
]


@st.composite
def valid_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": draw(st.lists(message, min_size=1, max_size=3)), "max_tokens": 2}
    for name in draw(st.sets(st.sampled_from(sorted(OPTIONAL)), max_size=5)):
        body[name] = draw(st.one_of(st.none(), OPTIONAL[name]))
    if draw(st.booleans()):
        body["logprobs"] = True
        body["top_logprobs"] = draw(st.one_of(st.none(), st.integers(0, 20)))
    if draw(st.booleans()):
        body["stream"] = True
        body["stream_options"] = draw(st.one_of(st.none(), st.fixed_dictionaries({"include_usage": st.booleans()})))
    if body.get("max_tokens") is None:
        body["max_tokens"] = 2  # null means the default, 128 tokens: too slow for a few hundred bodies
    return body


@st.composite
def labelled_body(draw: st.DrawFn) -> tuple[bytes, bool]:
    body = draw(valid_body())
    kind = draw(st.sampled_from(["defect", "valid", "raw", "valid"]))  # hypothesis leans to the first: a defect
    if kind == "valid":
        return json.dumps(body).encode(), True
    if kind == "raw":
        return draw(st.sampled_from([b"[1, 2]", b"{", b"null", b'"text"', b"\xff\xfe", b'{"messages": NaN}'])), False
    name, value = draw(st.sampled_from(DEFECTS))
    if value is ...:
        body.pop(name, None)
    else:
        body[name] = value
    return json.dumps(body).encode(), False


@pytest.fixture(scope="module")
def live_server(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    home = tmp_path_factory.mktemp("fuzz") / "home"
    with running_server(home, f'[model]\nsource = "{base_model_dir}"\n[council]\nheads = {{}}\n', port):
        yield port


async def _send(session: aiohttp.ClientSession, port: int, raw: bytes) -> tuple[int, str, str]:
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=raw,
                            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def _round(port: int, bodies: list[tuple[bytes, bool]]) -> None:
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(_send(session, port, raw) for raw, _ in bodies))
        for (raw, valid), (status, content_type, answer) in zip(bodies, results, strict=True):
            SEEN["bodies"] += 1
            SEEN["valid" if valid else "invalid"] += 1
            SEEN["5xx"] += status >= 500
            assert status < 500, (raw, status, answer)
            if valid:
                assert status == 200, (raw, answer)
                if content_type.startswith("text/event-stream"):
                    assert answer.rstrip().endswith("data: [DONE]"), answer
                else:
                    assert json.loads(answer)["choices"][0]["message"]["role"] == "assistant"
            else:
                assert 400 <= status < 500, (raw, status, answer)
                assert content_type.startswith("application/json"), (raw, content_type)
                error = json.loads(answer)["error"]
                assert error["message"] and error["type"], answer
        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(labelled_body(), min_size=4, max_size=4))
def test_random_bodies_get_200_or_an_openai_4xx_and_never_a_5xx(live_server, bodies):
    asyncio.run(_round(live_server, bodies))


def test_fuzz_counts(live_server):
    """Runs after the property test (file order): it really sent a few hundred bodies of both kinds."""
    print(f"fuzz: {SEEN}")  # shown with -s
    assert SEEN["bodies"] >= 4 * EXAMPLES and SEEN["valid"] >= 80 and SEEN["invalid"] >= 80, SEEN
    assert SEEN["5xx"] == 0
