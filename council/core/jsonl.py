"""Hand-edited JSONL files (canary cases, rehearsal prompts, demo questions): one JSON object a line.

Blank lines and lines starting with ``//`` are skipped. Every problem raises the caller's error type naming
``path:line``, so a user knows which line to fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_objects(path: Path, error: type[Exception], missing_hint: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("path:line", object)`` for each line; ``error`` when the file cannot be read (with ``missing_hint``),
    a line is not JSON, or a line is not a JSON object."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}; {missing_hint}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise error(f"{where}: expected a JSON object")
        yield where, data
