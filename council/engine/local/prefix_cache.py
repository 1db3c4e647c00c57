"""Keys and values of recently seen conversation prefixes, so a prompt that starts the same way is not
prefilled again.

Prompts to the local model often repeat their beginning: every harvest council member sends its system
prompt and the same few-shot turns (about 320 of its 400 tokens) for each record, and clients that send a
fixed few-shot or instruction prefix do the same. (A growing conversation's history changes with each
turn, so it is not cached.) On these CPUs prefill costs about 3 ms a token, so the
harvest spent half its time recomputing those 320 tokens.

What is cached: a request's *history*, everything before its last message, when it is at least
``min_tokens`` long and has been seen before (or twice in one batch), so one-off prompts (a system prompt
carrying a query's memory context) do not push out the ones that repeat. A prompt that starts with a
cached history takes those keys and values and runs the model only on the rest. Entries are per adapter
(a LoRA on q/k/v changes them), least recently used first out, and dropped when the adapter changes. One
entry of 320 tokens on SmolLM2-135M is about 15 MB; all entries together hold at most ``max_tokens`` tokens
(default 8192, about 380 MB), and a longer history is not cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Layers = list[tuple[Any, Any]]  # per layer: keys and values, each (kv_heads, tokens, head_dim)


@dataclass
class Hit:
    tokens: int
    layers: Layers


class PrefixCache:
    """An LRU of (adapter, token prefix) -> per-layer keys and values; used only on the model thread."""

    def __init__(self, max_entries: int, min_tokens: int = 32, max_tokens: int = 8192) -> None:
        self.max_entries = max_entries
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], Layers] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()  # hashes of recent histories, cached or not
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str | None, prompt_ids: list[int]) -> Hit | None:
        """The longest cached prefix of ``prompt_ids`` (shorter than the prompt itself) under ``adapter``."""
        best = None
        for key in self._entries:
            cached_adapter, tokens = key
            if cached_adapter == adapter and len(tokens) < len(prompt_ids) and (
                best is None or len(tokens) > len(best[1])
            ) and tuple(prompt_ids[: len(tokens)]) == tokens:
                best = key
        if best is None:
            return None
        self._entries.move_to_end(best)
        return Hit(len(best[1]), self._entries[best])

    def wants(self, adapter: str | None, history: list[int], repeats_in_batch: bool) -> bool:
        """Should ``history`` be computed and cached now? Notes it as seen either way."""
        if not self.max_entries or not self.min_tokens <= len(history) <= self.max_tokens:
            return False
        key = (adapter, tuple(history))
        seen = hash(key) in self._seen
        self._seen[hash(key)] = None
        self._seen.move_to_end(hash(key))
        while len(self._seen) > 64 * self.max_entries:
            self._seen.popitem(last=False)
        return key not in self._entries and (seen or repeats_in_batch)

    def store(self, adapter: str | None, history: list[int], layers: Layers) -> None:
        self._entries[(adapter, tuple(history))] = layers
        self._entries.move_to_end((adapter, tuple(history)))
        while len(self._entries) > self.max_entries or sum(len(t) for _, t in self._entries) > self.max_tokens:
            self._entries.popitem(last=False)

    def note_hit(self, tokens: int) -> None:
        self.hits += 1
        self.reused_tokens += tokens

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
