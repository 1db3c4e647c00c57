"""Loading a causal LM, its tokenizer and a PEFT adapter: the one place every stage does it.

The server's in-process engine (``council/engine/local/model.py``), training's backends and the validation
loss all load through here, so dtype, device and the padding id agree everywhere::

    model, tokenizer = load_model(base.path)                       # float32 on CPU, eval mode
    model = load_model(base.path, device="cuda", adapter=folder)[0] # bfloat16 on a GPU, adapter applied
    ids = chat_ids(tokenizer, [{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

from typing import Any


def model_dtype(device: str) -> Any:
    """bfloat16 on a GPU, float32 elsewhere (CPU bfloat16 matmuls are slow and lose answers' logprobs)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_model(path: str, *, device: str = "cpu", adapter: str | None = None, trainable: bool = False,
               with_tokenizer: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) from a transformers model folder or hub id, on ``device``; ``adapter`` is a PEFT
    adapter folder put on top (trainable when ``trainable``). The model is in eval mode unless ``trainable``;
    ``tokenizer`` is None when ``with_tokenizer`` is False. Raises what transformers/PEFT raise (OSError for a
    missing folder, ValueError for an incompatible adapter)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=model_dtype(device))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    model = model.to(device)
    if not trainable:
        model.eval()
    return model, AutoTokenizer.from_pretrained(path) if with_tokenizer else None


def pad_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-text token, else 0. Padded
    positions are masked, so the choice never changes an answer; it only has to be a valid id."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """``messages`` through the tokenizer's chat template, as a plain list of token ids."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)
