"""Child processes that never outlive the command that started them.

A command that starts servers (``council demo``, ``bench/nights_bench.py``) must stop them however it ends:
normally, by an error, by Ctrl-C, or by SIGTERM (what ``kill``, systemd and CI send). Python runs ``finally``
blocks and ``__exit__`` on Ctrl-C (KeyboardInterrupt) but not on SIGTERM, whose default action ends the process
at once, so ``exit_on_sigterm()`` turns SIGTERM into ``SystemExit(143)`` (128 + 15, the shell's convention)
while it is active. A parent killed outright (SIGKILL) runs nothing at all; ``die_with_parent`` (passed as
``preexec_fn``) asks Linux to send the child SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
man 2 prctl); elsewhere it does nothing.

    with exit_on_sigterm():
        process = subprocess.Popen(command, preexec_fn=die_with_parent)
        try: ...
        finally: process.terminate()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PR_SET_PDEATHSIG = 1  # linux/prctl.h
SIGTERM_EXIT = 128 + signal.SIGTERM


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(SIGTERM_EXIT)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """While active (main thread only; elsewhere a no-op), SIGTERM raises ``SystemExit(143)`` so that
    ``finally`` blocks and context managers stop what they started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
