"""What a grammar costs per token on the in-process engine: constrained decoding (llguidance, as served) against
free decoding, at batch 8 on the embedded SmolLM2, in one run; and the mask computation alone, llguidance
against xgrammar (when installed: ``pip install xgrammar``), on the same answers.

Every row decodes exactly ``--max-tokens`` tokens (end-of-turn banned by logit_bias; the schema's one string
field has no end before it), so the rows compare step for step. Prints ms per decode step (median of
``--repeats`` alternating runs) and the added share; the issue's target is under 10% at batch 8.

    .venv/bin/python -m bench.grammar_bench [--batch 8] [--max-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from council.engine.base import GenerationRequest  # noqa: E402
from council.engine.grammar import constraint_for  # noqa: E402
from council.engine.local.model import LocalModel  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.engine.sampling import SamplingParams  # noqa: E402

LONG = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"]}
ASK = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper, as JSON."}]


def run(model: LocalModel, batch: int, constrained: int, max_tokens: int) -> float:
    """ms per decode step for ``batch`` rows, the first ``constrained`` of them held to LONG."""
    ban = {eos: -100.0 for eos in model.eos_ids}
    grammar = constraint_for({"type": "json_schema", "json_schema": {"name": "s", "schema": LONG}}, None)
    requests = [GenerationRequest(ASK, max_tokens, SamplingParams(logit_bias=ban, temperature=0.7, seed=i),
                                  constraint=grammar if i < constrained else None) for i in range(batch)]
    started = time.perf_counter()
    answers = model.generate_batch(requests)
    seconds = time.perf_counter() - started
    if any(isinstance(a, Exception) or a.completion_tokens != max_tokens for a in answers):
        raise RuntimeError(f"a row did not decode {max_tokens} tokens: {answers}")
    return seconds * 1000 / max_tokens


def masks_only(model: LocalModel, texts: list[str]) -> dict[str, float]:
    """µs per token to compute the next-token mask along each answer, per library."""
    schema = json.dumps(LONG)
    token_lists = [model.tokenizer.encode(text) for text in texts]
    results = {}
    grammars = model.grammars
    import llguidance

    spent, count = 0.0, 0
    for ids in token_lists:
        matcher = grammars.matcher(constraint_for({"type": "json_schema", "json_schema": {"name": "s", "schema": LONG}},
                                                  None))
        for token in ids:
            started = time.perf_counter()
            matcher.allowed()
            spent += time.perf_counter() - started
            count += 1
            if not matcher.inner.consume_token(token):
                break
    results[f"llguidance {llguidance.__version__}"] = spent / count * 1e6
    try:
        import xgrammar as xgr
    except ImportError:
        return results
    info = xgr.TokenizerInfo.from_huggingface(model.tokenizer, vocab_size=len(model.tokenizer))
    compiled = xgr.GrammarCompiler(info).compile_json_schema(schema, any_whitespace=False)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    spent, count = 0.0, 0
    for ids in token_lists:
        matcher = xgr.GrammarMatcher(compiled)
        for token in ids:
            started = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask, 0)
            spent += time.perf_counter() - started
            count += 1
            if not matcher.accept_token(token):
                break
    from importlib.metadata import version

    results[f"xgrammar {version('xgrammar')}"] = spent / count * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = Path(os.environ.get("COUNCIL_TEST_CACHE", Path(__file__).resolve().parent.parent / ".council/test-cache"))
    model = LocalModel(resolve_base_model("", cache / "models"))
    model.grammars  # built once (~0.4 s), as the server does at its first constrained request  # noqa: B018
    run(model, 2, 1, 8)  # warm-up
    kinds = {"free": 0, "half constrained": args.batch // 2, "all constrained": args.batch}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind, constrained in kinds.items():
            times[kind].append(run(model, args.batch, constrained, args.max_tokens))
    free = statistics.median(times["free"])
    print(f"batch {args.batch}, {args.max_tokens} tokens a row, median of {args.repeats}:")
    print(f"{'rows':<18} {'ms/step':>8} {'added':>7}")
    for kind in kinds:
        ms = statistics.median(times[kind])
        print(f"{kind:<18} {ms:8.1f} {100 * (ms / free - 1):6.1f}%")
    texts = [a.text for a in model.generate_batch([GenerationRequest(
             ASK, args.max_tokens, SamplingParams(seed=i, temperature=0.7),
             constraint=constraint_for({"type": "json_schema", "json_schema": {"name": "s", "schema": LONG}}, None))
             for i in range(4)])]
    print("mask per token (library alone, same answers):")
    for name, micros in masks_only(model, texts).items():
        print(f"  {name:<20} {micros:7.1f} µs")


if __name__ == "__main__":
    main()
