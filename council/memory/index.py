"""The FAISS half of the memory store: an index over query embeddings and its file ``index.faiss``.

The index is a cache of what SQLite holds (``council.memory.store``): its ids are SQLite's integer primary keys and
its vectors the embeddings stored there, so it can always be rebuilt. The kind: 256 sign bits of a fixed random
rotation of each vector (``IndexLSH``, 32 bytes a vector) scanned by Hamming distance, then the best
``k x refine_factor`` candidates re-ranked exactly on the float vectors (``IndexRefineFlat``), in an IndexIDMap2.
Sign bits of random projections keep the angle between vectors (Charikar 2002, "Similarity estimation techniques
from rounding algorithms": P[bit differs] = angle / pi), so a neighbour at cosine 0.71 differs in ~64 of 256
bits where an unrelated vector differs in ~128 +- 8. Measured on one core at 1M random vectors, queries at cosine
~0.71: 2.0 ms a search warm, 5.1 ms with 100 MB of other memory touched between searches, recall@1 1.000, built
in 3.4 s; HNSW (M 32, efConstruction 64), the kind used before, reached recall@1 0.32 at efSearch 96 (1.8 ms) and
0.79 at 512 (8.3 ms), after 681 s of building; 384 unrotated bits took 4.5 ms (48-byte codes). The scan is
linear: about 2 ms per million records. Vectors cannot be removed in place: the store masks erased ids in
search and compacts, i.e. rebuilds the index from SQLite (``reconcile`` on open, ``add_rows`` on a new index
after a delete, run by a ``Rerun`` thread so no request waits for it).

The file is written atomically: a temp file ``index.faiss.tmp-<pid>-<random>`` in the same folder, fsynced,
then ``os.replace``. A process killed mid-save leaves only its temp file, removed by the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from council.core.errors import CouncilError

log = logging.getLogger(__name__)

REFINE_FACTOR = 32  # candidates re-ranked exactly per result asked for
CODE_BITS = 256
TEMP_MARK = ".tmp-"


def new_index(dim: int, refine_factor: int = REFINE_FACTOR) -> faiss.IndexIDMap2:
    # 256 sign bits of a fixed random rotation: 32-byte codes, which FAISS scans with its fastest Hamming kernel
    refine = faiss.IndexRefineFlat(faiss.IndexLSH(dim, CODE_BITS, True, False))  # exact re-rank on L2
    refine.k_factor = refine_factor
    return faiss.IndexIDMap2(refine)


def cosines(distances: np.ndarray) -> np.ndarray:
    """Squared L2 distances between unit vectors -> cosine similarities (|a - b|^2 = 2 - 2 cos)."""
    return 1.0 - distances / 2.0


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """FAISS calls in this block use no OpenMP team (the setting is per calling thread in libgomp).

    For one query, or a few vectors to add, a parallel region costs more than the work; on a busy 2-core
    machine its spinning threads turned a 0.2 ms search into 15 ms (measured, bench/memory_bench.py).
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_index(path: Path, dim: int, refine_factor: int) -> faiss.IndexIDMap2 | None:
    """The index in ``path``; None (with a warning) when it is missing, unreadable or of another kind (an HNSW
    file of an older Council is rebuilt from SQLite once)."""
    if not path.exists():
        return None
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        log.warning("%s is unreadable (%s)", path, str(exc).splitlines()[0][:200])
        return None
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if not isinstance(inner, faiss.IndexRefineFlat) or index.d != dim \
            or not isinstance(base := faiss.downcast_index(inner.base_index), faiss.IndexLSH) or base.nbits != CODE_BITS:
        log.warning("%s is not a %d-d %d-bit sign index with exact re-ranking in an IndexIDMap2", path, dim, CODE_BITS)
        return None
    inner.k_factor = refine_factor
    return index


def index_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    return faiss.vector_to_array(index.id_map)


def erased_in(index: faiss.IndexIDMap2, erased: np.ndarray) -> np.ndarray:
    """The ids of ``index`` that SQLite erased for good (its ``erased`` table)."""
    return np.intersect1d(index_ids(index), erased)


