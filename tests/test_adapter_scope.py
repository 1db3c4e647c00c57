"""Adapter scope on the real embedded model and the real sentence embedder: a scoped adapter answers only
queries near what it was trained on, the base model answers the rest, in one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from council.core.errors import AdapterError
from council.engine.adapter_scope import SCOPE_FILE, query_of, read_scope, write_scope
from council.engine.base import GenerationRequest
from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model
from council.memory.embedder import Embedder

pytestmark = pytest.mark.slow

TRAINED = "How long does the Zorblax 3000 battery last?"
PARAPHRASE = "How many hours does the Zorblax 3000's battery last?"
UNRELATED = "What is the capital of France?"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def scrambling_adapter(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:
    """A LoRA with random A and B (it turns every answer into something else), scoped to TRAINED."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    folder = tmp_path_factory.mktemp("scoped") / "20260101-000000-aaaaaa"
    peft_model.save_pretrained(folder)
    assert write_scope(folder, [TRAINED, TRAINED], embedder.embed) == 1
    return folder


def ask(question: str) -> GenerationRequest:
    return GenerationRequest([{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": question}], max_new_tokens=10)


def model_for(base_model_dir: Path, embedder: Embedder, similarity: float) -> LocalModel:
    base = resolve_base_model(str(base_model_dir), base_model_dir.parent)
    return LocalModel(base, torch_threads=1, scope_similarity=similarity, embed=embedder.embed)


def test_scoped_adapter_answers_near_queries_and_leaves_the_rest_to_the_base(base_model_dir, embedder,
                                                                             scrambling_adapter):
    model = model_for(base_model_dir, embedder, 0.75)
    questions = [TRAINED, UNRELATED, PARAPHRASE]
    bare = [model.generate_batch([ask(q)])[0] for q in questions]
    model.use_adapter(str(scrambling_adapter))
    mixed = model.generate_batch([ask(q) for q in questions])
    alone = [model.generate_batch([ask(q)])[0] for q in questions]

    version = scrambling_adapter.name
    assert [g.adapter for g in mixed] == [version, None, version]
    assert mixed[0].scope_similarity == pytest.approx(1.0, abs=1e-3)
    assert mixed[1].scope_similarity < 0.3 and mixed[2].scope_similarity > 0.75
    assert mixed[0].text != bare[0].text and mixed[2].text != bare[2].text  # the adapter changed these
    assert mixed[1].text == bare[1].text  # ...and not the unrelated one, though it shared their batch
    assert [g.text for g in mixed] == [g.text for g in alone]


def test_similarity_zero_serves_the_adapter_to_everything(base_model_dir, embedder, scrambling_adapter):
    model = model_for(base_model_dir, embedder, 0.0)
    bare = model.generate_batch([ask(UNRELATED)])[0]
    model.use_adapter(str(scrambling_adapter))
    served = model.generate_batch([ask(UNRELATED)])[0]
    assert served.adapter == scrambling_adapter.name and served.scope_similarity is None
    assert served.text != bare.text


def test_a_broken_scope_file_refuses_the_adapter_and_keeps_the_live_one(base_model_dir, embedder,
                                                                        scrambling_adapter, tmp_path):
    import shutil

    broken = tmp_path / "20260102-000000-bbbbbb"
    shutil.copytree(scrambling_adapter, broken)
    np.save(broken / SCOPE_FILE, np.ones((2, 7), dtype=np.float32))
    model = model_for(base_model_dir, embedder, 0.75)
    model.use_adapter(str(scrambling_adapter))
    with pytest.raises(AdapterError, match="rows of 384 floats"):
        model.use_adapter(str(broken))
    assert model.adapter_version == scrambling_adapter.name


def test_child_scope_keeps_the_parents_queries(tmp_path, embedder, scrambling_adapter):
    rows = write_scope(tmp_path, ["What colour is the Zorblax 3000?", TRAINED], embedder.embed,
                       parent=scrambling_adapter)
    scope = read_scope(tmp_path)
    assert rows == 2 and scope.shape == (2, 384)
    assert float(scope[0] @ embedder.embed([TRAINED])[0]) == pytest.approx(1.0, abs=1e-4)
    assert not list(tmp_path.glob(".*tmp"))


def test_the_query_is_the_last_user_message():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": "second"}]
    assert query_of(messages) == "second"
    assert query_of([{"role": "system", "content": "s"}]) == ""
