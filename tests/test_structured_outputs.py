"""Grammar-constrained decoding on the real embedded model: random JSON schemas (nested objects, arrays, enums,
required fields, bounded numbers), decoded in batches beside free rows; every answer that ends on its own parses
and validates, and one that runs out of tokens says "length"."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from council.engine.base import GenerationRequest
from council.engine.grammar import constraint_for
from council.engine.local.model import LocalModel
from council.engine.model_files import resolve_base_model
from council.engine.tool_calls import parse_tool_calls

pytestmark = pytest.mark.slow
BATCH = 8  # constrained rows per batch, beside two free ones
EXAMPLES = int(os.environ.get("COUNCIL_FUZZ_BATCHES", "25"))  # batches: 200 schemas by default
TOTALS = {"schemas": 0, "valid": 0, "length": 0, "invalid": 0}

names = st.sampled_from(["name", "city", "age", "tags", "score", "kind", "items", "id", "ok", "note"])
leaf = st.one_of(
    st.just({"type": "string", "maxLength": 12}),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-50, 50), st.integers(0, 100)),
    st.builds(lambda lo: {"type": "number", "minimum": lo, "maximum": lo + 10}, st.integers(-5, 5)),
    st.just({"type": "boolean"}),
    st.lists(st.sampled_from(["red", "green", "blue", "small", "large"]), min_size=1, max_size=4, unique=True)
    .map(lambda values: {"enum": values}),
)


def _object(children: st.SearchStrategy) -> st.SearchStrategy:
    def build(props: dict, required: list[bool]) -> dict:
        keys = list(props)
        return {"type": "object", "properties": props, "additionalProperties": False,
                "required": [k for k, r in zip(keys, required, strict=False) if r]}
    return st.builds(build, st.dictionaries(names, children, min_size=1, max_size=3),
                     st.lists(st.booleans(), min_size=3, max_size=3))


schema = st.recursive(leaf, lambda children: st.one_of(
    _object(children), st.builds(lambda item: {"type": "array", "items": item, "maxItems": 3}, children)),
    max_leaves=5).map(lambda s: s if s.get("type") == "object" else
                      {"type": "object", "properties": {"value": s}, "required": ["value"],
                       "additionalProperties": False})


@pytest.fixture(scope="module")
def model(base_model_dir, tmp_path_factory):
    return LocalModel(resolve_base_model(str(base_model_dir), tmp_path_factory.mktemp("models")))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])  # no shrinking: each example is a batch of real decoding
@given(schemas=st.lists(schema, min_size=BATCH, max_size=BATCH))
def test_every_constrained_answer_validates_in_mixed_batches(model, schemas):
    ask = [{"role": "user", "content": "Fill in this JSON for a made-up item."}]
    requests = [GenerationRequest(ask, 48, constraint=constraint_for(
        {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}, None)) for s in schemas]
    free = [GenerationRequest([{"role": "user", "content": "Say hi."}], 8) for _ in range(2)]
    answers = model.generate_batch(requests[:4] + free + requests[4:])
    answers = answers[:4] + answers[6:]
    for s, answer in zip(schemas, answers, strict=True):
        TOTALS["schemas"] += 1
        assert not isinstance(answer, Exception), answer
        if answer.finish_reason == "length":
            TOTALS["length"] += 1
            continue
        try:
            assert answer.finish_reason == "stop"
            jsonschema.validate(json.loads(answer.text), s)  # raises when the answer breaks its schema
        except (AssertionError, ValueError, jsonschema.ValidationError):
            TOTALS["invalid"] += 1
            raise
        TOTALS["valid"] += 1


class Tally:
    """A pytest plugin: the fuzz's totals in the run's summary (``structured outputs: ...``)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if TOTALS["schemas"]:
            terminalreporter.write_line(
                f"structured outputs: {TOTALS['valid']}/{TOTALS['schemas']} random schemas answered and validated, "
                f"{TOTALS['length']} ended at the token limit (finish_reason length), {TOTALS['invalid']} invalid")


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def tally(request):
    if not request.config.pluginmanager.is_registered(TALLY):
        request.config.pluginmanager.register(TALLY, "structured-outputs-tally")


