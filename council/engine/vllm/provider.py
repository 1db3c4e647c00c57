"""The ``local`` litellm provider backed by vLLM replicas (``[engine] kind = "vllm"``).

The council keeps asking for ``local/smollm2``; this provider answers through litellm's ``hosted_vllm/``
route on one replica (round robin over the replicas that answer, the next one when a call cannot connect),
naming the live adapter version as the model for requests in its scope and the base model for the rest, with
logprobs for confidence. A client that goes away cancels the call, and vLLM aborts the request. Tool calls and
``response_format`` are held to the in-process engine's grammar by vLLM's structured outputs
(``council.engine.vllm.tools`` says how, and why not vLLM's own tool parser).

The provider also keeps the replicas in line with ``loras/current``: every ``engine.sync_seconds`` it asks each
replica which adapters it holds, loads the live one where it is missing (a replica that restarted or missed a
deploy), and unloads versions that were live before the newest ``engine.keep_loaded``. ``health()`` shows each
replica's state for ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import litellm
from litellm import CustomLLM, Message, ModelResponse
from litellm.types.utils import GenericStreamingChunk

from council.core.config import Settings
from council.core.errors import AdapterError, CouncilError, ModelUnavailableError
from council.engine.adapter_files import check_adapter_folder
from council.engine.adapter_scope import Embed, query_of, read_scope, similarities
from council.engine.grammar import WORDS, Constraint
from council.engine.model_files import BaseModel, resolve_base_model
from council.engine.sampling import SamplingParams
from council.engine.tool_calls import as_text_messages, only_repeats
from council.engine.vllm.client import VllmReplica
from council.engine.vllm.process import VllmProcess
from council.engine.vllm.tools import settle, vllm_keywords

log = logging.getLogger(__name__)
UNREACHABLE = (litellm.APIConnectionError, litellm.ServiceUnavailableError, litellm.Timeout,
               litellm.InternalServerError)


class ReplicaState:
    """What Council last saw of one replica."""

    def __init__(self, url: str) -> None:
        self.replica, self.up, self.adapters, self.error = VllmReplica(url), False, set(), None
        self.checked_at: float | None = None

    def to_dict(self, live: str | None) -> dict[str, Any]:
        return {"url": self.replica.url, "up": self.up, "adapters": sorted(self.adapters),
                "live_loaded": live is None or live in self.adapters, "error": self.error}


class VllmProvider(CustomLLM):
    """Serves ``local/<name>`` from vLLM replicas and keeps them on ``loras/current``."""

    def __init__(self, settings: Settings, embed: Embed | None = None) -> None:
        super().__init__()
        self.settings, self.engine, self.embed = settings, settings.engine, embed
        self.adapter_link = settings.paths.current_adapter
        self.process: VllmProcess | None = None
        self.replicas: list[ReplicaState] = []
        self.base: BaseModel | None = None
        self.adapter_version: str | None = None
        self.adapter_path: str | None = None
        self.adapter_scope: Any = None
        self.adapter_error: str | None = None
        self.adapter_error_path: str | None = None
        self.adapter_changed_at = time.time()
        self._recent: deque[str] = deque(maxlen=self.engine.keep_loaded)  # live versions, newest first
        self._was_live: set[str] = set()
        self._turn = itertools.count()
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the local vLLM server when no ``engine.urls`` are set, serve ``loras/current``, keep syncing."""
        self.base = await asyncio.to_thread(resolve_base_model, self.settings.model.source, self.settings.paths.models)
        urls = list(self.engine.urls)
        if not urls:
            self.process = VllmProcess(self.engine, self.base.path, self.settings.paths.logs / "vllm.log")
            self.process.start()
            log.info("starting vLLM on %s (log %s)", self.process.url, self.process.log_path)
            await self.process.wait_ready()
            urls = [self.process.url]
        self.replicas = [ReplicaState(url) for url in urls]
        await self.sync_adapter()
        self._task = asyncio.create_task(self._keep_in_sync(), name="council-vllm-sync")

    # ---------- adapters ----------
    def _link_target(self) -> str | None:
        link = self.adapter_link
        return os.path.realpath(link) if link.is_symlink() or link.is_dir() else None

    def link_changed(self) -> bool:
        """Cheap, safe on the event loop: does ``loras/current`` name something not yet tried?"""
        target = self._link_target()
        if target == self.adapter_path:
            return self.adapter_error is not None
        return target is None or target != self.adapter_error_path

    async def sync_adapter(self) -> bool:
        """Serve what ``loras/current`` names now, on every replica; True if the live adapter changed."""
        async with self._sync_lock:
            target, changed = self._link_target(), False
            if target == self.adapter_path:
                self.adapter_error = self.adapter_error_path = None
            elif target is None or target != self.adapter_error_path:
                try:
                    await self._go_live(target)
                    changed = True
                except CouncilError as exc:
                    self.adapter_error, self.adapter_error_path = exc.message, target
                    log.error("keeping adapter %s: %s", self.adapter_version or "(base)", exc.message)
            await self._reconcile()
            return changed

    async def _go_live(self, target: str | None) -> None:
        version, scope = None, None
        if target is not None:
            version = os.path.basename(target)
            await asyncio.to_thread(check_adapter_folder, Path(target))
            if self.settings.model.adapter_scope_similarity > 0:
                scope = await asyncio.to_thread(read_scope, Path(target))
            loaded = await asyncio.gather(*(self._ensure(state, version, target) for state in self.replicas))
            if not any(loaded):
                errors = "; ".join(f"{s.replica.url}: {s.error}" for s in self.replicas)
                raise AdapterError(f"adapter {version} loads on no vLLM replica ({errors})")
            self._recent.appendleft(version)
            self._was_live.add(version)
        self.adapter_version, self.adapter_path, self.adapter_scope = version, target, scope
        self.adapter_error = self.adapter_error_path = None
        self.adapter_changed_at = time.time()
        log.info("serving adapter %s on %d vLLM replica(s)", version or "(base model)", len(self.replicas))

    async def _ensure(self, state: ReplicaState, version: str, path: str) -> bool:
        """Load ``version`` on one replica unless it holds it; False (with ``state.error``) when it cannot."""
        if version in state.adapters:
            return True
        try:
            await asyncio.to_thread(state.replica.load_adapter, version, path)
        except CouncilError as exc:
            state.error = exc.message
            return False
        state.adapters.add(version)
        log.info("vLLM replica %s loaded adapter %s", state.replica.url, version)
        return True

    async def _reconcile(self) -> None:
        await asyncio.gather(*(self._reconcile_one(state) for state in self.replicas))

    async def _reconcile_one(self, state: ReplicaState) -> None:
        try:
            models = await asyncio.to_thread(state.replica.models)
        except CouncilError as exc:
            if state.up:
                log.warning("vLLM replica %s is down: %s", state.replica.url, exc.message)
            state.up, state.error = False, exc.message
            return
        state.up, state.checked_at = True, time.time()
        state.adapters = {name for name, parent in models.items() if parent}
        if self.adapter_version and self.adapter_path and await self._ensure(state, self.adapter_version,
                                                                             self.adapter_path):
            state.error = None
        for stale in state.adapters & (self._was_live - set(self._recent)):
            with contextlib.suppress(CouncilError):
                await asyncio.to_thread(state.replica.unload_adapter, stale)
                state.adapters.discard(stale)

    async def _keep_in_sync(self) -> None:
        while True:
            await asyncio.sleep(self.engine.sync_seconds)
            try:
                if self.process is not None and not self.process.running():
                    log.warning("the vLLM server exited; starting it again (log %s)", self.process.log_path)
                    self.process.start()
                    await self.process.wait_ready()
                await self.sync_adapter()
            except Exception:  # noqa: BLE001 - logged; syncing must outlive any one bad round
                log.exception("vLLM sync failed; trying again in %.1f s", self.engine.sync_seconds)

    # ---------- requests ----------
    async def _model_for(self, messages: list[dict[str, Any]]) -> str | None:
        """The adapter version that answers ``messages`` (in the live adapter's scope), or None = the base."""
        if self.adapter_version is None:
            return None
        if self.adapter_scope is None:
            return self.adapter_version
        embed = self.embed
        if embed is None:
            from council.memory.embedder import Embedder

            embed = self.embed = (await asyncio.to_thread(Embedder)).embed
        (score,) = await asyncio.to_thread(similarities, self.adapter_scope, [query_of(messages)], embed)
        return self.adapter_version if score >= self.settings.model.adapter_scope_similarity else None

    def _order(self, adapter: str | None) -> list[ReplicaState]:
        """Replicas to try: up ones holding ``adapter`` first, in turn; then the others."""
        start = next(self._turn)
        ring = [self.replicas[(start + i) % len(self.replicas)] for i in range(len(self.replicas))]
        return sorted(ring, key=lambda s: (not s.up, adapter is not None and adapter not in s.adapters))

    async def _call(self, messages: list, sampling: SamplingParams, stream: bool,
                    constraint: Constraint | None) -> tuple[Any, str | None]:
        messages = as_text_messages(messages)  # tool calls and results as text, as the in-process engine sees them
        adapter = await self._model_for(messages)
        name = adapter or self.engine.served_model_name
        errors = []
        for state in self._order(adapter):
            try:
                response = await litellm.acompletion(model=f"hosted_vllm/{name}", api_base=f"{state.replica.url}/v1",
                                                     api_key="none", messages=messages, logprobs=True, stream=stream,
                                                     **vllm_keywords(sampling, self.settings.model.max_new_tokens,
                                                                     constraint))
                return response, adapter
            except UNREACHABLE as exc:
                state.up, state.error = False, f"{type(exc).__name__}: {exc}"
                errors.append(f"{state.replica.url}: {type(exc).__name__}")
        raise ModelUnavailableError(f"no vLLM replica answered ({'; '.join(errors) or 'none configured'})")

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                          logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        started = time.perf_counter()
        sampling = SamplingParams.from_litellm(optional_params)
        constraint = sampling.constraint(messages)
        response, adapter = await self._call(messages, sampling, False, constraint)
        choice = response.choices[0]
        text, finish, calls = settle(choice.message.content or "", choice.finish_reason, constraint)
        if calls and sampling.tool_choice in (None, "auto") and only_repeats(calls, messages):
            # "auto" and only calls already answered: the model answers in words instead (a second decode)
            constraint = WORDS
            response, adapter = await self._call(messages, sampling, False, constraint)
            choice = response.choices[0]
            text, finish, calls = choice.message.content or "", choice.finish_reason, None
        if constraint is not None and constraint.kind in ("tools", "words"):
            choice.message = Message(content=None if calls else text, role="assistant", tool_calls=calls)
            choice.finish_reason = finish
        response.model = f"local/{model}"
        response._hidden_params["council_adapter"] = adapter
        response._hidden_params["council_seconds"] = time.perf_counter() - started
        return response

    async def astreaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                         model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                         logging_obj: Any, optional_params: dict, *args: Any,
                         **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        sampling = SamplingParams.from_litellm(optional_params)
        stream, adapter = await self._call(messages, sampling, True, sampling.constraint(messages))
        finish, usage = "stop", None
        async for chunk in stream:
            choice = chunk.choices[0] if chunk.choices else None
            text = (choice.delta.content or "") if choice is not None else ""
            finish = (choice.finish_reason if choice is not None else None) or finish
            usage = getattr(chunk, "usage", None) or usage
            logprobs = getattr(choice, "logprobs", None) if choice is not None else None
            content = getattr(logprobs, "content", None) or []
            if text:
                yield GenericStreamingChunk(text=text, is_finished=False, finish_reason="", usage=None, index=0,
                                            tool_use=None,
                                            provider_specific_fields={"logprobs": [t.logprob for t in content]})
        usage_dict = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.total_tokens} if usage else None
        yield GenericStreamingChunk(text="", is_finished=True, finish_reason=finish, usage=usage_dict, index=0,
                                    tool_use=None, provider_specific_fields={"adapter": adapter})

    # ---------- state ----------
    def health(self) -> dict[str, Any]:
        return {"engine": "vllm", "replicas": [s.to_dict(self.adapter_version) for s in self.replicas]}

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.process is not None:
            self.process.stop()
