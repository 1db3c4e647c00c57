"""``council deploy`` on real LoRA adapters made with PEFT on the embedded SmolLM2 inside the test.

The adapters: ``identity`` (fresh LoRA, B = 0: behaves exactly like the base model) and ``trained`` (a few
AdamW steps on the validation sentences, so its validation loss is lower than the base model's).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from council.core.exitcodes import FAILURE, NOTHING_TO_DO, OK
from council.engine.model_files import resolve_base_model
from deploy.main import DeployConfig, main
from deploy.registry import Registry, RegistryState, read_adapter
from deploy.swap import point_current
from tests.test_alerts import SLACK_PATH, receiver  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

V1, V2 = "20250101-010101-aaaaaa", "20250102-010101-bbbbbb"
DEAD_SERVER = "http://127.0.0.1:9"  # nothing listens on the discard port
EXAMPLES = [
    {"instruction": "What does the Council server do?", "input": "", "reasoning": "",
     "output": "Council is a self-hosted chat server that retrains itself every night on its failures.",
     "quality_score": 0.9, "record_id": "val-1"},
    {"instruction": "Which model does Council embed?", "input": "", "reasoning": "",
     "output": "Council embeds SmolLM2-135M-Instruct and serves LoRA adapters on top of it.",
     "quality_score": 0.9, "record_id": "val-2"},
]


def _chat_ids(tokenizer: Any, example: dict[str, Any]) -> list[int]:
    messages = [{"role": "user", "content": example["instruction"]},
                {"role": "assistant", "content": example["output"]}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)


def _finish(folder: Path, version: str, fingerprint: str, model_id: str) -> None:
    meta = {"version": version, "base_model_id": model_id, "base_model_fingerprint": fingerprint,
            "backend": "peft", "parent": None, "created_at": "2025-01-01T01:01:01+00:00",
            "loss": {"train": [1.0], "validation": [1.0]}, "examples": {"train": 2, "validation": 2}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "validation.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))


@pytest.fixture(scope="module")
def adapter_bank(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real adapters for the embedded model, built once for the module."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = resolve_base_model(str(base_model_dir), base_model_dir.parent)
    bank = tmp_path_factory.mktemp("adapters")
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(bank / "identity")
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    for _ in range(3):
        for example in EXAMPLES:
            ids = torch.tensor([_chat_ids(tokenizer, example)])
            loss = peft_model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    peft_model.save_pretrained(bank / "trained")
    for name in ("identity", "trained"):
        _finish(bank / name, name, base.fingerprint, base.model_id)
    return {"identity": bank / "identity", "trained": bank / "trained"}


def install(bank: dict[str, Path], loras: Path, kind: str, version: str, **meta: Any) -> Path:
    folder = loras / version
    shutil.copytree(bank[kind], folder)
    data = json.loads((folder / "metadata.json").read_text())
    data.update(version=version, **meta)
    (folder / "metadata.json").write_text(json.dumps(data))
    return folder


def make_current(loras: Path, version: str) -> None:
    point_current(loras, version)
    Registry(loras).save(RegistryState(current=version, deployed=[version]))


@pytest.fixture
def settings(make_settings, base_model_dir):
    return make_settings(**{"model.source": str(base_model_dir), "model.torch_threads": 1})


@pytest.fixture
def one_case_canary(tmp_path: Path) -> str:
    path = tmp_path / "canary.jsonl"
    path.write_text(json.dumps({"id": "france", "prompt": "What is the capital of France?", "max_tokens": 12,
                                "checks": [{"type": "contains", "value": "paris"}]}) + "\n")
    return str(path)


def summary_of(settings) -> dict[str, Any]:
    return json.loads((settings.paths.logs / "deploy_summary.json").read_text())


def test_trained_adapter_passes_canary_and_deploys_without_server(settings, adapter_bank):
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "trained", V1)
    assert main(DeployConfig(settings, server_url=DEAD_SERVER, confirm_seconds=0)) == OK
    assert os.readlink(loras / "current") == V1
    summary = summary_of(settings)
    assert summary["decision"] == "deployed" and "no server answered" in summary["reason"]
    assert summary["canary"]["passed"] == summary["canary"]["total"] == 7  # the repo's canary suite
    assert summary["eval"]["baseline"] is None  # compared with the bare base model
    assert summary["eval"]["candidate_loss"] < summary["eval"]["baseline_loss"]
    assert summary["server"] == {"url": DEAD_SERVER, "reachable": False, "confirmed": False,
                                 "adapter": None, "adapter_error": None}
    state = Registry(loras).load()
    assert (state.current, state.previous, state.deployed) == (V1, None, [V1])
    assert main(DeployConfig(settings, server_url=DEAD_SERVER)) == NOTHING_TO_DO


def test_corrupt_adapter_is_refused_and_current_untouched(settings, adapter_bank, receiver):  # noqa: F811
    settings.alerts.webhook_url = receiver.url(SLACK_PATH)
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "identity", V1)
    make_current(loras, V1)
    bad = install(adapter_bank, loras, "identity", V2)
    (bad / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    assert main(DeployConfig(settings, server_url=DEAD_SERVER)) == FAILURE
    assert os.readlink(loras / "current") == V1
    state = Registry(loras).load()
    assert state.current == V1 and state.failed == [V2]
    assert "not a readable safetensors file" in state.reasons[V2]
    assert summary_of(settings)["decision"] == "refused"
    (_, payload), = receiver.posts
    assert payload["text"].endswith(f"Deploy of {V2} refused")
    assert "safetensors" in json.dumps(payload["blocks"])
    assert main(DeployConfig(settings, server_url=DEAD_SERVER)) == NOTHING_TO_DO  # not retried nightly


def test_mismatched_base_model_is_refused(settings, adapter_bank):
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "identity", V1)
    make_current(loras, V1)
    install(adapter_bank, loras, "identity", V2, base_model_fingerprint="config-sha256:another-model",
            base_model_id="someone/else")
    assert main(DeployConfig(settings, version=V2, server_url=DEAD_SERVER)) == FAILURE
    assert os.readlink(loras / "current") == V1
    reason = summary_of(settings)["reason"]
    assert "trained on base model 'someone/else'" in reason and "config-sha256:another-model" in reason
    assert read_adapter(loras / V2).complete  # kept on disk, only marked failed
    assert Registry(loras).load().failed == [V2]


def test_canary_failure_is_refused(settings, adapter_bank, tmp_path):
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "identity", V1)
    canary = tmp_path / "strict.jsonl"
    canary.write_text(json.dumps({"id": "wrong", "prompt": "What is the capital of France?", "max_tokens": 12,
                                  "checks": [{"type": "contains", "value": "Berlin"}]}) + "\n")
    assert main(DeployConfig(settings, canary_file=str(canary), server_url=DEAD_SERVER)) == FAILURE
    assert not (loras / "current").exists()
    summary = summary_of(settings)
    assert summary["reason"].startswith("canary 0/1 passed") and "Paris" in summary["reason"]


def test_validation_loss_regression_is_refused(settings, adapter_bank, one_case_canary):
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "trained", V1)
    make_current(loras, V1)
    install(adapter_bank, loras, "identity", V2)  # the base model's loss: worse than the trained current
    config = DeployConfig(settings, canary_file=one_case_canary, loss_tolerance=0.0, server_url=DEAD_SERVER)
    assert main(config) == FAILURE
    summary = summary_of(settings)
    assert summary["eval"]["baseline"] == V1
    assert summary["eval"]["candidate_loss"] > summary["eval"]["baseline_loss"]
    assert f"worse than {V1}'s" in summary["reason"]
    assert os.readlink(loras / "current") == V1


def link_server(loras: Path, windows: dict[str | None, dict[str, Any]]) -> web.Application:
    """A real HTTP server that reports the adapter ``loras/current`` names and the window we set for it."""

    def health_json() -> dict[str, Any]:
        link = loras / "current"
        adapter = os.readlink(link) if link.is_symlink() else None
        return {"status": "ok", "adapter": adapter, "adapter_error": None, "window": windows[adapter]}

    async def health(request: web.Request) -> web.Response:
        return web.json_response(health_json())

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/admin/reload", health)
    return app


PRE_SWAP = {"since": 0, "requests": 3, "success_rate": 1.0, "p95_latency_ms": 60.0,  # V1 answered 3 of the 20
            "served": {"requests": 20, "success_rate": 0.95, "p95_latency_ms": 70.0}}


async def test_bad_window_rolls_back(settings, adapter_bank, one_case_canary, aiohttp_server):
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "identity", V1)
    make_current(loras, V1)
    install(adapter_bank, loras, "identity", V2)
    window = {"since": 0, "requests": 10, "success_rate": 0.5, "p95_latency_ms": 80.0}
    server = await aiohttp_server(link_server(loras, {V1: PRE_SWAP, V2: window}))
    config = DeployConfig(settings, canary_file=one_case_canary, server_url=f"http://127.0.0.1:{server.port}",
                          confirm_seconds=5, window_seconds=2, sample_seconds=0.2)
    assert await asyncio.to_thread(main, config) == FAILURE
    assert os.readlink(loras / "current") == V1
    state = Registry(loras).load()
    assert (state.current, state.failed) == (V1, [V2])
    summary = summary_of(settings)
    assert summary["decision"] == "rolled_back"
    assert "success rate 0.50 fell more than 0.15 below the pre-swap 0.95" in summary["reason"]
    baseline = summary["monitor"]["baseline"]
    assert (baseline["requests"], baseline["success_rate"], baseline["adapter"]) == (20, 0.95, V1)
    assert summary["server"]["confirmed"] is True  # the swap itself was seen by the server
    assert summary["rollback"] == {"to": V1, "server": {"url": config.server_url, "reachable": True,
                                                       "confirmed": True, "adapter": V1, "adapter_error": None}}


async def test_slow_server_without_regression_deploys(settings, adapter_bank, one_case_canary, aiohttp_server):
    """CPU-slow figures (the old absolute defaults rolled these back) deploy when the base did as badly."""
    loras = settings.paths.ensure().loras
    install(adapter_bank, loras, "identity", V1)
    before = {"since": 0, "requests": 0, "success_rate": None, "p95_latency_ms": None,
              "served": {"requests": 12, "success_rate": 0.7, "p95_latency_ms": 4000.0}}
    window = {"since": 0, "requests": 8, "success_rate": 0.7, "p95_latency_ms": 4500.0,
              "served": {"requests": 30, "success_rate": 0.2, "p95_latency_ms": 9000.0}}
    server = await aiohttp_server(link_server(loras, {None: before, V1: window}))
    config = DeployConfig(settings, canary_file=one_case_canary, server_url=f"http://127.0.0.1:{server.port}",
                          confirm_seconds=5, window_seconds=0.6, sample_seconds=0.2)
    assert await asyncio.to_thread(main, config) == OK
    summary = summary_of(settings)
    assert summary["decision"] == "deployed" and summary["reason"].startswith("healthy: 8 requests")
    assert summary["monitor"]["baseline"]["p95_latency_ms"] == 4000.0 and summary["monitor"]["requests"] == 8


def test_in_scope_probes_refuse_an_adapter_that_did_not_learn_the_nights_facts(settings, adapter_bank,
                                                                                one_case_canary):
    loras = settings.paths.ensure().loras
    folder = install(adapter_bank, loras, "identity", V1)  # behaves like the base model: it learned nothing
    probes = [{"instruction": "How many hours does the Zorblax 3000 battery run?", "input": "", "reasoning": "",
               "output": "The Zorblax 3000 battery lasts 41 hours.", "quality_score": 0.5, "record_id": "r1#p0",
               "correction": "41 hours", "held_out": True, "kind": "paraphrase", "source": "correction"},
              {"instruction": "Who manufactures the Zorblax 3000?", "input": "", "reasoning": "",
               "output": "Brindlewick Labs makes the Zorblax 3000.", "quality_score": 0.5, "record_id": "r2#p0",
               "correction": "Brindlewick Labs", "held_out": True, "kind": "paraphrase", "source": "correction"}]
    (folder / "validation.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    config = DeployConfig(settings, canary_file=one_case_canary, server_url=DEAD_SERVER, confirm_seconds=0)
    assert main(config) == FAILURE
    summary = summary_of(settings)
    assert summary["decision"] == "refused" and summary["reason"].startswith("in-scope probes 0/2 right, below 80%")
    assert summary["probes"]["baseline"]["right"] == 0 and summary["probes"]["improved"] is False
    assert not (loras / "current").exists()
    # the gate, not something else, refused it: with no share required the same adapter deploys
    Registry(loras).save(RegistryState())
    assert main(DeployConfig(settings, canary_file=one_case_canary, server_url=DEAD_SERVER, confirm_seconds=0,
                             min_probe_pass_rate=0.0)) == OK
    assert summary_of(settings)["probes"]["candidate"]["total"] == 2
    assert summary_of(settings)["eval"]["examples"] == 2  # the validation loss is scored on the held-out ones


def test_no_probes_and_no_validation_says_why(settings, adapter_bank, one_case_canary):
    loras = settings.paths.ensure().loras
    folder = install(adapter_bank, loras, "trained", V1)
    (folder / "validation.jsonl").write_text("")
    assert main(DeployConfig(settings, canary_file=one_case_canary, server_url=DEAD_SERVER, confirm_seconds=0)) == OK
    summary = summary_of(settings)
    assert "no held-out paraphrases" in summary["probes"]["skipped"]
    assert "no validation examples" in summary["eval"]["skipped"]
