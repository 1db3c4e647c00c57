"""``[memory]``: whose exchanges a request recalls, how queries are embedded, and when a correction supersedes
an older one.

    [memory]
    share = "corrections"          # corrected answers are shared knowledge; raw exchanges stay with their user
    supersede_similarity = 0.92    # a newer correction of the same question replaces the older one
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SHARE_MODES", "MemorySettings"]

SHARE_MODES = ("corrections", "none", "all")


@dataclass
class MemorySettings:
    share: str = field(default="corrections", metadata={
        "help": "Whose past exchanges a request gets as context: 'corrections' (default) = corrected answers are "
                "shared knowledge for every user, raw successful exchanges only for the user who had them; 'none' "
                "= a user gets only their own; 'all' = everyone gets everything. The same user is the same "
                "request 'user' (or x-council-user); exchanges without one go to requests without one."})
    embedder_runtime: str = field(default="onnx-int8", metadata={
        "help": "How all-MiniLM-L6-v2 embeds queries: 'onnx-int8' (default) = ONNX Runtime with int8 weights "
                "(1.6 ms a query on one core here, ~4x faster than torch; within cosine 0.98 of it, so near-ties "
                "in recall may order differently); 'onnx' = ONNX Runtime, float32 (the same vectors as torch, "
                "~3x faster); 'torch' = sentence-transformers. The "
                "ONNX graphs are made once and cached in $XDG_CACHE_HOME/council or ~/.cache/council. Changing it "
                "changes stored vectors slightly: recall keeps working, similarities shift by < 0.01."})
    supersede_similarity: float = field(default=0.92, metadata={
        "help": "Cosine similarity of two questions' embeddings from which a user's newer correction supersedes "
                "their older one (the same words always do, different numbers never): the old one is no longer "
                "recalled, harvested or replayed to training, and the records show `supersedes` / `superseded_by`. "
                "Measured with onnx-int8 on the demo's Zorblax questions: the same question reworded 0.84-0.97 "
                "(15 of 18 pairs >= 0.92; torch within 0.02), different questions about the product at most 0.91 "
                "(maker vs city), except 'Which company makes it?' vs 'Who runs the company that makes it?' "
                "(0.95-0.96, superseded: too alike for this embedder) and 'Zorblax 4000' vs '3000' (0.93, kept "
                "apart by their numbers). Only the same user's corrections are compared, everyone's with "
                "share = 'all'. 1.0: only the same words."})

    def __post_init__(self) -> None:
        if self.share not in SHARE_MODES:
            raise ValueError(f"memory.share must be one of {', '.join(SHARE_MODES)}, got {self.share!r}")
        if not 0.0 < self.supersede_similarity <= 1.0:
            raise ValueError(f"memory.supersede_similarity must be within (0, 1], got {self.supersede_similarity}")
        if self.embedder_runtime not in ("onnx-int8", "onnx", "torch"):
            raise ValueError("memory.embedder_runtime must be 'onnx-int8', 'onnx' or 'torch', got "
                             f"{self.embedder_runtime!r}")