def mismatch(index: faiss.IndexIDMap2, fids: np.ndarray, stored: Callable[[int], np.ndarray],
             erased: np.ndarray | None = None) -> str | None:
    """Why ``index`` cannot serve SQLite rows ``fids`` (sorted), or None when it is them or a prefix of them,
    once the ``erased`` ids it may still hold are left aside (those call for a compaction, not a warning).

    Rows are indexed in id order, so a good index holds exactly the first len(index) ids that are not erased.
    The last indexed vector is compared with ``stored(id)`` as a cheap check that the file belongs to this store.
    """
    have = index_ids(index)
    if erased is not None and len(erased):
        have = have[~np.isin(have, erased)]
    if len(have) > len(fids) or not np.array_equal(np.sort(have), fids[:len(have)]):
        return f"it holds ids SQLite does not have ({len(have)} vectors, {len(fids)} rows)"
    if len(have) and not np.allclose(index.reconstruct(int(have[-1])), stored(int(have[-1])), atol=1e-6):
        return "its vectors do not match the embeddings stored in SQLite"
    return None


def add_rows(index: faiss.IndexIDMap2, fids: list[int],
             vectors: Callable[[list[int]], np.ndarray]) -> faiss.IndexIDMap2:
    """Add the stored vectors (``vectors(ids)``) of ``fids`` to ``index``, 5000 at a time; returns ``index``."""
    for start in range(0, len(fids), 5000):
        part = fids[start:start + 5000]
        index.add_with_ids(vectors(part), np.asarray(part, dtype=np.int64))
    return index


def reconcile(path: Path, dim: int, refine_factor: int, fids: np.ndarray, erased: np.ndarray,
              vectors: Callable[[list[int]], np.ndarray]) -> tuple[faiss.IndexIDMap2, bool]:
    """The index for SQLite rows ``fids`` (sorted) and whether it must be saved: the file's when it fits,
    extended when it is behind, compacted when it still holds ``erased`` ids, rebuilt with a warning when it
    is missing, unreadable or does not fit."""
    remove_stale_temp_files(path)
    index = load_index(path, dim, refine_factor)
    problem = index is not None and mismatch(index, fids, lambda fid: vectors([fid])[0], erased)
    if problem:
        log.warning("%s does not fit SQLite: %s", path, problem)
        index = None
    elif index is not None and len(gone := erased_in(index, erased)):
        log.info("%s still holds %d erased record(s); compacting it", path, len(gone))
        return add_rows(new_index(dim, refine_factor), fids.tolist(), vectors), True
    if index is None:
        rebuilt = len(fids) > 0 or path.exists()  # else: a brand-new store
        log.log(logging.WARNING if rebuilt else logging.DEBUG, "rebuilding %s from %d records in SQLite "
                "(SQLite is the source of truth)", path, len(fids))
        return add_rows(new_index(dim, refine_factor), fids.tolist(), vectors), rebuilt
    missing = fids[index.ntotal:]
    if len(missing):
        log.warning("%s is behind SQLite by %d records; extending it", path, len(missing))
    return add_rows(index, missing.tolist(), vectors), len(missing) > 0


