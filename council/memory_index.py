"""The FAISS half of the memory store: an HNSW index over query embeddings and its file ``index.faiss``.

The index is a cache of what SQLite holds (``council.memory``): its ids are SQLite's integer primary keys and
its vectors the embeddings stored there, so it can always be rebuilt. HNSW (inner product on unit vectors =
cosine) inside an IndexIDMap2: at 100k x 384 a search with efSearch 96 costs about 1 ms of one core where
brute force (IndexFlatIP) costs over 10 ms (bench/memory_bench.py). HNSW cannot remove vectors; the store never
deletes.

The file is written atomically: a temp file ``index.faiss.tmp-<pid>-<random>`` in the same folder, fsynced,
then ``os.replace``. A process killed mid-save leaves only its temp file, removed by the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

HNSW_M = 32  # graph degree; changing it needs a rebuild (delete index.faiss)
HNSW_EF_CONSTRUCTION = 64
TEMP_MARK = ".tmp-"


def new_index(dim: int, ef_search: int) -> faiss.IndexIDMap2:
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = ef_search
    return faiss.IndexIDMap2(hnsw)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """FAISS calls in this block use no OpenMP team (the setting is per calling thread in libgomp).

    For one query, or a few vectors to add, a parallel region costs more than the work; on a busy 2-core
    machine its spinning threads turned a 0.2 ms HNSW search into 15 ms (measured, bench/memory_bench.py).
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_index(path: Path, dim: int, ef_search: int) -> faiss.IndexIDMap2 | None:
    """The index in ``path``; None (with a warning) when it is missing, unreadable or of another kind."""
    if not path.exists():
        return None
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        log.warning("%s is unreadable (%s)", path, str(exc).splitlines()[0][:200])
        return None
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if not isinstance(inner, faiss.IndexHNSWFlat) or index.d != dim:
        log.warning("%s is not a %d-d HNSW index inside an IndexIDMap2", path, dim)
        return None
    inner.hnsw.efSearch = ef_search
    return index


def index_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    return faiss.vector_to_array(index.id_map)


def mismatch(index: faiss.IndexIDMap2, fids: np.ndarray, stored: Callable[[int], np.ndarray]) -> str | None:
    """Why ``index`` cannot serve SQLite rows ``fids`` (sorted), or None when it is them or a prefix of them.

    Rows are indexed in id order and never deleted, so a good index holds exactly the first len(index) ids.
    The last indexed vector is compared with ``stored(id)`` as a cheap check that the file belongs to this store.
    """
    have = index_ids(index)
    if len(have) > len(fids) or not np.array_equal(np.sort(have), fids[:len(have)]):
        return f"it holds ids SQLite does not have ({len(have)} vectors, {len(fids)} rows)"
    if len(have) and not np.allclose(index.reconstruct(int(have[-1])), stored(int(have[-1])), atol=1e-6):
        return "its vectors do not match the embeddings stored in SQLite"
    return None


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
