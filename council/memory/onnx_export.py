"""all-MiniLM-L6-v2 as one ONNX graph (BERT, mean pooling, L2 normalisation), exported once and cached.

The memory embeds every request's query before it can recall anything, so the embedding sits on the request
path. Sentence-transformers on torch spends most of a one-sentence call in Python dispatch (~8 ms a query on
one quiet core here); the same weights run by ONNX Runtime take ~2.7 ms and give the same vectors (max abs
difference ~1e-7, ``bench/memory_bench.py``). ``council/memory/embedder.py`` uses this module.

``onnx_file(model_folder, cache_dir)`` returns the cached ``embedder-<key>.onnx`` in ``cache_dir`` (the
embedder's default: ``~/.cache/council``), exporting it first when missing: torch's TorchScript exporter (``torch.onnx.export``,
``dynamo=False``), written to a temp file and renamed, under a file lock so concurrent processes export once.
The export is checked against sentence-transformers on a few sentences (one padded batch) before it is kept; a folder whose
pipeline is not Transformer -> mean pooling (-> Normalize) raises ``UnsupportedModelError``, and the caller
falls back to torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

OPSET = 17
CHECK_SENTENCES = ["What is the capital of France?", "Who manufactures the Zorblax 3000?",
                   "def reverse(xs): return xs[::-1]  # a longer line of code, to use more positions"]
MIN_COSINE = 0.9999  # exported vs sentence-transformers on CHECK_SENTENCES; float32 both ways, so they agree to ~1e-7
MIN_COSINE_INT8 = 0.98  # the int8 graph: measured 0.992 at worst on short questions


class _DropFrom(logging.Filter):
    """Drops records logged from files under ``folder`` (onnxruntime's quantizer logs each tensor on the root
    logger: hundreds of lines on a server's first start)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.folder)


class UnsupportedModelError(ValueError):
    """The folder is not a sentence-transformers model this exporter reproduces exactly."""


def pipeline_of(folder: Path) -> tuple[int, bool]:
    """(max_seq_length, normalize) of a Transformer -> mean Pooling [-> Normalize] sentence-transformers folder.

    Raises UnsupportedModelError for anything else (CLS or max pooling, dense layers, no modules.json)."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        max_len = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length", 512)
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{folder} is not a sentence-transformers folder ({exc})") from exc
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) \
            or modes != {"pooling_mode_mean_tokens"}:
        raise UnsupportedModelError(f"{folder}: modules {kinds}, pooling {sorted(modes)}; the ONNX export supports "
                                    "Transformer -> mean pooling -> Normalize only")
    return int(max_len), kinds[-1] == "Normalize"


def cache_key(folder: Path) -> str:
    """Names the export after the weights it came from (path, size, mtime) and this exporter's opset."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        raise UnsupportedModelError(f"{folder} has no *.safetensors or *.bin weights")
    stamp = [f"{w.resolve()}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
    return hashlib.sha256("|".join([*stamp, f"opset{OPSET}"]).encode()).hexdigest()[:16]


def onnx_file(folder: Path, cache_dir: Path, int8: bool = False) -> Path:
    """The cached ONNX export of ``folder`` in ``cache_dir``, made first if missing (seconds, once); ``int8``: its
    weights quantized (``quantize``), made from the float export.

    Raises UnsupportedModelError (see ``pipeline_of``) and OSError when ``cache_dir`` cannot be written."""
    pipeline_of(folder)
    target = Path(cache_dir) / f"embedder-{cache_key(folder)}{'-int8' if int8 else ''}.onnx"
    if target.exists():
        return target
    source = onnx_file(folder, cache_dir) if int8 else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if not target.exists():  # another process may have made it while we waited
            temp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            try:
                quantize(folder, source, temp) if source else export(folder, temp)
                os.replace(temp, target)
                log.info("made the embedder's %s graph %s (once; cached in %s)", "int8" if int8 else "ONNX",
                         target.name, target.parent)
            finally:
                temp.unlink(missing_ok=True)
    return target


def quantize(folder: Path, source: Path, target: Path) -> None:
    """``source`` (the float export of ``folder``) with its MatMul weights in int8, one scale per output channel,
    activations quantized on the fly (ONNX Runtime's dynamic quantization). About 2x faster for one query
    (1.6 vs 3.3 ms on one core here); embeddings within cosine 0.98 of the float ones. Checked against
    sentence-transformers (cosine >= MIN_COSINE_INT8) before it is kept."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _DropFrom(str(Path(onnxruntime.__file__).parent))
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(quiet)
    check(folder, target, MIN_COSINE_INT8)


def export(folder: Path, target: Path) -> None:
    """Write ``folder``'s model, pooled and normalised, to ``target``; inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (batch, tokens) int64, output ``embedding`` (batch, dim) float32. Checked against
    sentence-transformers (cosine >= MIN_COSINE) before returning; UnsupportedModelError when it differs."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    max_len, normalize = pipeline_of(folder)
    hf_logging.disable_progress_bar()  # the weight-loading bar, on a server's console
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # eager attention: sdpa's mask handling branches on the traced sample's shapes (padded or not)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    sample = tokenizer(CHECK_SENTENCES[:1], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the check below is what tells a bad trace
        torch.onnx.export(Pooled(), tuple(sample[n] for n in names), str(target), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    check(folder, target, MIN_COSINE)


def check(folder: Path, path: Path, min_cosine: float) -> None:
    """Raise UnsupportedModelError unless the graph in ``path`` embeds CHECK_SENTENCES (one padded batch) within
    ``min_cosine`` of what sentence-transformers makes of ``folder``."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    max_len, normalize = pipeline_of(folder)
    expected = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        CHECK_SENTENCES, normalize_embeddings=normalize, convert_to_numpy=True, show_progress_bar=False)
    batch = AutoTokenizer.from_pretrained(folder)(CHECK_SENTENCES, return_tensors="np", padding=True,
                                                  truncation=True, max_length=max_len)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    got = session(path).run(None, {n: batch[n].astype(np.int64) for n in names})[0]
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    if float(cosine.min()) < min_cosine:
        raise UnsupportedModelError(f"the ONNX graph {path.name} of {folder} differs from sentence-transformers "
                                    f"(cosine {cosine.min():.6f} < {min_cosine})")


def session(path: Path, threads: int = 1):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (1: the server runs the embedder on one
    thread beside the event loop; see ``model.torch_threads`` for why more threads hurt on shared cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