def test_fuzz_totals_were_counted():
    """Runs after the fuzz above (file order): most answers finished inside their token limit and all validated."""
    assert TOTALS["schemas"] == BATCH * EXAMPLES
    assert TOTALS["valid"] + TOTALS["length"] == TOTALS["schemas"]
    assert TOTALS["valid"] >= 0.8 * TOTALS["schemas"]


def test_json_object_and_tool_calls_are_well_formed(model):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                             "b": {"type": "integer", "minimum": 0, "maximum": 99}}}}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    named = {"type": "function", "function": {"name": "add"}}
    obj, required, forced, words = model.generate_batch([
        GenerationRequest(ask, 48, constraint=constraint_for({"type": "json_object"}, None)),
        GenerationRequest(ask, 64, constraint=constraint_for(None, tools, "required", False)),
        GenerationRequest(ask, 64, constraint=constraint_for(None, tools, named)),
        GenerationRequest(ask, 16, constraint=constraint_for(None, tools, "none"))])
    assert isinstance(json.loads(obj.text), dict)
    assert required.finish_reason == "tool_calls" and len(required.tool_calls) == 1 and required.text == ""
    assert required.tool_calls[0]["function"]["name"] in ("get_weather", "add")
    assert forced.tool_calls, (forced.text, forced.finish_reason)
    call = forced.tool_calls[0]["function"]
    assert call["name"] == "add" and set(json.loads(call["arguments"])) <= {"a", "b"}
    assert words.tool_calls is None and not words.text.startswith("<")
    assert parse_tool_calls(words.text) is None


def test_calls_cut_by_the_token_limit_keep_the_whole_ones(model):
    tools = [{"type": "function", "function": {"name": "final_result", "parameters": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                         "country": {"type": "string", "maxLength": 12}}}}}]
    ask = [{"role": "user", "content": "Name a city and its country, then another, then another."}]
    answers = model.generate_batch([GenerationRequest(ask, n, constraint=constraint_for(None, tools, "required"))
                                    for n in (24, 40, 56, 72)])
    for answer in answers:
        assert "<tool_call>" not in answer.text  # never markup as text
        if answer.tool_calls:
            assert answer.finish_reason == "tool_calls" and answer.text == ""
            assert all(json.loads(c["function"]["arguments"]) is not None for c in answer.tool_calls)
        else:
            assert answer.finish_reason == "length" and answer.text == ""


def test_the_kinds_a_newcomer_broke_each_fail_or_hold_alone(model):
    """Nested models' $defs in tool parameters, a schema no answer can finish, calls cut at 1-4 tokens,
    response_format beside tools, and calls in the history of a request without tools."""
    from council.core.errors import InvalidRequestError

    ship = {"type": "function", "function": {"name": "Ship", "parameters": {
        "$defs": {"Addr": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
                           "required": ["city"]}},
        "type": "object", "properties": {"to": {"$ref": "#/$defs/Addr"}}, "required": ["to"]}}}
    endless = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}, "required": ["next"]}},
        "$ref": "#/$defs/N"}}}
    ask = [{"role": "user", "content": "Ship it to Paris."}]
    history = [*ask, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
               "function": {"name": "Ship", "arguments": '{"to": {"city": "Paris"}}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "shipped"}, {"role": "user", "content": "And Rome?"}]
    from council.engine.tool_calls import as_text_messages
    answers = model.generate_batch([
        GenerationRequest(ask, 48, constraint=constraint_for(None, [ship], "required")),
        GenerationRequest(ask, 64, constraint=constraint_for(endless, None)),
        *[GenerationRequest(ask, n, constraint=constraint_for(None, [ship], "required")) for n in (1, 2, 3, 4)],
        GenerationRequest(ask, 32, constraint=constraint_for({"type": "json_object"}, [ship], "none")),
        GenerationRequest(as_text_messages(history), 24, constraint=constraint_for(None, None, history_calls=True)),
        GenerationRequest(ask, 8),
    ])
    call = json.loads(answers[0].tool_calls[0]["function"]["arguments"])
    jsonschema.validate(call, ship["function"]["parameters"])
    assert isinstance(answers[1], InvalidRequestError) and answers[1].param == "response_format"
    for cut in answers[2:6]:
        assert cut.text == "" and cut.finish_reason == "length" and cut.tool_calls is None
    assert isinstance(json.loads(answers[6].text), dict)
    assert not answers[7].text.startswith("<") and answers[7].tool_calls is None
    assert answers[8].text  # the free row beside them answered
