"""Memory store and embedder: persistence, index recovery, search, windows, feedback, errors, batching, kill -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np
import pytest

from council.core.errors import CouncilError, InvalidRequestError, NotFoundError, StorageError
from council.memory.embedder import BatchingEmbedder, Embedder
from council.memory.schema import ExchangeRecord, Feedback
from council.memory.store import MemoryStore

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def rec(query: str, success: bool = True, at: datetime = T0, **kw) -> ExchangeRecord:
    return ExchangeRecord(query=query, answer=f"answer to {query}", confidence=0.9 if success else 0.3,
                          success=success, model="local/smollm2", created_at=at, **kw)


def unit(seed: int, dim: int = 384) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


def fill(store: MemoryStore, n: int, start: int = 0) -> list[ExchangeRecord]:
    records = [rec(f"question {i}", at=T0 + timedelta(seconds=i)) for i in range(start, start + n)]
    store.add_many([(r, unit(i)) for r, i in zip(records, range(start, start + n), strict=True)])
    return records


def test_records_persist_across_close_and_reopen(tmp_path):
    store = MemoryStore.open(tmp_path)
    full = rec("full", user="u1", session="s1", messages=[{"role": "user", "content": "full"}], adapter="v1",
               route=["agent0", "math"], latency_ms=12.5, context_ids=["rec_a"],
               feedback=Feedback(thumbs="up", rating=4, at=T0), harvested_at=T0 + timedelta(hours=1))
    store.add(full, unit(1))
    others = fill(store, 3, start=10)
    store.close()

    store = MemoryStore.open(tmp_path)
    try:
        assert store.count() == 4
        assert store.get(full.id) == full  # every field, incl. JSON columns and datetimes, round-trips
        assert [store.get(r.id).query for r in others] == ["question 10", "question 11", "question 12"]
        assert store.get("rec_missing") is None
        np.testing.assert_allclose(store.vectors([others[1].id, full.id]), np.stack([unit(11), unit(1)]), atol=1e-6)
        with pytest.raises(NotFoundError):
            store.vectors(["rec_missing"])
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["delete", "garbage", "foreign_ids"])
def test_damaged_index_is_rebuilt_from_sqlite(tmp_path, caplog, damage):
    store = MemoryStore.open(tmp_path / "a")
    records = fill(store, 6)
    store.close()
    index = tmp_path / "a" / "index.faiss"
    if damage == "delete":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(os.urandom(4096))
    else:  # an index from a bigger store: ids SQLite does not have
        big = MemoryStore.open(tmp_path / "b")
        fill(big, 9, start=100)
        big.close()
        index.write_bytes((tmp_path / "b" / "index.faiss").read_bytes())

    with caplog.at_level(logging.WARNING, logger="council.memory.store"):
        store = MemoryStore.open(tmp_path / "a")
    try:
        assert "rebuilding" in caplog.text
        assert faiss.read_index(str(index)).ntotal == 6  # the rebuilt index was saved
        for i, r in enumerate(records):
            hits = store.search(unit(i), k=1, min_similarity=0.99)
            assert [(h.id, round(s, 4)) for h, s in hits] == [(r.id, 1.0)]
    finally:
        store.close()


def test_temp_file_of_a_dead_save_is_removed_and_live_one_kept(tmp_path):
    store = MemoryStore.open(tmp_path)
    fill(store, 2)
    store.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"index.faiss.tmp-{dead.pid}-0123abcd"
    live = tmp_path / f"index.faiss.tmp-{os.getpid()}-4567cdef"  # a save in progress in a running process
    for path in (stale, live):
        path.write_bytes(b"half-written index")
    store = MemoryStore.open(tmp_path)
    try:
        assert not stale.exists() and live.exists() and store.count() == 2
    finally:
        store.close()


def test_index_behind_sqlite_is_extended(tmp_path, caplog):
    store = MemoryStore.open(tmp_path, save_every=10_000)
    fill(store, 5)
    store.close()  # index saved with 5 vectors
    crashed = MemoryStore.open(tmp_path, save_every=10_000)
    late = fill(crashed, 3, start=5)  # committed to SQLite, index never saved (as if killed before close)
    assert faiss.read_index(str(tmp_path / "index.faiss")).ntotal == 5

    with caplog.at_level(logging.WARNING, logger="council.memory.store"):
        store = MemoryStore.open(tmp_path)
    try:
        assert "behind SQLite by 3 records; extending" in caplog.text and "rebuilding" not in caplog.text
        assert store.count() == 8
        for i, r in enumerate(late, start=5):
            assert store.search(unit(i), k=1, min_similarity=0.99)[0][0].id == r.id
    finally:
        store.close()
        crashed.close()


def test_search_returns_similar_successes_only(tmp_path, embedder):
    store = MemoryStore.open(tmp_path)
    good = rec("How do I reverse a list in Python?")
    failed = rec("How can I reverse a Python list?", success=False)
    other = rec("What is the capital of France?")
    texts = [good.query, failed.query, other.query]
    store.add_many(list(zip([good, failed, other], embedder.embed(texts), strict=True)))
    try:
        query = embedder.embed(["reverse a list in python"])[0]
        hits = store.search(query, k=3, min_similarity=0.6)
        assert [h.id for h, _ in hits] == [good.id]
        assert hits[0][1] > 0.6
        everything = store.search(query, k=3, min_similarity=0.6, success_only=False)
        assert {h.id for h, _ in everything} == {good.id, failed.id}
        assert [s for _, s in everything] == sorted((s for _, s in everything), reverse=True)
        assert store.search(query, k=3, min_similarity=-1.0, success_only=False)[-1][0].id == other.id
        assert store.search(query, k=0, min_similarity=0.0) == []
    finally:
        store.close()


def test_search_digs_past_many_failed_neighbours(tmp_path):
    store = MemoryStore.open(tmp_path)
    base = unit(0)
    near = [(rec(f"fail {i}", success=False), base + 0.02 * unit(100 + i)) for i in range(40)]
    target = rec("the one that worked")
    store.add_many([*near, (target, base + 0.2 * unit(7))])
    try:
        assert [h.id for h, _ in store.search(base, k=1, min_similarity=0.5)] == [target.id]
    finally:
        store.close()


def test_concurrent_adds_and_searches_from_threads(tmp_path):
    store = MemoryStore.open(tmp_path, save_every=16)

    def worker(t: int) -> list[str]:
        ids = []
        for i in range(25):
            r = rec(f"thread {t} question {i}")
            store.add(r, unit(1000 * t + i))
            assert store.search(unit(1000 * t + i), k=1, min_similarity=0.99)[0][0].id == r.id
            ids.append(r.id)
        return ids

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = [rid for chunk in pool.map(worker, range(4)) for rid in chunk]
        assert store.count() == 100 and all(store.get(rid) for rid in ids)
    finally:
        store.close()
    assert faiss.read_index(str(tmp_path / "index.faiss")).ntotal == 100


def test_window_filters_time_success_and_harvested(tmp_path):
    store = MemoryStore.open(tmp_path)
    a, b = rec("a", at=T0), rec("b", success=False, at=T0 + timedelta(hours=1))
    c, d = rec("c", success=False, at=T0 + timedelta(hours=2)), rec("d", at=T0 + timedelta(hours=3))
    store.add_many([(r, unit(i)) for i, r in enumerate([d, c, b, a])])
    try:
        ids = lambda rs: [r.id for r in rs]  # noqa: E731
        assert ids(store.window(T0, T0 + timedelta(hours=3))) == [a.id, b.id, c.id]  # [since, until), oldest first
        assert ids(store.window(T0, T0 + timedelta(days=1), success=False)) == [b.id, c.id]
        assert ids(store.window(T0, T0 + timedelta(days=1), success=True)) == [a.id, d.id]
        when = T0 + timedelta(days=1)
        store.mark_harvested([b.id], when)
        assert ids(store.window(T0, when, success=False, harvested=False)) == [c.id]
        assert ids(store.window(T0, when, harvested=True)) == [b.id] and store.get(b.id).harvested_at == when
        with pytest.raises(NotFoundError):
            store.mark_harvested([c.id, "rec_missing"], when)
        assert store.get(c.id).harvested_at is None  # all or nothing
        with pytest.raises(ValueError, match="timezone"):
            store.window(datetime(2025, 1, 1), when)
    finally:
        store.close()


def test_feedback_flips_success_and_updates_in_place(tmp_path):
    store = MemoryStore.open(tmp_path)
    r = rec("what is 2+2")
    store.add(r, unit(3))
    try:
        liked = store.apply_feedback(r.id, thumbs="up", rating=5)
        assert liked.success and liked.feedback.thumbs == "up" and liked.feedback.rating == 5
        assert store.search(unit(3), k=1, min_similarity=0.9)[0][0].id == r.id

        fixed = store.apply_feedback(r.id, correction="4")
        assert not fixed.success and fixed.failure_source == "correction" and fixed.gold_answer == "4"
        assert fixed.feedback.thumbs == "up" and fixed.feedback.rating == 5  # merged, not replaced
        assert store.search(unit(3), k=1, min_similarity=0.9) == []  # no longer a success

        again = store.apply_feedback(r.id, thumbs="down", rating=1)
        stored = store.get(r.id)
        assert stored == again and stored.feedback.correction == "4" and stored.feedback.rating == 1
        assert store.count() == 1 and not stored.success
        assert not store.apply_feedback(r.id, thumbs="up").success  # positive feedback never un-fails
    finally:
        store.close()


@pytest.mark.parametrize("kwargs", [{"thumbs": "sideways"}, {"rating": 0}, {"rating": 6}, {"rating": True},
                                    {"rating": 2.5}, {"correction": "  "}, {}])
def test_invalid_feedback_is_rejected(tmp_path, kwargs):
    store = MemoryStore.open(tmp_path)
    r = rec("q")
    store.add(r, unit(1))
    try:
        with pytest.raises(InvalidRequestError):
            store.apply_feedback(r.id, **kwargs)
        assert store.get(r.id).feedback is None
        with pytest.raises(NotFoundError):
            store.apply_feedback("rec_missing", thumbs="down")
    finally:
        store.close()


def test_full_disk_is_storage_error_and_nothing_half_written(tmp_path):
    store = MemoryStore.open(tmp_path)
    kept = fill(store, 2)
    try:
        # SQLITE_FULL for real: cap the database at its current size (what a full disk does to SQLite).
        pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
        store._writer.execute(f"PRAGMA max_page_count = {pages}")
        big = [(rec("x" * 200_000), unit(50)), (rec("y"), unit(51))]
        with pytest.raises(StorageError) as info:
            store.add_many(big)
        assert info.value.status == 507 and isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert store.count() == 2 and store.get(big[1][0].id) is None
        assert [h.id for h, _ in store.search(unit(51), k=5, min_similarity=0.9)] == []
        with pytest.raises(InvalidRequestError):
            store.add(kept[0], unit(9))  # duplicate id
    finally:
        store.close()
    store = MemoryStore.open(tmp_path)
    try:
        assert store.count() == 2
    finally:
        store.close()


def test_embedder_gives_unit_vectors_closer_for_similar_text(embedder):
    vectors = embedder.embed(["How do I reverse a list?", "Reversing a Python list", "Best pizza in Naples"])
    assert vectors.shape == (3, Embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert embedder.embed([]).shape == (0, Embedder.dim)


class CountingEmbedder(Embedder):
    """The real embedder, counting how many batches it is asked to run."""

    def __init__(self, inner: Embedder) -> None:  # shares the loaded model instead of loading it again
        self.inner = inner
        self.batches: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return self.inner.embed(texts)


async def test_batching_embedder_batches_concurrent_calls(embedder):
    counting = CountingEmbedder(embedder)
    batching = BatchingEmbedder(counting, max_batch=8, max_wait_ms=20.0)
    texts = [f"question number {i} about lists" for i in range(20)]
    vectors = await asyncio.gather(*(batching.embed_one(t) for t in texts))
    assert len(counting.batches) < len(texts) and sum(counting.batches) == len(texts)
    assert max(counting.batches) <= 8
    np.testing.assert_allclose(np.stack(vectors), embedder.embed(texts), atol=1e-5)  # each caller got its own row
    await batching.close()
    with pytest.raises(CouncilError):
        await batching.embed_one("after close")


CHILD = textwrap.dedent("""
    import sys, numpy as np
    from council.memory.store import MemoryStore
    from council.memory.schema import ExchangeRecord
    store = MemoryStore.open(sys.argv[1], save_every=1)  # saves the index after every add: kills land mid-save
    rng = np.random.default_rng(0)
    i = 0
    while True:
        r = ExchangeRecord(query=f"q{i}", answer="a", confidence=0.9, success=True, model="m")
        store.add(r, rng.standard_normal(384))
        sys.stdout.write(r.id + "\\n")
        sys.stdout.flush()
        i += 1
