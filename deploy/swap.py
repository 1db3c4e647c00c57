"""Atomic re-pointing of ``loras/current`` and the lock that keeps two deploys apart.

A new symlink is made under a temporary dot-name in the same folder and moved over ``current`` with
``os.replace`` (a single ``rename(2)``), so at every instant ``current`` is either the old link or the new
one. Temporary links left by a killed process start with ``.current-`` and are swept by the next swap;
the registry ignores dot-names.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from council.core.atomic import fsync_path
from council.core.errors import CouncilError
from council.core.locks import exclusive
from council.engine.adapter_files import check_adapter_folder

log = logging.getLogger(__name__)

TEMP_PREFIX = ".current-"
LOCK_FILE = ".deploy.lock"


def sweep_temp_links(loras: Path) -> list[str]:
    """Remove ``.current-*`` links a killed swap left behind; returns their names."""
    removed = []
    for entry in loras.glob(f"{TEMP_PREFIX}*"):
        if entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d stray temporary link(s) in %s", len(removed), loras)
    return removed


def point_current(loras: Path, version: str | None, link_name: str = "current") -> None:
    """Make ``loras/<link_name>`` name ``version`` (relative target), or remove it for the base model.

    The target must be a complete adapter folder (AdapterError otherwise); the old link stays in place on
    any error.
    """
    link = loras / link_name
    if link.exists() and not link.is_symlink():
        raise CouncilError(f"{link} is a real file or folder, not a symlink; move it away first")
    if version is None:
        # unlink(2) is atomic: readers see the old link or no link (the base model).
        link.unlink(missing_ok=True)
        fsync_path(loras)
        return
    check_adapter_folder(loras / version)
    tmp = loras / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(loras)


def resolve_current(loras: Path, link_name: str = "current") -> Path | None:
    """The adapter folder the link names, checked complete; None when there is no link."""
    link = loras / link_name
    if not link.is_symlink():
        return None
    target = (loras / os.readlink(link)).resolve()
    check_adapter_folder(target)
    return target


@contextmanager
def deploy_lock(loras: Path) -> Iterator[None]:
    """Hold ``loras/.deploy.lock`` so only one deploy or rollback changes the link at a time.

    Creates ``loras`` when missing and sweeps stray temporary links once the lock is held; raises
    CouncilError at once when another deploy or rollback holds it.
    """
    with exclusive(loras / LOCK_FILE) as held:
        if not held:
            raise CouncilError(f"another deploy or rollback holds {loras / LOCK_FILE}; wait for it to finish")
        sweep_temp_links(loras)
        yield

