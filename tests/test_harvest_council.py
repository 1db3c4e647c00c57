"""The autogen council driven through litellm by the scripted provider: proposals, votes, scoring."""

from __future__ import annotations

import asyncio
import os
import re

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402
from autogen_core.models import SystemMessage, UserMessage  # noqa: E402

from council.core.config import REPO_PROMPTS  # noqa: E402
from council.core.errors import PromptError  # noqa: E402
from council.routing.prompts import PromptStore  # noqa: E402
from harvest.council import HarvestCouncil, ModelCallError, rewriter_templates  # noqa: E402
from harvest.model_client import LiteLLMChatClient  # noqa: E402
from harvest.quality import parse_candidate, parse_vote, score, tokens  # noqa: E402
from tests.fakes import Script, install_scripted  # noqa: E402

MODELS = ["scripted/m1", "scripted/m2", "scripted/m3"]


def member(messages) -> int:
    return int(re.search(r"member (\d+) of", messages[0]["content"]).group(1))


def is_ballot(messages) -> bool:
    return "VOTE:" in messages[-1]["content"]


def is_phrasing(messages) -> bool:
    return "judged correct" in messages[0]["content"]


def scripted(proposals: dict[int, str], votes: dict[int, str], probability: float | None = 0.9,
             phrasing: str = "I cannot say."):
    """Member i proposes ``proposals[i]`` and then answers ``votes[i]`` on the ballot; asked to word a
    correction (``HarvestCouncil.phrase``), member 1 answers ``phrasing``."""

    def respond(model, messages):
        if is_phrasing(messages):
            return Script(text=phrasing, probability=probability)
        i = member(messages)
        return Script(text=votes[i] if is_ballot(messages) else proposals[i], probability=probability)

    return install_scripted(respond=respond)


@pytest.fixture
def council():
    return HarvestCouncil(MODELS, PromptStore(REPO_PROMPTS))


async def test_majority_wins_and_each_member_has_its_own_prompt_and_model(council):
    provider = scripted(
        {1: "REASONING: 2 + 2 means adding two twos, which gives 4. ANSWER: 4",
         2: "REASONING: Basic arithmetic. ANSWER: The answer is 4.",
         3: "REASONING: The bad answer said 5, which is off by one; two and two make four. ANSWER: It is 4, not 5"},
        {1: "VOTE: 3", 2: "VOTE: 3", 3: "I pick VOTE: 1"},
    )
    outcome = await council.deliberate("What is 2+2?", "It is 5.", None)
    assert [c.agent for c in outcome.candidates] == [1, 2, 3]
    assert outcome.ballots == [3, 3, 1]
    assert outcome.winner.agent == 3 and outcome.winner.votes == 2
    assert outcome.votes == {"for": 2, "cast": 3, "ballots": [3, 3, 1]}
    assert outcome.winner.answer == "It is 4, not 5"
    assert outcome.winner.probability == pytest.approx(0.9)
    proposals = [(model, msgs) for model, msgs in provider.calls if not is_ballot(msgs)]
    assert sorted((member(msgs), model) for model, msgs in proposals) == [(1, "m1"), (2, "m2"), (3, "m3")]
    systems = {member(msgs): msgs[0]["content"] for _, msgs in proposals}
    assert "step by step" in systems[1] and "expert" in systems[2] and "skeptical" in systems[3]
    assert all("QUESTION: What is 2+2?" in msgs[-1]["content"] for _, msgs in proposals)
    # worked examples from harvest_examples.j2 precede the task as user/assistant turns
    _, first = proposals[0]
    assert [m["role"] for m in first[:3]] == ["system", "user", "assistant"]
    assert first[2]["content"].startswith("REASONING:") and "ANSWER:" in first[2]["content"]
    ballots = [msgs for _, msgs in provider.calls if is_ballot(msgs)]
    assert len(ballots) == 3 and ballots[0][2] == {"role": "assistant", "content": "VOTE: 2"}