""")


def test_sigkill_mid_write_loses_no_acknowledged_record(tmp_path):
    folder = tmp_path / "memory"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    acknowledged = []
    try:
        while len(acknowledged) < 60:
            line = proc.stdout.readline()
            assert line, f"child died: {proc.stderr.read()}"
            acknowledged.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    acknowledged += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    proc.stdout.close()
    proc.stderr.close()

    store = MemoryStore.open(folder)
    try:
        assert [rid for rid in acknowledged if store.get(rid) is None] == []
        assert store.count() >= len(acknowledged)
        assert not list(folder.glob("index.faiss.tmp-*"))  # the killed writer's temp file is cleaned up
        last = store.vectors([acknowledged[-1]])[0]
        assert store.search(last, k=1, min_similarity=0.99)[0][0].id == acknowledged[-1]
    finally:
        store.close()


# ---- recall: corrections, successes, users (memory.share) ----------------------------------------------------

def _near(base: np.ndarray, seed: int, spread: float = 0.05) -> np.ndarray:
    return base + spread * unit(seed)


def _recall_store(tmp_path) -> tuple[MemoryStore, dict[str, ExchangeRecord], np.ndarray]:
    """alice's and bob's and an anonymous success, correction and plain failure, all near one query."""
    store = MemoryStore.open(tmp_path)
    base, records, items = unit(0), {}, []
    for n, user in enumerate(("alice", "bob", None)):
        name = user or "anon"
        records[f"{name}-ok"] = rec(f"{name} success", user=user)
        records[f"{name}-fixed"] = rec(f"{name} corrected", success=False, user=user)
        records[f"{name}-bad"] = rec(f"{name} failure", success=False, user=user)
        items += [(records[f"{name}-{kind}"], _near(base, 10 * n + i)) for i, kind in enumerate(("ok", "fixed", "bad"))]
    store.add_many(items)
    for name in ("alice", "bob", "anon"):
        store.apply_feedback(records[f"{name}-fixed"].id, thumbs="down", correction=f"{name}'s correction")
    return store, records, base


@pytest.mark.parametrize("share, user, expected", [
    ("corrections", "alice", {"alice-ok", "alice-fixed", "bob-fixed", "anon-fixed"}),
    ("corrections", None, {"anon-ok", "alice-fixed", "bob-fixed", "anon-fixed"}),
    ("none", "alice", {"alice-ok", "alice-fixed"}),
    ("none", None, {"anon-ok", "anon-fixed"}),
    ("all", "bob", {"alice-ok", "alice-fixed", "bob-ok", "bob-fixed", "anon-ok", "anon-fixed"}),
])
def test_recall_filters_by_share_and_user_and_never_plain_failures(tmp_path, share, user, expected):
    store, records, base = _recall_store(tmp_path)
    try:
        hits = store.search(base, k=20, min_similarity=0.5, share=share, user=user)
        names = {name for name, r in records.items() for h, _ in hits if h.id == r.id}
        assert names == expected
        ranked = [h.gold_answer is not None for h, _ in hits]
        assert ranked == sorted(ranked, reverse=True)  # near-equal similarity: corrections lead
        assert [h.id for h, _ in store.search(base, k=20, min_similarity=0.5)] == [
            h.id for h, _ in store.search(base, k=20, min_similarity=0.5, success_only=True)]  # old callers: same
    finally:
        store.close()


def test_a_correction_beats_later_confident_wrong_answers_to_the_same_question(tmp_path):
    store = MemoryStore.open(tmp_path)
    base = unit(0)
    fixed = rec("How long does the Zorblax battery last?", success=False)
    store.add(fixed, base)
    store.apply_feedback(fixed.id, thumbs="down", correction="41 hours")
    wrong = [rec("How long does the  zorblax battery last?") for _ in range(6)]  # asked again, wrong but sure
    store.add_many([(r, base) for r in wrong])
    other = [rec(f"Zorblax question {i}") for i in range(40)]  # many more-similar-looking successes
    store.add_many([(r, base + 0.01 * unit(100 + i)) for i, r in enumerate(other)])
    try:
        hits = store.search(base, k=3, min_similarity=0.5, share="corrections")
        assert hits[0][0].id == fixed.id and hits[0][0].gold_answer == "41 hours"
        assert not {h.id for h, _ in hits} & {r.id for r in wrong}  # superseded by the correction
        assert len(hits) == 3
    finally:
        store.close()


# ---- erasure ----------------------------------------------------------------------------------------------------

def _file_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def test_delete_masks_compacts_and_leaves_no_text_in_the_files(tmp_path, caplog):
    store = MemoryStore.open(tmp_path)
    keep = fill(store, 5)
    secret = rec("the launch code is PLUGH-XYZZY-7731", user="alice")
    store.add(secret, unit(99))
    store.apply_feedback(secret.id, correction="never say PLUGH-XYZZY-7731")  # the row was rewritten once
    assert b"PLUGH-XYZZY" in _file_bytes(tmp_path)
    try:
        gone = store.delete([secret.id, "rec_unknown"], compact=False)
        assert [r.id for r in gone] == [secret.id] and gone[0].gold_answer == "never say PLUGH-XYZZY-7731"
        assert store.get(secret.id) is None and store.count() == 5
        assert store.search(unit(99), k=1, min_similarity=0.9, success_only=False) == []  # masked, not compacted
        assert store._live.index.ntotal == 6
        assert b"PLUGH-XYZZY" not in _file_bytes(tmp_path)  # database, WAL and index files
        assert store._writer.execute("PRAGMA secure_delete").fetchone()[0] == 1  # not only a build default
        assert store.delete(["rec_unknown"]) == []
    finally:
        store.close()
    with caplog.at_level(logging.INFO, logger="council.memory.index"):
        store = MemoryStore.open(tmp_path)  # the saved index still held the erased vector: compacted on open
    try:
        assert "holds 1 erased record(s); compacting it" in caplog.text and "does not fit" not in caplog.text
        assert store._live.index.ntotal == 5 and faiss.read_index(str(tmp_path / "index.faiss")).ntotal == 5
        late = rec("added after the erasure")
        store.add(late, unit(100))
        fid = store._writer.execute("SELECT fid FROM records WHERE id = ?", (late.id,)).fetchone()[0]
        assert fid == 7  # the erased record's id 6 is never given again
        assert [h.id for h, _ in store.search(unit(2), k=1, min_similarity=0.9)] == [keep[2].id]
    finally:
        store.close()


def test_masked_neighbours_do_not_cost_hits_and_compaction_runs_in_the_background(tmp_path):
    store = MemoryStore.open(tmp_path)
    base = unit(0)
    near = [rec(f"erased {i}") for i in range(30)]
    store.add_many([(r, base + 0.01 * unit(100 + i)) for i, r in enumerate(near)])
    far = [rec(f"kept {i}") for i in range(3)]
    store.add_many([(r, base + 0.3 * unit(200 + i)) for i, r in enumerate(far)])
    try:
        store.delete([r.id for r in near])  # masked at once, compacted by a background thread
        hits = store.search(base, k=3, min_similarity=0.5)
        assert sorted(h.id for h, _ in hits) == sorted(r.id for r in far)
        for _ in range(100):
            if store._live.index.ntotal == 3:
                break
            time.sleep(0.05)
        assert store._live.index.ntotal == 3 and store.count() == 3
    finally:
        store.close()
    assert faiss.read_index(str(tmp_path / "index.faiss")).ntotal == 3


def test_records_erased_by_another_process_are_masked_and_compacted(tmp_path):
    server = MemoryStore.open(tmp_path)
    records = fill(server, 4)
    other = MemoryStore.open(tmp_path, index=False)  # e.g. council forget while the server runs
    try:
        with pytest.raises(ValueError):
            other.delete()  # ids or a user
        other.delete([records[1].id], compact=False)
        assert server.search(unit(1), k=1, min_similarity=0.9) == []
        for _ in range(100):
            if server._live.index.ntotal == 3:
                break
            time.sleep(0.05)
        assert server._live.index.ntotal == 3 and server.count() == 3
        assert server.search(unit(2), k=1, min_similarity=0.9)[0][0].id == records[2].id
    finally:
        other.close()
        server.close()


def test_deletes_under_concurrent_searches_and_compactions_do_not_stall(tmp_path, caplog):
    """A delete holds the write lock while it waits for readers to leave the WAL; a compaction reading its
    snapshot must not wait for that lock meanwhile (it once did: the WAL stayed untruncated, deletes stalled)."""
    caplog.set_level(logging.WARNING, logger="council.memory.erasure")
    store = MemoryStore.open(tmp_path)
    records = fill(store, 60)
    stop = time.monotonic() + 30

    def search() -> None:
        while time.monotonic() < stop:
            store.search(unit(7), k=5, min_similarity=-1.0, share="all")

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            searchers = [pool.submit(search) for _ in range(2)]
            started = time.monotonic()
            for r in records[:8]:
                store.delete([r.id])  # each starts a background compaction
                time.sleep(0.05)
            took = time.monotonic() - started
            stop = 0.0
            for future in searchers:
                future.result()
        assert took < 15, f"8 deletes took {took:.1f} s"
        assert "could not be truncated" not in caplog.text  # every delete emptied the write-ahead log
        assert store.count() == 52
    finally:
        store.close()
