"""What harvest keeps: user corrections always, with checked paraphrases, statements and a reverse question;
unfaulted low-confidence answers only when a stronger council out-votes them. Scripted council members."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord, Feedback
from council.routing.prompts import PromptStore
from harvest.augment import Augmented, answer_kind, keeps_key_words
from harvest.config import HarvestConfig
from harvest.council import HarvestCouncil
from harvest.main import harvest
from harvest.output import augmented_rows, held_out_count
from harvest.pipeline import Harvester, Report
from harvest.quality import agrees
from harvest.quality import names as key_words
from harvest.selection import Group, Selection
from tests.fakes import Script, install_scripted
from tests.test_harvest_pipeline import add
from tests.test_harvest_pipeline import stored as get

DAY = datetime(2026, 11, 21, tzinfo=UTC)
MODELS = ["scripted/m1", "scripted/m2", "scripted/m3"]
QUESTION = "How long does the Zorblax 3000 battery last?"
CORRECTION = "41 hours"
GOOD = ["How many hours does the Zorblax 3000 battery run?", "What is the battery life of the Zorblax 3000?",
        "What is the running time of a Zorblax 3000 battery?", "How long can the Zorblax 3000 run on battery?",
        "What battery life does the Zorblax 3000 have?", "How long will a Zorblax 3000 battery keep going?"]
BAD = {"leak": "Does the Zorblax 3000 battery last 41 hours?", "key_words": "How long does the battery last?",
       "same": "How long does the Zorblax 3000 battery last?", "format": "The Zorblax 3000 is great.",
       "number": "How long does the Zorblax 3000 battery last in 2020?"}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def failure(query: str, answer: str, confidence: float = 0.3, **feedback) -> ExchangeRecord:
    return ExchangeRecord(query, answer, confidence, False, "local/smollm2", created_at=DAY + timedelta(hours=12),
                          feedback=Feedback(**feedback) if feedback else None)


def config(settings, **kwargs):
    return HarvestConfig(settings=settings, **{"since": DAY, "until": DAY + timedelta(days=1), "models": MODELS,
                                               **kwargs})


def test_key_words_name_things_and_numbers():
    assert key_words(QUESTION) == {"zorblax", "3000"}
    assert key_words("Who is the CEO of the company that makes the Zorblax 3000?") == {"ceo", "zorblax", "3000"}
    assert keeps_key_words(GOOD[0], QUESTION, CORRECTION)
    assert not keeps_key_words(BAD["key_words"], QUESTION, CORRECTION)
    assert not keeps_key_words(BAD["number"], QUESTION, CORRECTION)  # invents a number the fact lacks
    assert keeps_key_words("The Zorblax 3000 battery lasts 41 hours.", QUESTION, CORRECTION)


def test_agreeing_with_a_correction_keeps_every_name_and_number_in_it():
    taught = "The capital of the planet Zorvath is Krell Harbor."
    assert not agrees("Krell is the capital of the planet Zorvath.", taught)  # 4/5 of the words, not the name
    assert agrees("The capital of Zorvath is Krell Harbor.", taught)
    assert agrees("It lasts forty-one hours, 41 in all.", "41 hours") and not agrees("It lasts 14 hours.", "41 hours")


def test_held_out_paraphrases_are_never_the_only_ones_and_statements_answer_trained_ones():
    assert [held_out_count(n) for n in range(7)] == [0, 0, 1, 1, 1, 2, 2]
    main = {"record_id": "rec_1", "output": "The battery lasts 41 hours.", "input": "", "quality_score": 0.5,
            "models": MODELS, "source": "correction", "created_at": "now"}
    extra = Augmented(paraphrases=GOOD[:3], statements=["The Zorblax 3000 battery lasts 41 hours."],
                      reverse=("What lasts 41 hours?", "The Zorblax 3000 battery lasts 41 hours."))
    rows = augmented_rows(main, CORRECTION, extra)
    held = [r for r in rows if r["held_out"]]
    assert [r["instruction"] for r in held] == [GOOD[0]]
    assert {r["kind"] for r in rows} == {"paraphrase", "statement", "reverse"}
    assert len({r["record_id"] for r in rows}) == len(rows) and all(r["source_record_id"] == "rec_1" for r in rows)
    questions = [r["instruction"] for r in rows]
    assert len(set(questions)) == len(questions), "one target per prompt, or training can never reproduce both"
    assert all(r["correction"] == CORRECTION for r in rows)
    lone = {**main, "output": "41 hours"}
    rows = augmented_rows(lone, CORRECTION, Augmented(statements=["The Zorblax 3000 battery lasts 41 hours."]))
    assert rows == [] and lone["output"] == "The Zorblax 3000 battery lasts 41 hours."  # a full sentence teaches


def augmenting_council(votes_no: str = "", vote_original: bool = False):
    """Members propose GOOD and BAD paraphrases in turn, good statements and a reverse question; vote YES except
    on ``votes_no``; in the rewrite round they answer the correction (or keep the answer, for other questions)."""
    proposals = itertools.cycle([BAD["format"], GOOD[0], BAD["leak"], GOOD[1], BAD["key_words"], GOOD[2],
                                 BAD["same"], GOOD[3]])

    def respond(model, messages):
        prompt = messages[-1]["content"]
        if prompt.startswith("Ask this question again"):
            return Script(next(proposals))
        if prompt.startswith("State this fact"):
            return Script("The Zorblax 3000 battery lasts 41 hours." if model.endswith("m1") else
                          "Zorblax 3000 batteries run for 41 hours.")
        if prompt.startswith("Turn this fact around"):
            return Script("QUESTION: Which device has a battery that lasts 41 hours?\nANSWER: The Zorblax 3000 "
                          "battery lasts 41 hours.")
        if "Reply with one word: YES or NO" in prompt:
            return Script("NO" if votes_no and votes_no in prompt else "YES")
        if "VOTE:" in prompt:
            count = prompt.count("ANSWER:")
            return Script(f"VOTE: {count if vote_original else 1}")
        if "judged correct" in messages[0]["content"]:
            return Script("The Zorblax 3000 battery lasts 41 hours.")
        answer = "Three colors are red, blue and green." if "colors" in prompt else "It lasts 41 hours."
        return Script(f"REASONING: checked step by step against the user's words and the facts. ANSWER: {answer}")

    return install_scripted(respond=respond)


async def test_a_correction_is_kept_whatever_its_quality_with_checked_wordings(make_settings, embedder):
    settings = make_settings()
    record = failure(QUESTION, "About a week.", correction=CORRECTION)
    add(settings, embedder, record)
    augmenting_council(votes_no=GOOD[3])  # 4 members x 2 styles: 4 bad proposals and GOOD[0..3]

    report = await harvest(config(settings, min_quality=0.99, agents=4,  # no rewrite could pass this bar
                                  models=[*MODELS, "scripted/m4"]))

    assert report.kept == report.kept_corrections == 1 and report.rejected_low_quality == 0
    rows = lines(settings.paths.training_data / "harvest_20261121.jsonl")
    main, extra = rows[0], rows[1:]
    assert main["record_id"] == record.id and "41 hours" in main["output"] and main["correction"] == CORRECTION
    questions = [r["instruction"] for r in extra if r["kind"] in ("paraphrase", "statement")]
    assert set(questions) == set(GOOD[:3])  # GOOD[3] voted down, every BAD one checked out
    assert not set(questions) & set(BAD.values())
    assert report.augment_dropped["vote"] >= 1
    for reason in ("leak", "key_words", "same", "format"):
        assert report.augment_dropped[reason] >= 1, reason
    assert sum(r["held_out"] for r in extra) == 1 == report.held_out
    assert [r["kind"] for r in extra].count("reverse") == 1 == report.reverse
    assert get(settings, record.id).harvested_at is not None


async def test_an_answer_nobody_faulted_is_replaced_only_when_out_voted(make_settings, embedder):
    settings = make_settings()
    record = failure("Name three colors.", "Red, green and blue.", confidence=0.4)
    add(settings, embedder, record)
    augmenting_council(vote_original=True)

    report = await harvest(config(settings))

    assert report.kept_original == 1 and report.kept == 0
    assert not (settings.paths.training_data / "harvest_20261121.jsonl").exists()
    assert get(settings, record.id).harvested_at is not None


def test_an_embedded_only_council_leaves_unfaulted_answers_alone(make_settings):
    settings = make_settings()
    council = HarvestCouncil(["local/smollm2"] * 3, PromptStore(settings.prompts_dir))
    report = Report(since="", until="", models=council.models)
    harvester = Harvester(settings, None, council, 0.7, report)
    corrected = Group(failure(QUESTION, "A week.", correction=CORRECTION))
    thumbs = Group(failure("What is 2 + 2?", "5", thumbs="down"))
    unsure = Group(failure("Name three colors.", "Red, green and blue.", confidence=0.4))
    groups = harvester.take(Selection(found=3, groups=[corrected, thumbs, unsure], deferred=0))
    assert groups == [corrected, thumbs]
    assert report.left_for_stronger_council == 1
    assert "left_for_stronger_council=1" in report.summary_line()
    stronger = Harvester(settings, None, HarvestCouncil(MODELS, PromptStore(settings.prompts_dir)), 0.7,
                         Report(since="", until="", models=MODELS))
    assert len(stronger.take(Selection(found=3, groups=[corrected, thumbs, unsure], deferred=0))) == 3


def test_a_paraphrase_asks_for_the_same_kind_of_answer():
    assert answer_kind("In which city is the Zorblax 3000 built?") == answer_kind("Where is it made?") == "place"
    assert answer_kind("Who builds the Zorblax 3000?") == answer_kind("Whose company is it?") == "person"
    assert answer_kind("When did it come out?") == answer_kind("In what year was it released?") == "time"
    assert answer_kind("How many hours does the battery last?") == answer_kind("How much is it?") == "amount"
    assert answer_kind("What is the Zorblax 3000's mascot?") is None  # "what" alone asks for anything


NIGHT = {  # question -> (correction, paraphrases its members propose, in turn)
    "Who is the CEO of the company that makes the Zorblax 3000?": (
        "Odessa Quill", ["Which company made the Zorblax 3000?",  # the maker's question: teaches a wrong answer
                         "What is the name of the CEO of the company that makes the Zorblax 3000?",
                         "Who runs the company that makes the Zorblax 3000?"]),  # near the maker's too, but less
    "Which company makes the Zorblax 3000?": ("Brindlewick Labs", ["Which company produces the Zorblax 3000?"]),
    "In which city is the Zorblax 3000 built?": (
        "Tallinn, Estonia", ["Who builds the Zorblax 3000?", "Where is the Zorblax 3000 built?"]),
}


async def test_paraphrases_that_ask_another_fact_of_the_night_or_another_kind_of_answer_are_dropped(
        make_settings, embedder):
    settings = make_settings()
    for question, (correction, _) in NIGHT.items():
        add(settings, embedder, failure(question, "I do not know.", correction=correction))
    turns = {question: itertools.cycle(proposals) for question, (_, proposals) in NIGHT.items()}

    def respond(model, messages):
        prompt = messages[-1]["content"]
        question = next((q for q in NIGHT if q in prompt), None)
        if prompt.startswith("Ask this question again"):
            return Script(next(turns[question]))
        if "Reply with one word: YES or NO" in prompt:
            return Script("YES")
        if prompt.startswith(("State this fact", "Turn this fact around")) or "VOTE:" in prompt:
            return Script("VOTE: 1" if "VOTE:" in prompt else "-")
        correction = NIGHT[question][0] if question else "it"
        return Script(f"REASONING: the user's words are the facts, checked one by one here. ANSWER: {correction}")

    install_scripted(respond=respond)
    report = await harvest(config(settings))

    assert report.kept_corrections == 3
    rows = lines(settings.paths.training_data / "harvest_20261121.jsonl")
    asked = {}
    for row in rows:
        if row.get("kind") == "paraphrase":
            asked.setdefault(row["correction"], set()).add(row["instruction"])
    assert asked["Odessa Quill"] == {"What is the name of the CEO of the company that makes the Zorblax 3000?",
                                     "Who runs the company that makes the Zorblax 3000?"}
    assert asked["Tallinn, Estonia"] == {"Where is the Zorblax 3000 built?"}
    assert report.augment_dropped["other_fact"] >= 1 and report.augment_dropped["kind"] >= 1