async def test_tie_is_broken_by_quality(council):
    scripted(
        {1: "REASONING: count. ANSWER: four",
         2: "REASONING: Two items plus two more items are four items in total, as counting one by one "
            "shows: one, two, three, four. ANSWER: 4 (four)",
         3: "no format at all"},
        {1: "VOTE: 1", 2: "VOTE: 2", 3: "VOTE: 7"},
    )
    outcome = await council.deliberate("What is 2+2?", "It is 5.", None)
    assert outcome.malformed == 1
    assert outcome.ballots == [1, 2, None]  # 7 is not a candidate: an invalid ballot
    first, second = outcome.candidates
    assert first.votes == second.votes == 1
    assert second.quality > first.quality
    assert outcome.winner is second


async def test_malformed_candidates_are_dropped_and_counted(council):
    scripted(
        {1: "ANSWER: 4 without any reasoning",
         2: "Sure! REASONING: two and two is four. ANSWER: 4",
         3: "REASONING: only thinking, never answering"},
        {1: "VOTE: 1", 2: "VOTE: 1", 3: "1"},
    )
    outcome = await council.deliberate("What is 2+2?", "5", None)
    assert outcome.malformed == 2
    assert len(outcome.candidates) == 1
    assert outcome.winner.strict is False  # text before REASONING: lenient format
    assert outcome.winner.parts["format"] == 0.5
    assert outcome.winner.votes == 3