class LiveIndex:
    """The index a store searches, thread-safe: adds, searches, erased ids masked until ``rebuild`` (the store's
    compaction) swaps in a new index, and saves of a snapshot (after ``save_every`` adds or 2% of the index,
    whichever is more); saves and compactions run in background threads, so no search or add waits for them."""

    def __init__(self, path: Path, dim: int, refine_factor: int, save_every: int, rebuild: Callable[[], None]) -> None:
        self.path, self.dim, self.refine_factor, self.save_every = path, dim, refine_factor, save_every
        self.index = new_index(dim, refine_factor)
        self.masked: set[int] = set()  # erased ids the index still holds
        self.unsaved = 0  # adds not yet in the file
        self._lock = threading.Lock()  # FAISS is not safe to search while it is being added to
        self._save_lock = threading.Lock()  # one save at a time
        self._saver = Rerun(self.save, "council-index-save")
        self._rebuild = rebuild
        self._compactor = Rerun(self._compact, "council-index-compact")

    def reconcile(self, fids: np.ndarray, erased: np.ndarray, vectors: Callable[[list[int]], np.ndarray]) -> None:
        """Load the file for SQLite rows ``fids`` (see ``reconcile``), saving it when it had to change."""
        self.index, save = reconcile(self.path, self.dim, self.refine_factor, fids, erased, vectors)
        if save:
            self.save()

    def add(self, vectors: np.ndarray, fids: list[int]) -> None:
        with self._lock, single_threaded() if len(fids) < 1000 else contextlib.nullcontext():
            self.index.add_with_ids(vectors, np.asarray(fids, dtype=np.int64))
            self.unsaved += len(fids)
            due = self.unsaved >= max(self.save_every, self.index.ntotal // 50)
        if due:
            self._saver.request()

    def search(self, query: np.ndarray, n: int, min_similarity: float) -> tuple[list[tuple[int, float]], int, int]:
        """(id, cosine) of up to ``n`` nearest unmasked vectors at or above ``min_similarity``, how many such
        neighbours (masked ones too) were seen, and the index size."""
        with self._lock, single_threaded():
            total = self.index.ntotal
            if total == 0:
                return [], 0, 0
            distances, ids = self.index.search(query, min(n, total))
            near = [(int(i), float(s)) for s, i in zip(cosines(distances[0]), ids[0], strict=True)
                    if i >= 0 and s >= min_similarity]
            return [(i, s) for i, s in near if i not in self.masked], len(near), total

    def mask(self, fids: list[int], compact: bool = True) -> None:
        """Hide erased ids from search; ``compact``: rebuild without them in the background."""
        with self._lock:
            self.masked.update(fids)
        if compact:
            self._compactor.request()

    def _compact(self) -> None:
        try:
            self._rebuild()
        except CouncilError as exc:  # searches still skip the masked ids; the next open compacts
            log.warning("could not compact %s: %s", self.path, exc.message)

    def swap(self, index: faiss.IndexIDMap2, indexed: set[int]) -> None:
        """Serve ``index`` (a rebuild holding ``indexed``) from now on; masked ids it no longer holds unmasked."""
        with self._lock:
            self.index, self.unsaved = index, index.ntotal
            self.masked &= indexed

    def count(self) -> int:
        return int(self.index.ntotal) - len(self.masked)

    def resync(self) -> None:
        """Rebuild from SQLite in the background (after an add that SQLite committed but the index missed)."""
        self._compactor.request()

    def save(self) -> None:
        """Write a copy of the index, taken between two adds; adds and searches go on while it is written."""
        with self._save_lock:
            with self._lock:
                source, snapshot, saved = self.index, faiss.clone_index(self.index), self.unsaved
            if save_index(snapshot, self.path):
                with self._lock:
                    if self.index is source:  # else a compaction swapped in another index, to be saved
                        self.unsaved -= saved

    def stop(self) -> None:
        """Wait for a running save or compaction; start no more."""
        self._compactor.stop()
        self._saver.stop()


class Rerun:
    """Runs ``job`` in a daemon thread, and again as long as it was requested meanwhile; ``stop`` waits for it."""

    def __init__(self, job: Callable[[], None], name: str) -> None:
        self._job, self._name = job, name
        self._lock = threading.Lock()
        self._wanted = self._stopped = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._wanted = True
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._wanted or self._stopped:
                    self._thread = None
                    return
                self._wanted = False
            try:
                self._job()
            except BaseException:  # the thread ends with the traceback; a later request starts a new one
                with self._lock:
                    self._thread = None
                raise

    def stop(self) -> None:
        with self._lock:
            self._stopped, thread = True, self._thread
        if thread is not None:
            thread.join()


def save_index(index: faiss.IndexIDMap2, path: Path) -> bool:
    """Write ``index`` to ``path`` atomically. The caller must keep adds out meanwhile; searches may go on
    (both only read the index), so a save (about 1 s at 100k records, mostly fsync) never stalls a search.

    Returns False after logging a warning when it could not (disk full, read-only): the caller's records are
    already safe in SQLite and the next open catches the index up.
    """
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except (RuntimeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        log.warning("could not save %s (%s); SQLite has every record, the next open catches it up", path, exc)
        return False
    return True


def remove_stale_temp_files(path: Path) -> None:
    """Delete temp files of index saves whose process is gone (killed mid-save)."""
    for tmp in path.parent.glob(path.name + TEMP_MARK + "*"):
        pid = tmp.name[len(path.name + TEMP_MARK):].split("-")[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            log.info("removing %s left by an interrupted index save", tmp)
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
