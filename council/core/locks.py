"""Cross-process run locks: one exclusive, non-blocking lock file per kind of run, built on ``filelock``.

Harvest (``logs/harvest.lock``), training (``loras/.train.lock``), deploy/rollback (``loras/.deploy.lock``)
and the nightly loop (``<home>/nightly.lock``) each refuse to start while another process holds their lock::

    with exclusive(loras / ".deploy.lock") as held:
        if not held:
            raise CouncilError("another deploy holds it; wait for it to finish")
        ...  # the lock is held until the block ends

The lock is an ``flock(2)`` on the file (``filelock.FileLock``, native backend only): the kernel drops it when
the holder exits or is killed, so a crashed run never leaves a stale lock behind. A second ``exclusive`` on
the same path in the same process is refused too (each call opens its own descriptor). The lock file is
created when missing (with its parent folders; permissions from the umask) and never deleted, so every run
locks the same inode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


def _write_pid(fd: int) -> None:
    """Replace the lock file's contents with ``<pid>\\n`` of this process (a hint for people, never read)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


@contextmanager
def exclusive(path: Path, *, write_pid: bool = False) -> Iterator[bool]:
    """Try once, without waiting, to lock ``path`` for the duration of the ``with`` block.

    Yields True while this process holds the lock (released when the block ends, however it ends) and False
    at once when another holder has it; in that case nothing in the file is touched. With ``write_pid`` the
    file holds this process's id while the lock is held (and afterwards, until the next holder writes its
    own). Raises OSError when the file or its folder cannot be created or opened (a read-only state
    directory, missing permissions) or the filesystem has no ``flock``.
    """
    lock = FileLock(
        path,
        timeout=0,  # one attempt; contention raises Timeout
        thread_local=False,  # the holder may leave the block in another thread than it entered
        fallback_to_soft=False,  # a soft lock survives a killed holder; refuse instead
        preserve_lock_file=True,  # the path stays in place on release
        on_acquired=_write_pid if write_pid else None,
    )
    try:
        lock.acquire()
    except Timeout:
        held = False
    else:
        held = True
    if not held:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
