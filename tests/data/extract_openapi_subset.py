"""Cut OpenAI's openapi.yaml down to the component schemas Council's conformance test validates against.

The full document (github.com/openai/openai-openapi, ~3 MB) describes every OpenAI endpoint; this keeps the
reply schemas named in ROOTS and every schema they reach through ``$ref``, unchanged except that the bulky
``x-oaiMeta`` documentation blocks are dropped. Run:

    git -C <openai-openapi checkout> show HEAD:openapi.yaml > /tmp/openapi.yaml
    python tests/data/extract_openapi_subset.py /tmp/openapi.yaml tests/data/openai-openapi.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "ListModelsResponse", "Model",
         "CreateEmbeddingResponse", "CreateCompletionResponse", "Response", "ResponseStreamEvent", "ErrorResponse")
PREFIX = "#/components/schemas/"
DROPPED = {"x-oaiMeta"}


def refs_in(node: object) -> set[str]:
    """Every component-schema name a ``$ref`` inside ``node`` points at."""
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(PREFIX)} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= refs_in(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs_in(value) for value in node)) if node else set()
    return set()


def pruned(node: object) -> object:
    if isinstance(node, dict):
        return {key: pruned(value) for key, value in node.items() if key not in DROPPED}
    if isinstance(node, list):
        return [pruned(value) for value in node]
    return node


def subset(document: dict, roots: tuple[str, ...] = ROOTS) -> dict:
    schemas = document["components"]["schemas"]
    keep: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        if name not in schemas:
            raise SystemExit(f"schema {name!r} is not in the document")
        keep.add(name)
        pending.extend(refs_in(schemas[name]))
    return {"openapi": document["openapi"], "info": document["info"],
            "components": {"schemas": {name: pruned(schemas[name]) for name in sorted(keep)}}}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: extract_openapi_subset.py FULL_OPENAPI_YAML OUT_YAML")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(Path(argv[0]).read_text(encoding="utf-8"), Loader=loader)
    Path(argv[1]).write_text(yaml.safe_dump(subset(document), sort_keys=False, allow_unicode=True, width=110),
                             encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
