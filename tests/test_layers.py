"""The house's layers: every import of the product code runs downward, and none runs in a circle.

Layers, lowest first (README "Layout"): council.core; council.memory; council.engine; council.routing;
council.server; harvest and training; deploy; cron; the ``council`` command (council.cli, council.commands).
Every import counts, including those inside functions and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("council", "harvest", "training", "deploy", "cron")
LAYERS = [("council.core",), ("council.memory",), ("council.engine",), ("council.routing",), ("council.server",),
          ("harvest", "training"), ("deploy",), ("cron",), ("council.cli", "council.commands")]
MAX_LINES = 330  # "about 300": the house's modules stay readable in one sitting


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``path`` imports (``from a.b import c`` is a.b.c when that is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return {name for name in names if name in modules}


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in tests/test_layers.py")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_import_runs_downward():
    upward = [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
              for module, targets in _graph().items() for target in targets if _layer(target) > _layer(module)]
    assert upward == []


def test_no_import_circles():
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_imports_inside_functions_and_type_checking_count(tmp_path):
    lazy = tmp_path / "lazy.py"
    lazy.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from council.server import app\n"
                    "def f():\n    import cron.nightly\n    from council.core.errors import CouncilError\n")
    assert _imports(lazy, _modules()) == {"council.server.app", "cron.nightly", "council.core.errors"}
    assert _layer("council.server.app") > _layer("council.core.errors")


def test_modules_stay_short():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
