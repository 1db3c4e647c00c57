"""The ``local`` litellm provider: in-process transformers models behind ``litellm.acompletion``.

``register_local_provider(settings)`` loads the base model (converting the embedded GGUF once) and adds
a ``litellm.CustomLLM`` under the name ``local`` to ``litellm.custom_provider_map``; from then on
``litellm.acompletion(model="local/smollm2", ...)`` runs here, off the event loop, requests that wait
together decoded as one batch (``council/engine/local/batched.py``), with per-token logprobs in
``choices[0].logprobs`` (and in each stream chunk's ``provider_specific_fields["logprobs"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import CustomLLM, ModelResponse  # noqa: E402
from litellm.types.utils import Choices, GenericStreamingChunk, Message, Usage  # noqa: E402

from council.core.config import Settings  # noqa: E402
from council.core.errors import AdapterError, InvalidRequestError  # noqa: E402
from council.engine.adapter_scope import Embed  # noqa: E402
from council.engine.base import Generation, GenerationRequest, TokenLogprob  # noqa: E402
from council.engine.grammar import WORDS  # noqa: E402
from council.engine.local.arrivals import Arrivals  # noqa: E402
from council.engine.local.model import LocalModel  # noqa: E402
from council.engine.local.worker import ModelWorker  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.engine.sampling import SamplingParams  # noqa: E402
from council.engine.tool_calls import as_text_messages, only_repeats  # noqa: E402

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True  # no "file a bug" banners in our logs for provider errors
PROVIDER = "local"
LOCAL_NAMES = ("smollm2",)


def logprobs_payload(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [t.to_openai() for t in logprobs]}


def _settle(future: asyncio.Future[Generation], result: Generation | Exception) -> None:
    if future.done():  # the caller went away (a closed stream)
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


class LocalProvider(CustomLLM):
    """Serves ``local/<name>`` from one in-process model and keeps it on ``loras/current``."""

    def __init__(self, settings: Settings, embed: Embed | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.embed = embed  # query embedder for adapter scopes; None = load one when a scoped adapter is
        self.adapter_link = settings.paths.current_adapter
        self.worker = ModelWorker(settings.model.max_queue)
        self._waiting: list[tuple[GenerationRequest, asyncio.Future[Generation], asyncio.AbstractEventLoop]] = []
        self._waiting_lock = threading.Lock()
        self.batch_sizes: Counter[int] = Counter()  # requests per decoded batch -> batches so far
        self.model: LocalModel | None = None
        self._load_lock = asyncio.Lock()
        self.arrivals = Arrivals()  # requests on their way here: a batch waits for them (model.batch_wait_ms)

    async def start(self) -> None:
        """Load the base model (off the loop) and the adapter ``loras/current`` names, if any."""
        async with self._load_lock:
            if self.model is None:
                base = await asyncio.to_thread(
                    resolve_base_model, self.settings.model.source, self.settings.paths.models
                )
                self.model = await asyncio.to_thread(LocalModel.from_settings, base, self.settings.model,
                                                     self.embed)
        await self.sync_adapter()

    def _link_target(self) -> str | None:
        link = self.adapter_link
        return os.path.realpath(link) if link.is_symlink() or link.is_dir() else None

    def _sync(self) -> bool:
        model = self._require_model()
        target = self._link_target()
        if target == model.adapter_path:  # the link names the live adapter again: any refusal is over
            model.adapter_error = model.adapter_error_path = None
            try:
                model.refresh_scope()  # erasure may have cut rows from its scope.npy
            except AdapterError as exc:
                log.error("adapter %s keeps its scope: %s", model.adapter_version, exc)
            return False
        if target is not None and target == model.adapter_error_path:
            return False
        try:
            return model.use_adapter(target)
        except Exception as exc:  # noqa: BLE001 - refused with its reason in /health; serving goes on
            if not isinstance(exc, AdapterError):
                log.exception("unexpected error loading adapter %s", target)
            model.adapter_error = str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
            model.adapter_error_path = target
            log.error("keeping adapter %s: %s", model.adapter_version or "(base)", model.adapter_error)
            return False

    async def sync_adapter(self) -> bool:
        """Serve whatever ``loras/current`` names now; True if the live adapter changed."""
        return await self.worker.run(self._sync, control=True)

    def _require_model(self) -> LocalModel:
        if self.model is None:
            raise RuntimeError("LocalProvider.start() must run before generating")
        return self.model

    def _check_model(self, model: str) -> None:
        if model not in LOCAL_NAMES:
            raise InvalidRequestError(
                f"unknown local model {model!r}; local models: {', '.join(PROVIDER + '/' + n for n in LOCAL_NAMES)}",
                code="model_not_found",
            )

    def request(self, messages: list[dict[str, Any]], optional_params: dict[str, Any],
                **callbacks: Any) -> GenerationRequest:
        """The GenerationRequest for one litellm call: its ``SamplingParams``, the token limit capped at
        ``model.max_new_tokens``, the grammar its tools or response_format (and calls in ``messages``) ask for."""
        sampling = SamplingParams.from_litellm(optional_params)
        return GenerationRequest(as_text_messages(messages), sampling.limited(self.settings.model.max_new_tokens),
                                 sampling, sampling.constraint(messages), **callbacks)

    async def generate(self, request: GenerationRequest) -> Generation:
        """One generation on the model thread, decoded in a batch with whatever else waits (OverloadedError
        when the queue is full).

        Each request queues itself and one drain job; the model thread's first drain takes up to
        ``model.max_batch`` waiting requests, so by the time a request's own drain has run, it was served."""
        loop = asyncio.get_running_loop()
        if request.cancelled is None:
            request.cancelled = threading.Event()
        entry = (request, loop.create_future(), loop)
        request.on_failed = lambda exc: loop.call_soon_threadsafe(_settle, entry[1], exc)
        with self._waiting_lock:
            self._waiting.append(entry)
        self.arrivals.queued()  # this request's batch need not wait for it any more
        drain = asyncio.ensure_future(self.worker.run(self._drain))
        drain.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: never "lost"
        try:
            await asyncio.wait({drain, entry[1]}, return_when=asyncio.FIRST_COMPLETED)
            if not entry[1].done():
                drain.result()  # raises OverloadedError when the queue was full
            return await entry[1]  # settled by its batch (or at once, when it could not start)
        except BaseException:  # overloaded, or the caller went away: nothing is generated for nobody
            drain.cancel()  # its slot is freed now; the model thread sees `cancelled` at the next step
            request.cancelled.set()
            with self._waiting_lock:
                if entry in self._waiting:
                    self._waiting.remove(entry)
            raise

    def arriving(self) -> contextlib.AbstractContextManager[None]:
        """Around a request's handling: a batch about to start waits for it (``council/engine/local/arrivals.py``)."""
        return self.arrivals.arriving()

    def _drain(self) -> None:
        """Decode up to ``model.max_batch`` waiting requests as one batch (on the model thread).

        The rule that keeps every request served: ``generate`` queues a request together with exactly one
        drain job, and drain jobs run one after another. When a request's own drain starts, an earlier drain
        has taken it or this one takes it, so none waits for a drain that never comes; a drain that finds
        nothing waiting (its request went with an earlier batch) returns at once."""
        self.arrivals.wait(self.settings.model.batch_wait_ms / 1000)
        with self._waiting_lock:
            batch = self._waiting[: self.settings.model.max_batch]
            del self._waiting[: len(batch)]
        if not batch:
            return
        self.batch_sizes[len(batch)] += 1
        try:
            self._sync()  # a changed loras/current takes effect at the next batch, ahead of queued work
        except OSError as exc:  # the link cannot be read now; the watcher reports it, the batch goes on
            log.warning("cannot read %s: %s", self.adapter_link, exc)
        try:
            results: list[Any] = self._require_model().generate_batch([request for request, _, _ in batch])
        except Exception as exc:  # not hidden: every request of the batch receives it as its own error
            results = [exc] * len(batch)
        for (_, future, loop), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result)

    def link_changed(self) -> bool:
        """Cheap check, safe on the event loop: does ``loras/current`` name something not yet tried?"""
        model = self._require_model()
        target = self._link_target()
        if target == model.adapter_path:
            return model.adapter_error is not None
        return target is None or target != model.adapter_error_path

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                          logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        self._check_model(model)
        started = time.perf_counter()
        request = self.request(messages, optional_params)
        gen = await self.generate(request)
        if gen.tool_calls and request.sampling.tool_choice in (None, "auto") and only_repeats(gen.tool_calls, messages):
            # "auto" and only calls already answered: the model answers in words instead (a second decode)
            gen = await self.generate(replace(request, constraint=WORDS, cancelled=None, on_failed=None))
        message = Message(content=gen.text if gen.tool_calls is None else None, role="assistant",
                          tool_calls=gen.tool_calls)
        model_response.choices = [Choices(index=0, finish_reason=gen.finish_reason, message=message,
                                          logprobs=logprobs_payload(gen.logprobs))]
        model_response.model = f"{PROVIDER}/{model}"
        model_response.usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                                     total_tokens=gen.prompt_tokens + gen.completion_tokens)
        model_response._hidden_params["council_adapter"] = gen.adapter
        model_response._hidden_params["council_seconds"] = time.perf_counter() - started
        return model_response

    async def astreaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                         model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                         logging_obj: Any, optional_params: dict, *args: Any,
                         **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        self._check_model(model)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, TokenLogprob] | None] = asyncio.Queue()
        cancelled = threading.Event()

        def on_text(text: str, token: TokenLogprob) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (text, token))

        task = asyncio.ensure_future(self.generate(self.request(messages, optional_params, on_text=on_text,
                                                                cancelled=cancelled)))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        try:
            while (item := await queue.get()) is not None:
                text, token = item
                yield GenericStreamingChunk(text=text, is_finished=False, finish_reason="", usage=None, index=0,
                                            tool_use=None,
                                            provider_specific_fields={"logprobs": [token.logprob]})
            gen = await task
            usage = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                     "total_tokens": gen.prompt_tokens + gen.completion_tokens}
            yield GenericStreamingChunk(text="", is_finished=True, finish_reason=gen.finish_reason, usage=usage,
                                        index=0, tool_use=None,
                                        provider_specific_fields={"adapter": gen.adapter})
        finally:
            cancelled.set()

    @property
    def adapter_version(self) -> str | None:
        return self.model.adapter_version if self.model is not None else None

    @property
    def adapter_error(self) -> str | None:
        return self.model.adapter_error if self.model is not None else None

    @property
    def adapter_changed_at(self) -> float:
        return self.model.adapter_changed_at if self.model is not None else 0.0

    @property
    def base(self) -> Any:
        return self.model.base if self.model is not None else None

    def health(self) -> dict[str, Any]:
        return {"engine": "local", "queue": {"pending": self.worker.pending, "max": self.worker.max_queue}}

    def close(self) -> None:
        self.worker.close()


def register_provider(name: str, handler: CustomLLM) -> None:
    """Add (or replace) ``name`` in litellm's custom provider map — built-ins register like anyone's."""
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p["provider"] != name]
    litellm.custom_provider_map.append({"provider": name, "custom_handler": handler})
    litellm.utils.custom_llm_setup()


def unregister_provider(name: str, handler: CustomLLM) -> None:
    litellm.custom_provider_map = [
        p for p in litellm.custom_provider_map if not (p["provider"] == name and p["custom_handler"] is handler)
    ]


async def register_local_provider(settings: Settings, embed: Embed | None = None) -> LocalProvider:
    """Create, start and register the ``local`` provider for ``settings`` (``embed``: see LocalProvider)."""
    provider = LocalProvider(settings, embed)
    await provider.start()
    register_provider(PROVIDER, provider)
    return provider

