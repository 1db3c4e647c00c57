"""``[engine]``: which serving engine answers ``local/*`` models — the in-process model or vLLM replicas.

    [engine]
    kind = "vllm"
    urls = ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]   # replicas serving the same base model
    # or no urls: `council serve` starts one vLLM server itself, from the venv that
    # `python -m council.engine.vllm.install` made
    vllm_python = "/srv/council/.vllm-venv/bin/python"
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINE_KINDS = ("local", "vllm")


@dataclass
class EngineSettings:
    kind: str = field(default="local", metadata={
        "help": "'local' = the in-process model (default); 'vllm' = vLLM servers (engine.urls, or one started "
                "by `council serve` from engine.vllm_python)."})
    urls: list[str] = field(default_factory=list, metadata={
        "help": "vLLM replicas (http://host:port), all serving the same base model with --enable-lora, "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --structured-outputs-config '{\"backend\": \"guidance\"}' "
                "(tools and JSON); empty = start one local vLLM server."})
    vllm_python: str = field(default="", metadata={
        "help": "Python of the venv vLLM is installed in (python -m council.engine.vllm.install prints it); "
                "empty = ./.vllm-venv/bin/python."})
    port: int = field(default=8100, metadata={"help": "Port of the vLLM server `council serve` starts."})
    served_model_name: str = field(default="smollm2", metadata={
        "help": "The base model's name on the vLLM servers (--served-model-name); adapters are named by version."})
    max_lora_rank: int = field(default=16, metadata={"help": "--max-lora-rank of a started vLLM server."})
    max_loras: int = field(default=2, metadata={"help": "--max-loras of a started vLLM server (adapters per batch)."})
    dtype: str = field(default="float32", metadata={
        "help": "--dtype of a started vLLM server: float32 on a CPU (vLLM's CPU build), 'auto' on a GPU."})
    memory_fraction: float = field(default=0.25, metadata={
        "help": "--gpu-memory-utilization of a started vLLM server: the share of GPU memory (of the machine's "
                "memory, on vLLM's CPU build) it reserves for weights and KV cache; 0.25 suits a small model on a "
                "CPU, about 0.9 a GPU of its own."})
    extra_args: list[str] = field(default_factory=list, metadata={
        "help": "More arguments for a started vLLM server, e.g. [\"--tensor-parallel-size\", \"2\"]."})
    keep_loaded: int = field(default=2, metadata={
        "help": "Adapter versions kept loaded on each replica: the live one and the newest before it (rollback "
                "is then instant); older ones are unloaded."})
    quorum: int = field(default=0, metadata={
        "help": "Replicas that must load and pass the probe before a deploy swaps; 0 = every replica."})
    start_timeout_seconds: float = field(default=600.0, metadata={
        "help": "How long `council serve` waits for the vLLM server it started to answer."})
    sync_seconds: float = field(default=2.0, metadata={
        "help": "How often the server checks every replica and loads the live adapter where it is missing."})

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise ValueError(f"engine.kind must be one of {', '.join(ENGINE_KINDS)}, got {self.kind!r}")
        self.urls = [url.rstrip("/") for url in self.urls]
        bad = [url for url in self.urls if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"engine.urls must start with http:// or https://; fix {bad[0]!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"engine.port must be 1-65535, got {self.port}")
        if self.keep_loaded < 1 or self.max_loras < 1 or self.max_lora_rank < 1:
            raise ValueError("engine.keep_loaded, engine.max_loras and engine.max_lora_rank must be >= 1")
        if self.quorum < 0 or (self.urls and self.quorum > len(self.urls)):
            raise ValueError(f"engine.quorum must be 0 (every replica) to {len(self.urls) or 1}, got {self.quorum}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"engine.memory_fraction must be in (0, 1], got {self.memory_fraction}")
        if self.start_timeout_seconds <= 0 or self.sync_seconds <= 0:
            raise ValueError("engine.start_timeout_seconds and engine.sync_seconds must be > 0")
