"""An in-process causal LM with per-token logprobs, stop strings and hot-swappable LoRA adapters.

Every method that touches the model runs on one worker thread (``ModelWorker``), so an adapter swap
happens between two generations and never under one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from council.core.config import ModelSettings
from council.core.errors import AdapterError
from council.engine.adapter_files import check_adapter_folder, check_against_base, check_loaded
from council.engine.adapter_scope import AdapterUse, Embed, query_of, read_scope, scope_stamp, similarities
from council.engine.base import Generation, GenerationRequest, TokenLogprob
from council.engine.grammar import Grammars
from council.engine.loading import chat_ids, load_model
from council.engine.local.batched import generate_batch
from council.engine.local.prefix_cache import PrefixCache
from council.engine.model_files import BaseModel
from council.engine.sampling import SamplingParams

log = logging.getLogger(__name__)

LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError)


def full_attention(config: Any) -> bool:
    """True when every layer attends to the whole context: prefix reuse needs every cached key (a sliding-
    window layer keeps only the last ``sliding_window`` of them)."""
    types = getattr(config, "layer_types", None) or []
    return not getattr(config, "sliding_window", None) and all(kind == "full_attention" for kind in types)


class LocalModel:
    """A transformers causal LM plus at most one active PEFT adapter.

    ``scope_similarity`` > 0 applies a scoped adapter (one with ``scope.npy``) only to requests
    close to its trained queries; ``embed`` embeds queries for that (default: the bundled all-MiniLM-L6-v2, loaded
    the first time a scoped adapter is)."""

    def __init__(self, base: BaseModel, torch_threads: int = 0, scope_similarity: float = 0.0,
                 embed: Embed | None = None, prefix_cache_entries: int = 8) -> None:
        import torch

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.base = base
        self.model, self.tokenizer = load_model(base.path)
        self.peft_model: Any = None
        self.peft_name = ""  # the PEFT adapter name of the loaded weights (stays put across hot swaps)
        self._peft_loads = 0
        self.adapter_version: str | None = None
        self.adapter_path: str | None = None
        self.adapter_error: str | None = None
        self.adapter_error_path: str | None = None
        self.adapter_changed_at = time.time()
        self._swap_started = time.perf_counter()
        self.scope_similarity = scope_similarity
        self.adapter_scope: Any = None  # the live adapter's scope rows, or None = it answers every request
        self._scope_stamp: Any = None  # scope.npy's stamp when adapter_scope was read (refresh_scope)
        self._embed = embed
        self.prefix_cache = PrefixCache(prefix_cache_entries if full_attention(self.model.config) else 0)
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self._byte_decoder = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
        self._grammars: Grammars | None = None
        self.eos_ids = {self.tokenizer.eos_token_id}
        if self.model.generation_config.eos_token_id is not None:
            eos = self.model.generation_config.eos_token_id
            self.eos_ids |= set(eos if isinstance(eos, list) else [eos])

    @classmethod
    def from_settings(cls, base: BaseModel, settings: ModelSettings, embed: Embed | None = None) -> LocalModel:
        """The local model as ``[model]`` configures it (threads, adapter scope, prefix cache)."""
        return cls(base, settings.torch_threads, settings.adapter_scope_similarity, embed,
                   settings.prefix_cache_entries)

    # ---------- adapters ----------
    def use_adapter(self, folder: str | None) -> bool:
        """Serve ``folder``'s adapter (None = the bare base model). Returns True if the live adapter changed."""
        target = os.path.realpath(folder) if folder else None
        if target == self.adapter_path:
            return False
        self._swap_started = time.perf_counter()
        if target is None:
            if self.peft_model is not None:
                self.peft_model.base_model.disable_adapter_layers()
            self._set_live(None, None)
            return True
        path = Path(target)
        version = path.name
        try:
            config, weights = check_adapter_folder(path)
            check_against_base(weights, config, self.model)
        except AdapterError as exc:
            raise AdapterError(f"adapter {version} failed to load: {exc}") from exc
        stamp = scope_stamp(path)
        scope = read_scope(path) if self.scope_similarity > 0 else None
        if scope is not None:
            self.embedder()
        try:
            if self.peft_model is None:
                from peft import PeftModel

                name = self._next_peft_name()
                self.peft_model = PeftModel.from_pretrained(self.model, target, adapter_name=name)
                self.peft_name = name
            else:
                self._replace_weights(target, version)
            self.peft_model.set_adapter(self.peft_name)
            self.peft_model.base_model.enable_adapter_layers()
        except Exception as exc:  # noqa: BLE001 - whatever PEFT raised, the folder is refused with its reason
            log.debug("adapter %s failed to load", version, exc_info=True)
            raise AdapterError(f"adapter {version} failed to load ({type(exc).__name__}: {exc})") from exc
        self.peft_model.eval()
        try:
            check_loaded(self.peft_model, self.peft_name, weights)
            self._check_finite(version)
        except AdapterError as exc:
            self._restore_live()
            raise AdapterError(f"adapter {version} refused: {exc}") from exc
        self._drop_other_slots()
        self._set_live(version, target, scope)
        self._scope_stamp = stamp
        return True

    def refresh_scope(self) -> bool:
        """Read the live adapter's ``scope.npy`` again when it changed on disk (erasure cut rows from it,
        ``council/memory/unlearning.py``); True when it was. AdapterError when the new file is unreadable."""
        if self.adapter_path is None or self.scope_similarity <= 0:
            return False
        stamp = scope_stamp(Path(self.adapter_path))
        if stamp == self._scope_stamp:
            return False
        self.adapter_scope, self._scope_stamp = read_scope(Path(self.adapter_path)), stamp
        log.info("adapter %s: scope read again (%s row(s))", self.adapter_version,
                 "no" if self.adapter_scope is None else len(self.adapter_scope))
        return True

    def _check_finite(self, version: str) -> None:
        """One forward pass with the new adapter: finite scores, or AdapterError (exploding weights)."""
        import torch

        ids = torch.tensor([self.tokenizer.encode("Hello, how are you?")])
        with torch.inference_mode():
            logits = self.peft_model(input_ids=ids, logits_to_keep=1).logits
        if not torch.isfinite(logits).all():
            raise AdapterError(f"adapter {version} makes the model's scores NaN or infinite")

    def _restore_live(self) -> None:
        """After a refused load: serve the live adapter again (or the bare base model)."""
        if self.adapter_path is None:
            self.peft_model.base_model.disable_adapter_layers()
        else:
            self._reload_live()

    def _replace_weights(self, target: str, version: str) -> None:
        """Make ``target``'s weights the loaded adapter's: copied into its tensors (PEFT hotswap, ~50 ms), or
        loaded beside it (~175 ms) when hotswap refuses the pair. Raises LOAD_ERRORS with the live adapter
        intact: a hotswap that stopped half way is repaired by reloading the live adapter's folder."""
        from peft.utils.hotswap import hotswap_adapter

        try:
            hotswap_adapter(self.peft_model, target, adapter_name=self.peft_name, torch_device="cpu")
            return
        except (RuntimeError, ValueError) as exc:  # may have stopped after changing some weights
            log.info("adapter %s cannot be hot-swapped into the loaded one (%s); loading it beside", version, exc)
        name = self._next_peft_name()
        try:
            self.peft_model.load_adapter(target, adapter_name=name)
        except LOAD_ERRORS:
            if name in self.peft_model.peft_config:
                self.peft_model.delete_adapter(name)
            self._reload_live()
            raise
        self.peft_name = name

    def _reload_live(self) -> None:
        """Load the live adapter's folder again into a fresh slot (or fall back to the base model)."""
        if self.adapter_path is None:  # the base model is live; the adapter slot's weights are not used
            return
        name = self._next_peft_name()
        try:
            self.peft_model.load_adapter(self.adapter_path, adapter_name=name)
            self.peft_model.set_adapter(name)
        except LOAD_ERRORS as exc:
            log.error("adapter %s cannot be reloaded after a failed swap (%s); serving the base model",
                      self.adapter_version, exc)
            self.peft_model.base_model.disable_adapter_layers()
            self._set_live(None, None)
            return
        self.peft_name = name
        self._drop_other_slots()

    def _drop_other_slots(self) -> None:
        for name in list(self.peft_model.peft_config):
            if name != self.peft_name:
                self.peft_model.delete_adapter(name)

    def _next_peft_name(self) -> str:
        self._peft_loads += 1
        return f"live-{self._peft_loads}"

    def _set_live(self, version: str | None, path: str | None, scope: Any = None) -> None:
        self.adapter_version, self.adapter_path, self.adapter_scope = version, path, scope
        self.prefix_cache.clear()
        self.adapter_error = self.adapter_error_path = None
        self.adapter_changed_at = time.time()
        log.info("serving adapter %s (swapped in %.0f ms)", version or "(base model)",
                 1000 * (time.perf_counter() - self._swap_started))

    def embedder(self) -> Embed:
        """The query embedder of adapter scopes (loaded on first use)."""
        if self._embed is None:
            from council.memory.embedder import Embedder

            self._embed = Embedder().embed
        return self._embed

    def adapter_uses(self, requests: list[list[dict[str, str]]]) -> list[AdapterUse]:
        """For each request's messages: does the live adapter answer it?"""
        if self.adapter_version is None:
            return [AdapterUse() for _ in requests]
        if self.adapter_scope is None:
            return [AdapterUse(self.adapter_version) for _ in requests]
        scores = similarities(self.adapter_scope, [query_of(m) for m in requests], self.embedder())
        return [AdapterUse(self.adapter_version if score >= self.scope_similarity else None, round(score, 4))
                for score in scores]

    @property
    def active(self) -> Any:
        return self.peft_model if self.peft_model is not None and self.adapter_version else self.model

    # ---------- generation ----------
    @property
    def grammars(self) -> Grammars:
        """Constrained decoding for this tokenizer, built the first time a request needs it (~0.4 s)."""
        if self._grammars is None:
            self._grammars = Grammars(self.tokenizer)
        return self._grammars

    def token_bytes(self, token_id: int) -> list[int]:
        """The raw bytes of one token: byte-level BPE symbols mapped back to bytes (GPT-2's table),
        ``<0xAB>`` byte-fallback pieces as their byte, anything else as its UTF-8 text."""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return []
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return [int(piece[3:5], 16)]
        if all(ch in self._byte_decoder for ch in piece):
            return [self._byte_decoder[ch] for ch in piece]
        return list(self.tokenizer.decode([token_id]).encode())

    def alternative(self, token_id: int, logprob: float) -> TokenLogprob:
        return TokenLogprob(self.tokenizer.decode([token_id]), logprob, self.token_bytes(token_id))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_ids(self.tokenizer, messages)

    def encode_history(self, messages: list[dict[str, str]], prompt_ids: list[int]) -> list[int]:
        """Token ids of ``messages`` before the last one, when they begin ``prompt_ids`` (else [])."""
        if len(messages) < 2:
            return []
        ids = chat_ids(self.tokenizer, messages[:-1], add_generation_prompt=False)
        return ids if ids and prompt_ids[: len(ids)] == ids and len(ids) < len(prompt_ids) else []

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int,
                 sampling: SamplingParams | None = None) -> Generation:
        """Sample up to ``max_new_tokens`` as ``sampling`` says (None: greedy); logprobs are from the model's
        untempered distribution."""
        (result,) = self.generate_batch([GenerationRequest(messages, max_new_tokens, sampling or SamplingParams())])
        if isinstance(result, Exception):
            raise result
        return result

    def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation | Exception]:
        """Decode ``requests`` together (see council/engine/local/batched.py); per-request errors are returned."""
        return generate_batch(self, requests)

    @staticmethod
    def pick(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
        """Sample one token id. Temperatures below 1e-5 are greedy (``logits / 1e-40`` overflows); nucleus
        sampling (Holtzman et al. 2019) keeps the smallest set of tokens whose probability reaches ``top_p``,
        and always the most likely one, so ``top_p = 0`` is greedy too. Raises ValueError when the
        distribution is not finite."""
        import torch

        if temperature < 1e-5:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.double() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        total = float(probs.sum())
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"sampling at temperature {temperature} gave no finite distribution")
        return int(torch.multinomial(probs / total, 1, generator=generator))