async def test_no_surviving_candidate_means_no_winner_and_no_vote(council):
    provider = scripted({1: "I don't know", 2: "", 3: "ANSWER:"}, {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 1"})
    outcome = await council.deliberate("What is 2+2?", "5", None)
    assert outcome.winner is None and outcome.candidates == []
    assert outcome.malformed == 3
    assert not any(is_ballot(msgs) for _, msgs in provider.calls)


async def test_correction_answers_must_agree(council):
    provider = scripted(
        {1: "REASONING: The capital of Australia is Canberra, chosen as a compromise between Sydney and "
            "Melbourne. ANSWER: Canberra",
         2: "REASONING: It is the largest city. ANSWER: Sydney",
         3: "REASONING: Parliament House is in Canberra, so the capital is Canberra. ANSWER: The capital is Canberra."},
        {1: "VOTE: 1", 2: "VOTE: 2", 3: "VOTE: 2"},
    )
    outcome = await council.deliberate("Capital of Australia?", "Sydney", "Canberra")
    assert outcome.disagreeing == 1
    assert all("canberra" in c.answer.lower() for c in outcome.candidates)
    assert outcome.winner.answer == "The capital is Canberra."
    assert outcome.winner.parts["agreement"] == 1.0
    prompt = next(msgs[-1]["content"] for _, msgs in provider.calls if not is_ballot(msgs))
    assert "The user says the correct answer is: Canberra" in prompt


async def test_the_users_correction_is_on_the_ballot_when_no_member_agrees(council):
    provider = scripted(
        {1: "REASONING: Estonia is a country. ANSWER: Estonia is a European country, not a planet.",
         2: "REASONING: Hours are days. ANSWER: 41 days",
         3: "no format at all"},
        {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 1"},
        phrasing="It is built in Estonia.",  # disagrees: the correction is used verbatim
    )
    outcome = await council.deliberate("Where is it built?", "On Zorbla.", "Tallinn, Estonia")
    # "Estonia" alone holds half of the correction's tokens: not enough to agree with "Tallinn, Estonia"
    assert (outcome.malformed, outcome.disagreeing) == (1, 2)
    (only,) = outcome.candidates
    assert (only.agent, only.answer, only.reasoning) == (0, "Tallinn, Estonia", "")
    assert outcome.winner is only and only.votes == 3 and only.parts["agreement"] == 1.0
    assert only.quality >= 0.7  # kept by the default min_quality
    ballot = next(msgs[-1]["content"] for _, msgs in provider.calls if is_ballot(msgs))
    assert "[1] (the user's own correction)\nANSWER: Tallinn, Estonia" in ballot
    (model, asked), = [(model, msgs) for model, msgs in provider.calls if is_phrasing(msgs)]
    assert model == "m1" and asked[-1] == {"role": "user", "content": "Where is it built?"}
    assert "Q: Where is it built?\nA: Tallinn, Estonia" in asked[0]["content"]  # the correction as memory


async def test_the_correction_is_worded_the_way_the_model_answers_with_it_in_memory(council):
    scripted({1: "nothing", 2: "nothing", 3: "nothing"}, {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 1"},
             phrasing="The Zorblax 3000 is built in Tallinn, Estonia.")
    outcome = await council.deliberate("Where is it built?", "On Zorbla.", "Tallinn, Estonia")
    assert outcome.winner.agent == 0 and outcome.winner.answer == "The Zorblax 3000 is built in Tallinn, Estonia."


async def test_a_reasoned_rewrite_can_outvote_the_correction(council):
    scripted(
        {i: "REASONING: The product page lists Tallinn, Estonia as its factory. ANSWER: It is built in Tallinn, "
            "Estonia." for i in (1, 2, 3)},
        {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 2"},
    )
    outcome = await council.deliberate("Where is it built?", "On Zorbla.", "Tallinn, Estonia")
    assert [c.agent for c in outcome.candidates] == [1, 0]  # members merged; the correction last
    assert outcome.winner.agent == 1 and outcome.winner.reasoning.startswith("The product page")
    # a member whose answer is exactly the correction stands for it: no second copy on the ballot
    scripted({i: "REASONING: It says so. ANSWER: Tallinn, Estonia" for i in (1, 2, 3)},
             {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 1"})
    outcome = await council.deliberate("Where is it built?", "On Zorbla.", "Tallinn, Estonia")
    assert [c.agent for c in outcome.candidates] == [1]


async def test_identical_answers_merge_into_one_candidate(council):
    scripted({i: f"REASONING: reason {i} for four. ANSWER: Four." for i in (1, 2, 3)},
             {1: "VOTE: 1", 2: "VOTE: 1", 3: "VOTE: 1"})
    outcome = await council.deliberate("What is 2+2?", "5", None)
    assert outcome.merged == 2 and len(outcome.candidates) == 1
    assert outcome.winner.parts["vote_share"] == 1.0


async def test_concurrent_records_score_proposals_with_their_own_calls_logprobs(council):
    """Two records through one council at once: each proposal's confidence is the probability of the call that
    wrote it. Member 1 answers record A at once and record B a little later, while A waits for its slower
    members, so a client's newest call when A's round ends is B's (what the old ``last_result`` handed A)."""
    probability = {("2+2", 1): 0.91, ("2+2", 2): 0.92, ("2+2", 3): 0.93,
                   ("3+3", 1): 0.21, ("3+3", 2): 0.22, ("3+3", 3): 0.23}
    delay = {("2+2", 1): 0.0, ("2+2", 2): 0.2, ("2+2", 3): 0.2, ("3+3", 1): 0.1, ("3+3", 2): 0.3, ("3+3", 3): 0.3}
    answers = {"2+2": "4", "3+3": "6"}

    def respond(model, messages):
        i, record = member(messages), "2+2" if "What is 2+2?" in messages[-1]["content"] else "3+3"
        if is_ballot(messages):
            return Script(text="VOTE: 1", probability=0.5)
        return Script(text=f"REASONING: member {i} adds for {record}. ANSWER: {answers[record]} (member {i})",
                      probability=probability[record, i], delay=delay[record, i])

    install_scripted(respond=respond)
    a, b = await asyncio.gather(council.deliberate("What is 2+2?", "5", None),
                                council.deliberate("What is 3+3?", "7", None))
    for record, outcome in (("2+2", a), ("3+3", b)):
        assert [c.agent for c in outcome.candidates] == [1, 2, 3]
        for candidate in outcome.candidates:
            own = probability[record, candidate.agent]
            assert candidate.answer == f"{answers[record]} (member {candidate.agent})"
            assert candidate.probability == pytest.approx(own)
            assert candidate.parts["confidence"] == pytest.approx(own, abs=1e-4)  # the score used it


async def test_provider_error_raises_model_call_error(council):
    install_scripted(respond=lambda model, messages: Script(error="upstream 500") if member(messages) == 2
                     else Script(text="REASONING: r. ANSWER: a"))
    with pytest.raises(ModelCallError, match="scripted/m2"):
        await council.deliberate("q", "bad", None)


async def test_model_client_returns_logprobs_usage_and_info():
    install_scripted({"lp": Script(text="hello there world", probability=0.5), "nolp": Script(probability=None)})
    client = LiteLLMChatClient("scripted/lp", max_tokens=8)
    result = await client.create([SystemMessage(content="s"), UserMessage(content="hi", source="user")])
    assert result.content == "hello there world" and result.finish_reason == "stop"
    assert [t.token for t in result.logprobs] == ["hello", "there", "world"]
    assert result.logprobs[0].logprob == pytest.approx(-0.6931, abs=1e-3)
    assert client.results == [result]  # a client lists its own calls only
    info = client.model_info
    assert (info["vision"], info["function_calling"], info["json_output"], info["family"],
            info["structured_output"]) == (False, False, False, "unknown", False)
    plain = await LiteLLMChatClient("scripted/nolp").create([UserMessage(content="hi", source="user")])
    assert plain.logprobs is None
    assert client.count_tokens([UserMessage(content="hello world", source="user")]) > 0


def test_parsers_and_score():
    assert parse_candidate("**REASONING:** because\n**ANSWER:** 42") == ("because", "42", True)
    assert parse_candidate("REASONING: why\nANSWER: yes\nREASONING: again") == ("why", "yes", True)
    assert parse_candidate("REASONING: sum\nANSWER: 8\nQUESTION: What is 2+2?\nBAD ANSWER: 5")[1] == "8"
    assert parse_candidate("ANSWER: 42") is None
    assert parse_vote("VOTE: [2]", 3) == 2 and parse_vote("2", 3) == 2
    assert parse_vote("VOTE: 4", 3) is None and parse_vote("no idea", 3) is None
    assert tokens("Spiders have eight legs") == ["spiders", "have", "8", "legs"]
    from harvest.quality import Candidate

    good = Candidate(1, "m", "Because " * 20, "Paris is the capital of France", True, 0.9, votes=3)
    same = Candidate(2, "m", "x", "Lyon is the capital of France", True, None, votes=0)
    # weights without a correction: (0.30 votes + 0.10 format + 0.15 reasoning + 0.15 * (1 - F1 2/3)
    # + 0.10 * 0.9 confidence) / 0.80
    expected = (0.30 + 0.10 + 0.15 + 0.15 / 3 + 0.09) / 0.80
    assert score(good, council_size=3, bad_answer="Lyon is the capital of France", correction=None) == \
        pytest.approx(expected, abs=1e-4)
    assert score(same, council_size=3, bad_answer="Lyon is the capital of France", correction=None) < 0.3
    assert set(same.parts) == {"vote_share", "format", "reasoning", "improvement"}


def test_broken_examples_template_is_a_prompt_error(tmp_path):
    for name in PromptStore(REPO_PROMPTS).names():
        (tmp_path / name).write_text((REPO_PROMPTS / name).read_text())
    (tmp_path / "harvest_examples.j2").write_text('{"rewrite": [{"query": "q"}]}')
    with pytest.raises(PromptError, match="harvest_examples.j2"):
        HarvestCouncil(MODELS, PromptStore(tmp_path)).examples("rewrite")


def test_templates_cycle_over_members():
    store = PromptStore(REPO_PROMPTS)
    assert rewriter_templates(store)[:3] == [f"harvest_rewriter_{i}.j2" for i in (1, 2, 3)]
    five = HarvestCouncil([f"scripted/m{i}" for i in range(5)], store)
    assert five.templates[3] == "harvest_rewriter_1.j2" and five.templates[4] == "harvest_rewriter_2.j2"
