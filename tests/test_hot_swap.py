"""Adapter swaps on the real embedded model: weights copied into the loaded adapter (PEFT hotswap) answer
exactly as the same adapter loaded into a fresh model, whatever its rank or alpha."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def adapters(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random LoRAs (non-zero B, so each changes the answers differently): two shapes, two alphas."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("swaps")
    made = {}
    shapes = [("r4", 4, 16, ["q_proj", "v_proj"]), ("r4b", 4, 16, ["q_proj", "v_proj"]),
              ("r8", 8, 16, ["q_proj", "v_proj"]), ("r4-alpha32", 4, 32, ["q_proj", "v_proj"]),
              ("r4-qkvo", 4, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])]  # more modules: loaded beside
    for seed, (name, rank, alpha, modules) in enumerate(shapes):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules,
                                         init_lora_weights=False)).save_pretrained(folder / name)
        made[name] = folder / name
    return made


def local(base_model_dir: Path) -> LocalModel:
    return LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1)


def test_swapped_adapters_answer_as_freshly_loaded_ones(base_model_dir, adapters):
    expected = {}
    for name, folder in adapters.items():
        fresh = local(base_model_dir)
        fresh.use_adapter(str(folder))
        expected[name] = fresh.generate(ASK, 10).text
    assert len(set(expected.values())) == len(expected)  # the adapters really differ
    served = local(base_model_dir)
    bare = served.generate(ASK, 10).text
    for name in ["r4", "r4b", "r8", "r4-alpha32", "r4-qkvo", "r4"]:
        assert served.use_adapter(str(adapters[name]))
        assert served.adapter_version == name
        assert served.generate(ASK, 10).text == expected[name], name
    assert list(served.peft_model.peft_config) == [served.peft_name]  # one set of adapter weights loaded
    served.use_adapter(None)
    assert served.generate(ASK, 10).text == bare
    served.use_adapter(str(adapters["r4b"]))
    assert served.generate(ASK, 10).text == expected["r4b"]


def test_a_corrupt_adapter_is_refused_and_the_live_one_answers_as_before(base_model_dir, adapters, tmp_path):
    import shutil

    from council.core.errors import AdapterError

    broken = tmp_path / "broken"
    shutil.copytree(adapters["r4b"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    served = local(base_model_dir)
    served.use_adapter(str(adapters["r4"]))
    before = served.generate(ASK, 10).text
    with pytest.raises(AdapterError, match="broken failed to load"):
        served.use_adapter(str(broken))
    assert served.adapter_version == "r4" and served.generate(ASK, 10).text == before
