"""Tool-call grammars hold the function's own schema, wherever its ``$ref``s point: into ``$defs``, at the
parameters' root (``"#"``, OpenAI's recursive strict schemas) or into their properties. Checked with llguidance
and the embedded model's tokenizer: no model is loaded."""

from __future__ import annotations

import pytest

from council.engine.grammar import constraint_for

llguidance = pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def accepts(base_model_dir):
    import llguidance.hf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    view = llguidance.hf.from_tokenizer(tokenizer)

    def check(tools: list[dict], text: str) -> bool:
        lark = constraint_for(None, tools, "required", False).lark
        matcher = llguidance.LLMatcher(view, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
        return matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()

    return check


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def tool(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def test_a_root_reference_recurses_into_the_parameters_not_the_call(accepts):
    tree = tool("tree", {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}},
                         "required": ["children"]})
    assert accepts([tree], call("tree", '{"children": [{"children": []}]}'))
    assert not accepts([tree], call("tree", '{"children": [{"name": "tree", "arguments": {"children": []}}]}'))


def test_a_reference_into_the_properties_and_one_into_defs(accepts):
    pair = tool("pair", {"type": "object", "properties": {"a": {"enum": ["x", "y"]}, "b": {"$ref": "#/properties/a"},
                                                          "c": {"$ref": "#/$defs/C"}},
                         "required": ["a", "b", "c"], "$defs": {"C": {"type": "integer"}}})
    assert accepts([pair], call("pair", '{"a": "x", "b": "y", "c": 3}'))
    assert not accepts([pair], call("pair", '{"a": "x", "b": "z", "c": 3}'))
    assert not accepts([pair], call("pair", '{"a": "x", "b": "y", "c": "3"}'))


def test_two_tools_with_the_same_definition_names_keep_their_own(accepts):
    first = tool("first", {"type": "object", "properties": {"v": {"$ref": "#/$defs/V"}}, "required": ["v"],
                           "$defs": {"V": {"type": "integer"}}})
    second = tool("second", {"type": "object", "properties": {"v": {"$ref": "#/$defs/V"}}, "required": ["v"],
                             "$defs": {"V": {"type": "string"}}})
    assert accepts([first, second], call("first", '{"v": 1}'))
    assert accepts([first, second], call("second", '{"v": "1"}'))
    assert not accepts([first, second], call("first", '{"v": "1"}'))
