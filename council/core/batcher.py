"""Micro-batching for the request path: concurrent awaits of one blocking function become one call in a thread.

The server's per-request blocking work (embedding the query, searching the memory, writing the record durably)
costs less per item in batches, and each hop between the event loop and a thread costs CPU and GIL time of its
own. ``Batcher(run)`` queues ``await batcher.submit(item)`` calls; a worker task hands everything queued so far
(up to ``max_batch``) to ``run(items) -> results`` on ONE dedicated thread and resolves each caller's future with
its result. Nothing waits for company by default (``max_wait_ms`` 0): while one batch runs, the calls arriving
meanwhile form the next, so a lone request is never delayed and a busy server batches by itself.

When ``run`` raises for a batch, its items are run again one by one, so only the culprit's caller gets the error;
a result that is an exception instance is raised to its own caller.

    writer = Batcher(lambda items: store.add_many(items) or [None] * len(items), name="council-write")
    await writer.submit((record, vector))   # returns once the batch holding it is committed
    await writer.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from council.core.errors import CouncilError

log = logging.getLogger(__name__)

Item = TypeVar("Item")
_STOP = object()  # queue sentinel that ends the worker


class Batcher(Generic[Item]):
    """Runs ``run`` on batches of submitted items in one worker thread (see the module docstring)."""

    def __init__(self, run: Callable[[list[Item]], Sequence[Any]], *, max_batch: int = 64, max_wait_ms: float = 0.0,
                 name: str = "council-batch") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0 (0 = no waiting for company)")
        self.run, self.max_batch, self.max_wait, self.name = run, max_batch, max_wait_ms / 1000.0, name
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def submit(self, item: Item) -> Any:
        """``run``'s result for ``item``, computed in a batch with whatever else is waiting. Raises what ``run``
        raised for this item, or CouncilError (code ``batcher_closed``) after ``close``."""
        if self._closed:
            raise CouncilError(f"{self.name} is closed", code="batcher_closed")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._loop(), name=self.name)
        elif self._worker.done():  # only if its event loop was torn down under it
            raise CouncilError(f"{self.name} has stopped; create a new one", code="batcher_closed")
        future: asyncio.Future = loop.create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        stop = False
        while not stop:
            first = await queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    entry = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            entry = await queue.get()
                    except TimeoutError:
                        break
                if entry is _STOP:
                    stop = True
                    break
                batch.append(entry)
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        items = [item for item, _ in batch]
        try:
            results = await loop.run_in_executor(self._executor, self.run, items)
            if len(results) != len(items):
                raise CouncilError(f"{self.name}: {len(results)} results for {len(items)} items")
        except Exception as exc:  # never swallowed: retried one by one, the failing caller receives it
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("%s: a batch of %d failed (%s); running its items one by one", self.name, len(batch),
                        type(exc).__name__)
            for entry in batch:
                await self._run_batch(loop, [entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Finish every call already waiting, then stop the worker thread. Later calls raise CouncilError."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put_nowait(_STOP)
            await self._worker
        self._executor.shutdown(wait=True)
