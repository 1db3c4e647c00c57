"""Does a correction become knowledge at once? The demo's facts through a real server, memory on, defaults.

For each question of ``cron/demo_data.jsonl`` (facts about a fictional product that the base model cannot
know): ask it, send thumbs down with the correction (``POST /v1/feedback``), and once every question is
corrected ask each again and then its rewording (never corrected). An answer is right when it contains one of
the line's ``accept`` words. No night runs: only recall (``memory.share``, ``council.memory_k``,
``council.memory_min_similarity`` and ``prompts/system.j2``) can make the second answers right.

    python -m bench.correction_recall                      # the embedded model (converted once per --home)
    python -m bench.correction_recall --model-source .council/test-cache/models/smollm2-135m-instruct

Prints one row per question: the similarity of the rewording to the question (all-MiniLM-L6-v2) and to the
closest other question, whether the answer was right before the correction, after it, and for the
rewording, and whether the corrected record was the first recalled exchange; then the totals. Exit 0 when at
least --min-after corrected questions and --min-reworded rewordings are right, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import free_port, running_server
from council.memory.embedder import Embedder
from cron.demo_server import bundled_questions_path, load_questions


def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def ask(port: int, question: str, max_tokens: int) -> dict[str, Any]:
    reply = _post(port, "/v1/chat/completions", {"model": "council", "max_tokens": max_tokens, "temperature": 0,
                                                 "messages": [{"role": "user", "content": question}]})
    return {"text": reply["choices"][0]["message"]["content"] or "", **reply["council"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=Path, default=bundled_questions_path(),
                        help="questions JSONL (id, question, correction, accept, reworded); default: the demo's")
    parser.add_argument("--model-source", default="", help="model.source of the server; default: the embedded GGUF")
    parser.add_argument("--home", type=Path, help="state directory to use (default: a temporary one)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each question (the demo's: 32)")
    parser.add_argument("--config", default="", help="extra TOML appended to the server's council.toml")
    parser.add_argument("--min-after", type=int, default=8, help="corrected questions that must be right (8)")
    parser.add_argument("--min-reworded", type=int, default=7, help="rewordings that must be right (7)")
    args = parser.parse_args(argv)
    questions = load_questions(args.questions)

    embedder = Embedder()
    asked = embedder.embed([q.question for q in questions])
    reworded = embedder.embed([q.reworded or q.question for q in questions])
    own = (asked * reworded).sum(axis=1)
    cross = reworded @ asked.T
    for i in range(len(questions)):
        cross[i, i] = -1.0

    config = (f"[model]\nsource = {json.dumps(args.model_source)}\nmax_new_tokens = 64\n\n"
              f"[council]\nheads = {{}}\n{args.config}\n")
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch) / "home"
        port = free_port()
        with running_server(home, config, port):
            before = [ask(port, q.question, args.max_tokens) for q in questions]
            for q, reply in zip(questions, before, strict=True):
                _post(port, "/v1/feedback", {"record_id": reply["record_id"], "thumbs": "down",
                                             "correction": q.correction})
            after = [ask(port, q.question, args.max_tokens) for q in questions]
            again = [ask(port, q.reworded or q.question, args.max_tokens) for q in questions]

    print(f"\n{'question':<10} {'sim':>5} {'other':>5} | {'before':>6} {'after':>6} {'reword':>6} | first recalled "
          "(after, reworded) | answers after / reworded")
    totals = [0, 0, 0]
    for i, q in enumerate(questions):
        rights = [q.is_right(r["text"]) for r in (before[i], after[i], again[i])]
        totals = [t + r for t, r in zip(totals, rights, strict=True)]
        first = ["yes" if r["context_ids"][:1] == [before[i]["record_id"]] else "no" for r in (after[i], again[i])]
        marks = ["right" if r else "wrong" for r in rights]
        print(f"{q.id:<10} {own[i]:5.2f} {cross[i].max():5.2f} | {marks[0]:>6} {marks[1]:>6} {marks[2]:>6} | "
              f"{first[0]:>3}, {first[1]:>3} | {after[i]['text'][:40]!r} / {again[i]['text'][:40]!r}")
    n = len(questions)
    print(f"{'total':<22} | {totals[0]:>4}/{n} {totals[1]:>4}/{n} {totals[2]:>4}/{n} |")
    print(f"rewordings: similarity to their question {own.min():.2f}-{own.max():.2f}, to the closest other "
          f"question at most {cross.max():.2f}")
    return 0 if totals[1] >= args.min_after and totals[2] >= args.min_reworded else 1


if __name__ == "__main__":
    sys.exit(main())
