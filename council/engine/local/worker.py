"""Model work on one thread: every call that touches the in-process model runs there, in order, so an adapter
swap happens between two generations and never under one, and the aiohttp event loop never waits on torch.

    worker = ModelWorker(max_queue=64)
    generation = await worker.run(model.generate, messages, 64)     # OverloadedError when 64 are waiting
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from council.core.errors import OverloadedError


class ModelWorker:
    """Runs model work on one thread; at most ``max_queue`` jobs may be running or waiting."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="council-model")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[..., Any], *args: Any, control: bool = False, **kwargs: Any) -> Any:
        """Run ``fn`` on the model thread; ``control`` jobs (adapter swaps) are never refused."""
        with self._lock:
            if self._pending >= self.max_queue and not control:
                raise OverloadedError(
                    f"the local model already has {self._pending} requests queued (model.max_queue="
                    f"{self.max_queue}); retry shortly"
                )
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
