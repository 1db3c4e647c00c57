"""Rehearsal: the real embedded model answers general prompts; only right answers become training examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from council.core.config import REPO_PROMPTS
from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model
from council.routing.prompts import PromptStore, serving_system_prompt
from training.errors import TrainingError
from training.job import IGNORE_INDEX
from training.rehearsal import REHEARSAL_FILE, RehearsalPrompt, generate_examples, load_prompts, local_engine


def test_bundled_prompts_parse_and_stay_disjoint_from_the_canary():
    prompts = load_prompts(REPO_PROMPTS / REHEARSAL_FILE)
    assert len(prompts) >= 32 and all(p.accept for p in prompts)
    canary = {json.loads(line)["prompt"].strip().lower()
              for line in (REPO_PROMPTS / "canary.jsonl").read_text().splitlines() if line.strip()}
    assert not canary & {p.prompt.lower() for p in prompts}


@pytest.mark.parametrize("line, why", [
    ("{not json", "not valid JSON"),
    (json.dumps({"prompt": ""}), "'prompt' must be"),
    (json.dumps({"prompt": "Hi", "max_tokens": 0}), "'max_tokens' must be"),
    (json.dumps({"prompt": "Hi", "accept": "Berlin"}), "'accept' must be"),
])
def test_bad_lines_name_the_line_to_fix(tmp_path, line, why):
    path = tmp_path / "rehearsal.jsonl"
    path.write_text("// a comment\n" + json.dumps({"prompt": "Fine"}) + "\n" + line + "\n")
    with pytest.raises(TrainingError, match=why) as caught:
        load_prompts(path)
    assert f"{path}:3" in str(caught.value)


def test_accept_words_are_case_insensitive_and_optional():
    assert RehearsalPrompt("Capital of Germany?", accept=("Berlin",)).accepts("it is berlin.")
    assert not RehearsalPrompt("Capital of Germany?", accept=("Berlin",)).accepts("It is Bonn.")
    assert RehearsalPrompt("Say anything.").accepts("anything at all")


def test_the_models_own_right_answers_become_examples(base_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    system = serving_system_prompt(PromptStore(REPO_PROMPTS))
    prompts = [RehearsalPrompt("What is the capital of Germany?", 16, ("Berlin",)),
               RehearsalPrompt("What is the opposite of big?", 12, ("small",)),
               RehearsalPrompt("What is the capital of Germany?", 16, ("no such word in any answer",))]
    engine = local_engine(resolve_base_model(str(base_model_dir), base_model_dir.parent), None)
    examples = generate_examples(engine, tokenizer, system, prompts, batch_size=2)

    assert len(examples) == 2  # the third prompt's answer lacks its accept word: a mistake is never rehearsed
    served = LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1)
    assert sorted(example.record_id for example in examples) == ["rehearsal-0", "rehearsal-1"]
    for example in examples:
        prompt = prompts[int(example.record_id.removeprefix("rehearsal-"))]
        assert example.rehearsal
        answer_start = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        assert all(label == IGNORE_INDEX for label in example.labels[:answer_start])
        assert example.labels[answer_start:] == example.input_ids[answer_start:]
        answer = tokenizer.decode(example.input_ids[answer_start:], skip_special_tokens=True)
        # exactly what the server says to the same request, greedily
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt.prompt}]
        assert answer.strip() == served.generate(messages, max_new_tokens=prompt.max_tokens).text.strip()
        assert prompt.accepts(answer)
