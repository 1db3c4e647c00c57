"""The facts ``bench/nights_bench.py`` teaches, one night after another, and the general questions it checks.

Fact ``i`` of a run is attribute ``i % 10`` of fictional product ``i // 10`` (a name made of invented
syllables, so the base model cannot know it and two products never share a name). Each attribute has a
question, a **reworded** question and a correction sentence, all written here by hand — independently of the
harvest council, whose paraphrases are what training sees — and a pool of values; a product's values are
drawn by a seeded generator. An answer is right when it holds the value's key word as a whole word
(``\\b649\\b``: "2031" is not "31"). Some facts are corrected again on a later night to a new value
(``Fact.update``); the old value must then disappear.

``LOCALITY`` holds general questions (disjoint from ``prompts/canary.jsonl`` and ``prompts/rehearsal.jsonl``:
neither the gate nor training sees them) with the words a right answer has; the bench keeps those the base
model answers right, and checks after every night that they still are.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

SYLLABLES = ("zor", "blax", "quib", "tron", "mar", "nox", "vel", "quist", "drub", "fen", "wick", "sal", "low",
             "tran", "bell", "quorn", "nim", "brel", "kes", "tarn", "ulm", "pry", "dax", "mor", "vint", "gal")
# (attribute, question, reworded question, correction, values); the whole value is the key word an answer needs
ATTRIBUTES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("colour", "What colour is the {p}?", "What color does the {p} come in?", "The {p} is {v}.",
     ("teal", "amber", "violet", "crimson", "saffron", "maroon", "turquoise", "lilac", "ochre", "indigo")),
    ("price", "How much does the {p} cost?", "What is the price of the {p}?", "The {p} costs ${v}.",
     ("129", "349", "649", "412", "873", "538", "267", "791", "184", "956")),
    ("maker", "Which company makes the {p}?", "Who manufactures the {p}?", "The {p} is made by {v}.",
     ("Hollin Works", "Brask Industries", "Ferrowind", "Lumet Labs", "Quarrystone", "Orrin Systems",
      "Pellucid Motors", "Vantor Group", "Kestrel Forge", "Abernook")),
    ("battery", "How long does the {p} battery last?", "How many hours does the {p} battery last on one charge?",
     "The {p} battery lasts {v} hours.", ("17", "23", "29", "41", "53", "67", "71", "83", "97", "46")),
    ("year", "In what year was the {p} released?", "When did the {p} come out?", "The {p} was released in {v}.",
     ("2027", "2029", "2032", "2034", "2036", "2038", "2041", "2043", "2045", "2047")),
    ("city", "In which city is the {p} built?", "Where is the {p} manufactured?", "The {p} is built in {v}.",
     ("Tallinn", "Porto", "Nagoya", "Winnipeg", "Graz", "Tromso", "Cusco", "Hobart", "Dakar", "Lviv")),
    ("mascot", "What is the {p}'s mascot?", "What mascot does the {p} have?", "The {p}'s mascot is a {v}.",
     ("pangolin", "narwhal", "axolotl", "capybara", "wombat", "okapi", "quokka", "tapir", "ibex", "lemur")),
    ("warranty", "How long is the {p} warranty?", "What warranty comes with the {p}?",
     "The {p} comes with a {v}-year warranty.", ("seven", "eleven", "nine", "twelve", "fifteen", "thirteen",
                                                  "eight", "fourteen", "six", "sixteen")),
    ("designer", "Who designed the {p}?", "Which designer created the {p}?", "The {p} was designed by {v}.",
     ("Ines Marlow", "Tobiah Renn", "Yara Okonkwo", "Lucan Petrov", "Maren Holt", "Dario Vance",
      "Sunniva Berg", "Ezra Kline", "Noor Halim", "Felix Ambrose")),
    ("weight", "How much does the {p} weigh?", "What is the weight of the {p}?", "The {p} weighs {v} grams.",
     ("315", "480", "725", "860", "1140", "590", "935", "1275", "655", "1020")),
)

LOCALITY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of Spain?", ("Madrid",)), ("What is the capital of Italy?", ("Rome",)),
    ("What is the capital of Portugal?", ("Lisbon",)), ("What is the capital of Norway?", ("Oslo",)),
    ("What is the capital of Poland?", ("Warsaw",)), ("What is the capital of Mexico?", ("Mexico City",)),
    ("How many months are in a year?", ("12", "twelve")), ("How many hours are in a day?", ("24",)),
    ("What is the largest planet in our solar system?", ("Jupiter",)),
    ("What is the boiling point of water in Celsius?", ("100",)), ("What is the opposite of cold?", ("hot",)),
    ("What is 5 + 5?", ("10", "ten")), ("How many legs does a spider have?", ("8", "eight")),
    ("What color is grass?", ("green",)), ("What animal says moo?", ("cow",)),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)), ("What planet do we live on?", ("Earth",)),
    ("How many continents are there?", ("7", "seven")), ("What is the opposite of early?", ("late",)),
    ("What do bees make?", ("honey",)), ("What is the capital of Ireland?", ("Dublin",)),
    ("What is the chemical symbol for iron?", ("Fe",)), ("What is the largest mammal?", ("whale",)),
    ("What is frozen water called?", ("ice",)),
)


def has_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` as a whole word, case-insensitively."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


@dataclass
class Fact:
    """One fact: who teaches it on which night, its wordings, its value and, once updated, the value before."""

    index: int
    night: int
    user: str
    attribute: str
    product: str
    question: str
    reworded: str
    value: str
    correction: str
    old_values: list[str] = field(default_factory=list)  # earlier values, newest last (after an update)
    updated_night: int = 0  # the night whose correction set ``value`` (0: never updated)
    erased: bool = False

    def right(self, answer: str) -> bool:
        return has_word(answer, self.value)

    def says_old(self, answer: str) -> bool:
        return any(has_word(answer, old) for old in self.old_values)


def product_names(count: int, rng: random.Random) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.sample(SYLLABLES, 2)).capitalize() + " " + rng.choice(("One", "Pod", "Max", "Go", "Air"))
        if name not in names:
            names.append(name)
    return names


def make_facts(nights: int, per_night: int, seed: int) -> list[Fact]:
    """``nights * per_night`` facts in the order they are taught; two users teach each night (a and b)."""
    rng = random.Random(seed)
    total = nights * per_night
    products = product_names(total // len(ATTRIBUTES) + 1, rng)
    draws = {p: [rng.randrange(len(values)) for _, _, _, _, values in ATTRIBUTES] for p in products}
    facts = []
    for i in range(total):
        product, (attribute, question, reworded, correction, values) = products[i // len(ATTRIBUTES)], ATTRIBUTES[
            i % len(ATTRIBUTES)]
        value = values[draws[product][i % len(ATTRIBUTES)]]
        night = i // per_night + 1
        facts.append(Fact(i, night, f"teacher-{night}-{'ab'[i % 2]}", attribute, product,
                          question.format(p=product), reworded.format(p=product), value,
                          correction.format(p=product, v=value)))
    return facts


def update(fact: Fact, night: int, rng: random.Random) -> None:
    """Give ``fact`` a new value from its attribute's pool (taught again on ``night``)."""
    _, _, _, correction, values = next(a for a in ATTRIBUTES if a[0] == fact.attribute)
    value = rng.choice([v for v in values if v != fact.value and v not in fact.old_values])
    fact.old_values.append(fact.value)
    fact.value, fact.updated_night = value, night
    fact.correction = correction.format(p=fact.product, v=value)


def plan_updates(facts: list[Fact], nights: int, share: float) -> dict[int, list[Fact]]:
    """Which facts are corrected again, on which night: ``share`` of all facts (at least one when nights >= 2),
    taken evenly from the nights that have a later night, each updated two nights after it was taught (the
    next night when that is the last)."""
    candidates = [f for f in facts if f.night < nights]
    count = min(len(candidates), max(1 if nights >= 2 and share > 0 else 0, round(share * len(facts))))
    chosen = [candidates[int(k * len(candidates) / count)] for k in range(count)] if count else []
    plan: dict[int, list[Fact]] = {}
    for fact in chosen:
        plan.setdefault(min(fact.night + 2, nights), []).append(fact)
    return plan
