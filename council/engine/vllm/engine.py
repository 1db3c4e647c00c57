"""The Engine interface on one vLLM replica, with the in-process model's adapter switch and scope, so that
deploy's canary and in-scope probes run through the engine that serves (``deploy/canary.py``)::

    engine = VllmEngine(VllmReplica(url), "smollm2", scope_similarity=0.75)
    engine.use_adapter("/srv/council/loras/v20261130-0200")   # AdapterError unless the replica holds it
    engine.generate(messages, max_new_tokens=16).text        # the version in scope, the base model outside

Greedy answers only need the text; logprobs are not asked for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from council.core.errors import AdapterError
from council.engine.adapter_scope import Embed, query_of, read_scope, similarities
from council.engine.base import Generation, GenerationRequest
from council.engine.sampling import SamplingParams
from council.engine.vllm.client import VllmReplica


class VllmEngine:
    """Greedy generations on ``replica``: the selected adapter version for requests in its scope, else the base."""

    def __init__(self, replica: VllmReplica, base_name: str, scope_similarity: float = 0.0,
                 embed: Embed | None = None) -> None:
        self.replica, self.base_name, self.scope_similarity, self._embed = replica, base_name, scope_similarity, embed
        self.adapter_version: str | None = None
        self.adapter_scope: Any = None

    def use_adapter(self, folder: str | None) -> bool:
        """Answer with ``folder``'s version (None = the base model); AdapterError when the replica lacks it."""
        version = os.path.basename(os.path.realpath(folder)) if folder else None
        if version is not None and version not in self.replica.models():
            raise AdapterError(f"vLLM replica {self.replica.url} does not hold adapter {version}")
        changed = version != self.adapter_version
        self.adapter_version = version
        self.adapter_scope = read_scope(Path(folder)) if folder and self.scope_similarity > 0 else None
        return changed

    def _answerer(self, messages: list[dict[str, str]]) -> tuple[str | None, float | None]:
        if self.adapter_version is None or self.adapter_scope is None:
            return self.adapter_version, None
        if self._embed is None:
            from council.memory.embedder import Embedder

            self._embed = Embedder().embed
        (score,) = similarities(self.adapter_scope, [query_of(messages)], self._embed)
        return (self.adapter_version if score >= self.scope_similarity else None), round(score, 4)

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int,
                 sampling: SamplingParams | None = None) -> Generation:
        """One greedy answer (``sampling`` is ignored: checks decode greedily).
        Raises ModelUnavailableError when the replica does not answer."""
        started = time.perf_counter()
        adapter, similarity = self._answerer(messages)
        text = self.replica.answer(adapter or self.base_name, messages, max_new_tokens)
        return Generation(text=text, finish_reason="stop", adapter=adapter, seconds=time.perf_counter() - started,
                          scope_similarity=similarity)

    def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation | Exception]:
        results: list[Generation | Exception] = []
        for request in requests:
            try:
                results.append(self.generate(request.messages, request.max_new_tokens))
            except Exception as exc:  # noqa: BLE001 - returned as that request's own error (Engine contract)
                results.append(exc)
        return results
