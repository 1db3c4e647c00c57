"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where a process's threads spent their samples.

    .venv/bin/python -m bench.profile serve-32.txt [--top 25]

Prints each thread's share of the samples and the frames with the largest inclusive share (a frame counts once
per sample however deep it recurses), with line numbers dropped so a function is one row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)")


def summarize(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        threads[frames[0]] += n
        for frame in {_LINE.sub(")", f) for f in frames[1:]}:
            inclusive[frame] += n
    if not total:
        return "no samples"
    out = [f"{total} samples"]
    out += [f"{n / total:6.1%}  {name}" for name, n in threads.most_common(6)]
    out.append("inclusive, by frame:")
    skip = ("threading.py", "concurrent/futures", "asyncio/", "<frozen runpy>", "selectors.py")
    out += [f"{n / total:6.1%}  {name[:140]}" for name, n in inclusive.most_common(top * 3)
            if not any(s in name for s in skip)][:top]
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.file, args.top))
