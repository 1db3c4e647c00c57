"""The client libraries people build agents with, each on its default path, against a real ``council serve``.

Each library call is a small script in tests/clients/ (``py_*.py`` run with the python of its venv in
``.clients-venv/``, ``node/*.mjs`` run with ``node``) that prints one JSON line; the test asserts on it: structured output parses
into the model, a tool was called with valid arguments, a tool round-trip came back as text. The libraries are
installed apart from the project's venv by tests/clients/setup.py (``.clients-venv``, ``tests/clients/node``);
when they cannot be installed the tests skip with the reason, except in CI (``CI`` set), where they fail.

The embedded 135M model seldom calls a tool on ``tool_choice: "auto"``, so a tool round-trip's first call is
forced where the library's default is "auto" (langchain ``bind_tools(tool_choice=NAME)``, pydantic-ai a per-step
``tool_choice="required"``, openai-agents ``ModelSettings(tool_choice="required")``, the AI SDK ``prepareStep``);
the answer after the tool's result is on "auto". Structured output through tools needs no forcing: langchain's
``function_calling``, instructor and pydantic-ai force the call themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.common import REPO, free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.clients]

CLIENTS = REPO / "tests" / "clients"
VENVS = REPO / ".clients-venv"  # one venv per group of libraries that install together (tests/clients/setup.py)
SCRIPT_TIMEOUT = 240


@pytest.fixture(scope="module")
def installed() -> dict[str, dict[str, str]]:
    """The client libraries' versions, installing them on first use."""
    done = subprocess.run([sys.executable, str(CLIENTS / "setup.py")], capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base_url(installed, base_model_dir, tmp_path_factory) -> str:
    """A real ``council serve`` on a free port (no heads: Agent-0 answers alone); its ``/v1`` URL."""
    port = free_port()
    config = f'[model]\nsource = "{base_model_dir}"\n[council]\nheads = {{}}\n'
    with running_server(tmp_path_factory.mktemp("clients") / "home", config, port):
        yield f"http://127.0.0.1:{port}/v1"


def run_client(base_url: str, script: str, *args: str, venv: str = "agents") -> dict:
    """Run one client script against the server (a Python one in ``venv``); its last stdout line, parsed."""
    path = CLIENTS / script
    cmd = ["node", str(path)] if script.endswith(".mjs") else [str(VENVS / venv / "bin" / "python"), str(path)]
    env = dict(os.environ, COUNCIL_BASE_URL=base_url, OPENAI_API_KEY="sk-council-test", PYTHONPATH="")
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, env=env,
                          cwd=path.parent)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{script} exit {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1])


def assert_city(result: dict) -> None:
    city = result["city"]
    assert set(city) == {"name", "country"}, city
    assert all(isinstance(v, str) and v.strip() for v in city.values()), city


def assert_tool_call(result: dict, name: str = "get_weather") -> None:
    assert result["tool_name"] == name, result
    arguments = result["tool_args"]
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str) and arguments["city"], result


def assert_round_trip(result: dict) -> None:
    assert_tool_call(result)
    assert isinstance(result["answer"], str) and result["answer"].strip(), result


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(base_url, method):
    assert_city(run_client(base_url, "py_langchain_structured.py", method))


def test_langchain_tool_round_trip(base_url):
    assert_round_trip(run_client(base_url, "py_langchain_tools.py"))


def test_instructor_tools_mode(base_url):
    assert_city(run_client(base_url, "py_instructor.py", venv="instructor"))


def test_pydantic_ai_structured_output(base_url):
    assert_city(run_client(base_url, "py_pydantic_ai.py", "output"))


def test_pydantic_ai_function_tool(base_url):
    assert_round_trip(run_client(base_url, "py_pydantic_ai.py", "tool"))


def test_openai_agents_chat_completions_tool_round_trip(base_url):
    assert_round_trip(run_client(base_url, "py_openai_agents.py", "chat"))


def test_openai_agents_responses_tool_round_trip(base_url):
    assert_round_trip(run_client(base_url, "py_openai_agents.py", "responses"))


def test_vercel_ai_generate_object_default_sends_no_schema(base_url):
    """On its defaults @ai-sdk/openai-compatible sends ``json_object`` without the schema: Council answers a JSON
    object, but nothing tells the model the schema's keys, so the SDK's zod check may refuse it."""
    result = run_client(base_url, "node/generate_object.mjs", "default")
    assert isinstance(json.loads(result["text"]), dict), result
    if result["city"] is not None:
        assert_city(result)


def test_vercel_ai_generate_object_structured_outputs(base_url):
    assert_city(run_client(base_url, "node/generate_object.mjs", "structured"))


def test_vercel_ai_generate_text_with_tool(base_url):
    assert_round_trip(run_client(base_url, "node/generate_text_tool.mjs"))


def test_llm_cli_schema(base_url):
    assert_city(run_client(base_url, "py_llm_cli.py"))


def test_llama_index_openai_like_complete(base_url):
    result = run_client(base_url, "py_llama_index.py", venv="llama-index")
    assert isinstance(result["text"], str) and result["text"].strip(), result
