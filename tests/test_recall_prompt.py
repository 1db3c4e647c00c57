"""How recalled corrections are put before the real embedded model (``prompts/system.j2``): it must answer with
the user's correction, also one that opens with an article ("The Grey Wren")."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model
from council.routing.prompts import PromptStore

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
FACTS = [("What is the name of the lake near Dornwick?", "The Silvermere"),
         ("Which ship did Captain Hala Venn command?", "The Grey Wren"),
         ("What is the signature bread of the Ostrava Bakery?", "The Golden Knot")]


def recalled(question: str) -> list[dict]:
    """The three corrections as recall gives them: the asked one first (most similar), then the others."""
    ordered = sorted(FACTS, key=lambda fact: fact[0] != question)
    return [{"query": q, "answer": a, "similarity": 1.0 if q == question else 0.6, "corrected": True}
            for q, a in ordered]


def test_a_short_correction_reads_as_a_sentence_with_its_article_in_lower_case():
    store = PromptStore(PROMPTS)
    context = [{"query": "Q1?", "answer": "The Quennet", "corrected": True},
               {"query": "Q2?", "answer": "A pangolin named Pim.", "corrected": True},
               {"query": "Q3?", "answer": "Theodore Pike", "corrected": True},
               {"query": "Q4?", "answer": "The", "corrected": True},
               {"query": "Q5?", "answer": "The capital of France is Paris.", "corrected": False}]
    lines = store.render("system.j2", context=context, client_system="").splitlines()
    assert lines[-10:] == ["Q: Q5?", "A: The capital of France is Paris.", "Q: Q4?", "A: The answer is The.",
                           "Q: Q3?", "A: The answer is Theodore Pike.", "Q: Q2?",
                           "A: The answer is a pangolin named Pim.", "Q: Q1?", "A: The answer is the Quennet."]


@pytest.mark.slow
def test_the_embedded_model_answers_with_recalled_corrections_that_open_with_an_article(base_model_dir):
    # "The answer is The Grey Wren." made the 135M model answer "The Golden Knot" (another recalled fact):
    # a capital "The" inside the sentence reads as the start of a new one
    model = LocalModel(resolve_base_model(str(base_model_dir), base_model_dir.parent), torch_threads=1)
    store = PromptStore(PROMPTS)
    answers = {}
    for question, correction in FACTS:
        system = store.render("system.j2", context=recalled(question), client_system="")
        reply = model.generate([{"role": "system", "content": system}, {"role": "user", "content": question}],
                               max_new_tokens=24)
        answers[correction] = reply.text
    assert all(correction.split(" ", 1)[1].lower() in text.lower() for correction, text in answers.items()), answers
