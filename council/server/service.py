"""One chat exchange end to end: recall, route, score, record durably — the part behind the HTTP handler.

Recall (``memory.share``): a request by user U gets corrected exchanges (their correction as the answer) and
successful ones, of U only or of anyone as the setting says; ``delete`` erases one record everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from council.core.batcher import Batcher
from council.core.config import Settings
from council.core.errors import CouncilError, NotFoundError, StorageError
from council.engine.tool_calls import call_text, check_correction, is_call_text
from council.memory.embedder import BatchingEmbedder
from council.memory.erasure import scrub_files
from council.memory.schema import ExchangeRecord, new_record_id
from council.memory.scope_cuts import out_of_scope
from council.memory.store import MemoryStore
from council.routing.router import Decision, Router
from council.server.stats import ServerStats
from council.server.validation import COUNCIL_MODEL, ChatRequest

log = logging.getLogger(__name__)


@dataclass
class Answer:
    record: ExchangeRecord
    decision: Decision
    stored: bool = True  # False for ``store: false``: the record was never written


class ChatService:
    """Holds the server's long-lived parts and answers ``ChatRequest``s."""

    def __init__(self, settings: Settings, router: Router, memory: MemoryStore, embedder: BatchingEmbedder,
                 stats: ServerStats, live_adapter: Any,
                 arriving: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext) -> None:
        self.settings = settings
        self.router = router
        self.memory = memory
        self.embedder = embedder
        self.stats = stats
        self.live_adapter = live_adapter  # callable -> str | None: the adapter the local model serves now
        self.arriving = arriving  # the in-process engine's batch waits while a request is being prepared
        self.started = int(time.time())  # the models' "created" time
        # records are written in batches by one thread; a request returns only after its batch is committed
        self.writer: Batcher[tuple[ExchangeRecord, Any]] = Batcher(self._write, name="council-write")

    def models(self) -> list[str]:
        c = self.settings.council
        seen = dict.fromkeys([COUNCIL_MODEL, c.agent0, *c.heads.values(), *(m for ms in c.fallbacks.values() for m in ms)])
        return list(seen)

    def check_model(self, model: str) -> None:
        if model not in self.models():
            raise NotFoundError(f"model {model!r} does not exist; GET /v1/models lists the available ones",
                                code="model_not_found", param="model")

    async def _recall(self, query: str, user: str | None) -> tuple[Any, list[tuple[ExchangeRecord, float]]]:
        """The query's embedding and what it recalls, both computed in the embedder's thread (one hop)."""
        c = self.settings.council
        if c.memory_k == 0:
            return await self.embedder.embed_one(query), []
        return await self.embedder.embed_then(query, lambda vector: self.memory.search(
            vector, c.memory_k, c.memory_min_similarity, share=self.settings.memory.share, user=user))

    def _write(self, items: list[tuple[ExchangeRecord, Any]]) -> list[None]:
        self.memory.add_many(items)  # one transaction, one fsync, for every record waiting (group commit)
        return [None] * len(items)

    async def close(self) -> None:
        """Write the records still waiting, then stop the writer thread."""
        await self.writer.close()

    async def answer(self, request: ChatRequest, user: str | None, session: str | None,
                     on_text: Callable[[str], Awaitable[None]] | None = None, record_id: str | None = None) -> Answer:
        """Route ``request``, then write its record (id ``record_id``, default a new one); returns only after the
        record is durable. With ``on_text`` the answer is Agent-0's, passed on piece by piece as the model makes
        it (``Router.stream``: no heads; a low-confidence answer is recorded as a failure)."""
        self.check_model(request.model)
        started = time.perf_counter()
        direct = None if request.model == COUNCIL_MODEL else request.model
        params = request.sampling(self.settings.council.temperature)
        with self.arriving():  # requests sent together decode together (LocalProvider.arriving)
            vector, context = await self._recall(request.query, user)
            if not request.may_call_tools:  # a call is no fact to recall: without tools it would be imitated
                context = [(r, sim) for r, sim in context if not is_call_text(r.gold_answer or r.answer)]
            if on_text is None:
                decision = await self.router.decide(request.messages, params, context, direct_model=direct)
            else:
                decision = await self.router.stream(request.messages, params, context, on_text, direct_model=direct)
        winner = decision.winner
        latency_ms = (time.perf_counter() - started) * 1000
        record = ExchangeRecord(
            id=record_id or new_record_id(),
            query=request.query,
            answer=call_text(winner.tool_calls) if winner.tool_calls else winner.text,  # calls as the model writes them
            confidence=winner.confidence,
            # an answer held to a grammar (JSON, calls) that the token limit cut is broken, however sure
            success=winner.confidence >= self.settings.council.threshold and not (
                winner.finish_reason == "length" and (request.response_format or request.may_call_tools)),
            model=winner.model,
            user=user,
            session=session,
            messages=request.messages,
            adapter=winner.adapter if winner.model.startswith("local/") else None,
            route=[*decision.route, f"winner:{winner.head}"],
            latency_ms=round(latency_ms, 3),
            context_ids=[r.id for r, _ in context],
            tools=request.tools, response_format=request.response_format, tool_calls=winner.tool_calls,
        )
        if request.store:  # ``store: false`` (evaluation, probes, private questions): answered, kept nowhere
            await self.writer.submit((record, vector))
        self.stats.observe(winner.head, record.success, record.confidence, latency_ms, record.failure_source,
                           escalated=len(decision.route) > 1 and decision.route[1] != "stream", adapter=record.adapter, live=self.live_adapter())
        self.stats.memory_size.set(self.memory.count())
        return Answer(record=record, decision=decision, stored=request.store)

    async def feedback(self, record_id: str, thumbs: str | None, rating: int | None,
                       correction: str | None) -> ExchangeRecord:
        if correction is not None:  # taught as the answer: it must be of the kind the request asked for
            asked = await self.record(record_id)
            check_correction(correction, asked.response_format, asked.tools)
        memory = self.settings.memory  # a newer correction of the same question supersedes the user's older ones
        record = await asyncio.to_thread(self.memory.apply_feedback, record_id, thumbs, rating, correction,
                                         supersede_similarity=memory.supersede_similarity,
                                         any_user=memory.share == "all")
        for kind, given in (("thumbs_" + (thumbs or ""), thumbs), ("rating", rating), ("correction", correction)):
            if given is not None:
                self.stats.feedback.labels(kind).inc()
        if correction is not None and record.supersedes:  # the adapter may have learned the old value: out of scope
            await asyncio.to_thread(self._unscope, record.supersedes)
        return record

    def _unscope(self, record_ids: list[str]) -> None:
        replaced = [r for r in (self.memory.get(i) for i in record_ids) if r is not None]
        try:
            cut = out_of_scope(self.settings.paths, replaced, lambda: self.embedder.embedder.embed)
        except (OSError, CouncilError):  # the correction is committed; the old value stays in scope till tonight
            log.exception("a newer correction replaced %d; their adapter scope rows could not be cut", len(replaced))
            return
        if cut:
            log.info("a newer correction replaced %d: %d adapter scope row(s) cut", len(replaced), cut)

    async def records(self, limit: int, after: str | None, success: bool | None, since: Any,
                      user: str | None) -> tuple[list[ExchangeRecord], bool]:
        """A page of records, newest first (see ``MemoryStore.page``), read off the event loop."""
        return await asyncio.to_thread(self.memory.page, limit, after, success, since, user)

    def _erase(self, record_id: str) -> None:
        records = self.memory.delete([record_id])  # the index is compacted in a background thread
        if not records:
            raise NotFoundError(f"no record {record_id!r}", code="record_not_found")
        try:
            scrubbed = scrub_files(self.settings.paths, records, lambda: self.embedder.embedder.embed)  # the server's
        except OSError as exc:
            raise StorageError(f"record {record_id} was erased from the memory but not from every file: {exc}") from exc
        log.info("erased a record (and %d line(s) in %d file(s))", scrubbed.lines, len(scrubbed.files))  # no id: no trace

    async def delete(self, record_id: str) -> None:
        """Erase one record from the memory, from recall and from every file that copied it (``council/memory/erasure.py``)."""
        await asyncio.to_thread(self._erase, record_id)
        self.stats.memory_size.set(self.memory.count())

    async def record(self, record_id: str) -> ExchangeRecord:
        record = await asyncio.to_thread(self.memory.get, record_id)
        if record is None:
            raise NotFoundError(f"no record {record_id!r}", code="record_not_found")
        return record

