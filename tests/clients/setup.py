"""Installs the agent client libraries that tests/test_clients.py drives, away from the project's venv.

Python libraries go into virtual environments under ``.clients-venv/`` at the repository root (their
openai/pydantic pins clash with autogen's), one per group that installs together at its newest: ``agents``
(langchain-openai, pydantic-ai, openai-agents, llm: openai 3.x), ``instructor`` (its ``jiter<0.15`` holds
openai at 3.3 and pydantic-ai back with it) and ``llama-index`` (llama-index-llms-openai wants ``openai<3``). The
Vercel AI SDK goes into ``tests/clients/node/node_modules`` by ``npm install``. Each install is
skipped when a marker holding the hash of its package list says it is already complete. Prints one JSON line:
``{"python": {venv: {package: version}}, "node": {package: version}}`` (also kept in
``.clients-venv/versions.json``); exits non-zero with the reason on stderr when
an install fails (no registry, no ``npm``).

    python tests/clients/setup.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENVS = REPO / ".clients-venv"
NODE_DIR = Path(__file__).resolve().parent / "node"
MARKER = ".council-installed"

# Each library on its default install; majors pinned (for 0.x releases, the minor). venv name -> packages.
PYTHON_PACKAGES = {
    "agents": ["langchain-openai==1.*", "pydantic-ai-slim[openai]==2.*", "openai-agents==0.25.*", "llm==0.36.*"],
    "instructor": ["instructor==1.*"],
    "llama-index": ["llama-index-llms-openai-like==0.8.*"],
}
VERSIONS_OF = ["openai", "pydantic", "langchain-openai", "langchain-core", "instructor", "pydantic-ai-slim",
               "openai-agents", "llm", "llama-index-llms-openai-like", "llama-index-core"]
NODE_PACKAGES = ["ai", "@ai-sdk/openai-compatible", "zod"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({done.returncode}): {done.stderr.strip()[-1500:]}")


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def install_python(name: str) -> dict[str, str]:
    packages, where = PYTHON_PACKAGES[name], VENVS / name
    marker, want = where / MARKER, _digest("\n".join(packages))
    if not (marker.is_file() and marker.read_text().strip() == want and venv_python(name).exists()):
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
        _run([str(venv_python(name)), "-m", "pip", "install", "-q", *packages])
        marker.write_text(want + "\n")
    probe = ("import json, sys\nfrom importlib import metadata\nout = {}\nfor name in sys.argv[1:]:\n"
             "    try:\n        out[name] = metadata.version(name)\n"
             "    except metadata.PackageNotFoundError:\n        pass\nprint(json.dumps(out))")
    done = subprocess.run([str(venv_python(name)), "-c", probe, *VERSIONS_OF], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def install_node() -> dict[str, str]:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node/npm not found on PATH")
    modules = NODE_DIR / "node_modules"
    marker, want = modules / MARKER, _digest((NODE_DIR / "package.json").read_text())
    if not (marker.is_file() and marker.read_text().strip() == want):
        _run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"], cwd=NODE_DIR)
        marker.write_text(want + "\n")
    return {name: json.loads((modules / name / "package.json").read_text())["version"] for name in NODE_PACKAGES}


def main() -> int:
    try:
        versions = {"python": {name: install_python(name) for name in PYTHON_PACKAGES}, "node": install_node()}
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        sys.stderr.write(f"client libraries not installed: {exc}\n")
        return 1
    (VENVS / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    sys.stdout.write(json.dumps(versions) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
