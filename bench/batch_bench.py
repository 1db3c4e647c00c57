"""Batched local generation: N concurrent requests through litellm and the `local` provider, decoded in
shared batches (model.max_batch 8 and 16) against one at a time (model.max_batch 1, the old behaviour), same
prompts, greedy, same token limits. Prints the wall time and tokens/s of each and the ratio.

    .venv/bin/python -m bench.batch_bench [--requests 12] [--max-tokens 64] [--batch 8 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from council.core.config import load_settings  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.engine.provider import PROVIDER, register_local_provider, unregister_provider  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["Explain why the sky is blue.", "Write a short poem about rain.", "What is photosynthesis?",
           "Give three tips for learning a language.", "Describe a cat to someone who has never seen one.",
           "How do I make a cup of tea?"]


async def measure(max_batch: int, requests: int, max_tokens: int, base: str, home: str) -> tuple[float, int, list]:
    settings = load_settings(overrides={"home": home, "model.source": base, "model.max_batch": max_batch,
                                        "model.max_queue": max(16, requests)})
    provider = await register_local_provider(settings)
    try:
        await litellm.acompletion(model="local/smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        started = time.perf_counter()
        replies = await asyncio.gather(*(
            litellm.acompletion(model="local/smollm2", max_tokens=max_tokens, temperature=0,
                                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" ({i})"}])
            for i in range(requests)))
        wall = time.perf_counter() - started
    finally:
        unregister_provider(PROVIDER, provider)
        provider.close()
    tokens = sum(r.usage.completion_tokens for r in replies)
    return wall, tokens, [r.choices[0].message.content for r in replies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16], help="max_batch sizes to compare")
    args = parser.parse_args()
    base = resolve_base_model("", REPO / ".council" / "test-cache" / "models").path
    print(f"{args.requests} concurrent requests, max_tokens {args.max_tokens}, greedy:")
    with tempfile.TemporaryDirectory() as home:
        one_wall, one_tokens, one_texts = asyncio.run(measure(1, args.requests, args.max_tokens, base, home))
        print(f"  one at a time (max_batch 1):  {one_wall:6.1f} s  {one_tokens / one_wall:6.1f} tokens/s")
        for size in args.batch:
            wall, tokens, texts = asyncio.run(measure(size, args.requests, args.max_tokens, base, home))
            same = sum(a == b for a, b in zip(one_texts, texts, strict=True))
            print(f"  batched       (max_batch {size:>2}): {wall:6.1f} s  {tokens / wall:6.1f} tokens/s  "
                  f"{one_wall / wall:.2f}x; identical answers {same}/{args.requests}")


if __name__ == "__main__":
    main()
