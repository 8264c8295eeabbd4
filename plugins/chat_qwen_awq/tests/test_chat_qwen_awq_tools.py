"""Tool calling without a model: the ``<tool_call>`` parser, the template rendering, the grammars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chat_qwen_awq.prompt import render_messages
from chat_qwen_awq.tools import ToolCallParser, parse_block
from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, Tool, ToolCall, ToolChoice
from host.contract.errors import InvalidRequest

CALL_A = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'


def run(chunks: list[str]) -> tuple[str, list[ToolCall]]:
    parser = ToolCallParser()
    text, calls = "", []
    for chunk in chunks:
        out = parser.feed(chunk)
        text += out.text
        calls += out.calls
    out = parser.flush()
    return text + out.text, calls + out.calls


def names_args(calls: list[ToolCall]) -> list[tuple[int, str, Any]]:
    return [(c.index, c.name, json.loads(c.arguments)) for c in calls]


def test_one_call_is_parsed_with_an_id_and_json_text_arguments() -> None:
    text, calls = run([CALL_A])
    assert text == ""
    assert names_args(calls) == [(0, "get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_") and len(calls[0].id) == len("call_") + 24
    assert isinstance(calls[0].arguments, str)


def test_several_calls_get_consecutive_indices_and_distinct_ids() -> None:
    text, calls = run([CALL_A + "\n" + CALL_B])
    assert text == ""
    assert names_args(calls) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {"zone": "CET"})]
    assert calls[0].id != calls[1].id


def test_text_before_a_call_is_content_without_the_separator() -> None:
    text, calls = run(["Let me check the weather.\n", CALL_A])
    assert text == "Let me check the weather."
    assert [c.name for c in calls] == ["get_weather"]


@pytest.mark.parametrize(
    "block",
    [
        "<tool_call>\nnot json at all\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
        '<tool_call>\n{"name": "f", "arguments": [1, 2]}\n</tool_call>',  # arguments not an object
        '<tool_call>\n{"name": "f", "arguments": "{broken"}\n</tool_call>',
    ],
)
def test_malformed_blocks_stay_text(block: str) -> None:
    text, calls = run(["Before. ", block, " After."])
    assert calls == []
    assert text == "Before. " + block + " After."


def test_a_call_split_across_many_chunks_is_one_call() -> None:
    source = "Sure.\n" + CALL_A + "\n" + CALL_B
    for size in (1, 2, 3, 7):
        chunks = [source[i : i + size] for i in range(0, len(source), size)]
        text, calls = run(chunks)
        assert text == "Sure."
        assert names_args(calls) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {"zone": "CET"})]


def test_a_partial_tag_is_held_back_until_it_is_decided() -> None:
    parser = ToolCallParser()
    assert parser.feed("Hello <tool_").text == "Hello"
    assert parser.feed("box> world").text == " <tool_box> world"  # not a tag after all
    assert parser.feed('<tool_call>\n{"name": "f"').text == ""  # inside a block: nothing yet
    out = parser.feed("}\n</tool_call>")
    assert [(c.name, c.arguments) for c in out.calls] == [("f", "{}")]


def test_an_unterminated_block_is_text_at_the_end() -> None:
    text, calls = run(['Hi <tool_call>\n{"name": "f", "argu'])
    assert calls == []
    assert text == 'Hi <tool_call>\n{"name": "f", "argu'


@pytest.mark.parametrize(
    ("chunks", "text", "calls"),
    [
        # OpenAI's answer to a call cut by max_tokens: the call, its arguments so far.
        (['<tool_call>\n{"name": "lookup",'], "", [("lookup", "")]),
        (['<tool_call>\n{"name": "lookup", "arguments": {"q": "ab'], "", [("lookup", '{"q": "ab')]),
        (['Sure. <tool_call>\n{"name": "lookup", "arguments": {"q": 1}}'], "Sure.", [("lookup", '{"q": 1}')]),
        (
            [CALL_A, '\n<tool_call>\n{"name": "get_time", "arg'],
            "",
            [("get_weather", '{"city": "Paris"}'), ("get_time", "")],
        ),
        # Before the name is complete nothing is a call yet, and the markup is never content.
        (['<tool_call>\n{"na'], "", []),
        (["Hi <tool_call>"], "Hi", []),
        # A block that does not look like a call stays text, as when the model stops.
        (["Hi <tool_call> oh well"], "Hi <tool_call> oh well", []),
    ],
)
def test_a_block_cut_by_the_token_limit_is_a_call_never_markup(
    chunks: list[str], text: str, calls: list[tuple[str, str]]
) -> None:
    parser = ToolCallParser()
    got_text, got_calls = "", []
    for chunk in chunks:
        out = parser.feed(chunk)
        got_text, got_calls = got_text + out.text, got_calls + out.calls
    out = parser.flush(truncated=True)
    assert got_text + out.text == text
    assert [(c.name, c.arguments) for c in got_calls + out.calls] == calls
    assert [c.index for c in got_calls + out.calls] == list(range(len(calls)))


def test_string_arguments_holding_json_are_kept() -> None:
    assert parse_block('{"name": "f", "arguments": "{\\"a\\": 1}"}') == ("f", '{"a": 1}')
    assert parse_block('{"name": "f"}') == ("f", "{}")


def test_plain_text_passes_through_unchanged() -> None:
    assert run(["Hello", " world", "!\n"]) == ("Hello world!\n", [])


# -- rendering through the model's own chat template -------------------------------------------------

WEATHER = Tool(
    name="get_weather",
    description="Current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(scope="module")
def tokenizer(awq_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(awq_folder))


def test_tool_call_tags_are_single_added_tokens(tokenizer: Any) -> None:
    for tag in ("<tool_call>", "</tool_call>"):
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.decode(ids, skip_special_tokens=True) == tag


def test_tools_and_tool_history_render_like_qwen25(tokenizer: Any) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    call2 = ToolCall(index=1, id="call_2", name="get_weather", arguments='{"city": "Rome"}')
    request = ChatRequest(
        model="m",
        messages=(
            ChatMessage("user", "Weather in Paris and Rome?"),
            ChatMessage("assistant", "", tool_calls=(call, call2)),
            ChatMessage("tool", "22 C", tool_call_id="call_1"),
            ChatMessage("tool", "25 C", tool_call_id="call_2"),
        ),
        tools=(WEATHER,),
    )
    text = tokenizer.decode(render_messages(tokenizer, request))
    tool_json = json.dumps(
        {
            "type": "function",
            "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters},
        }
    )
    assert text.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n"
    )
    assert f"<tools>\n{tool_json}\n</tools>" in text
    assert (
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
    ) in text
    # Consecutive tool results share one user turn.
    assert (
        "<|im_start|>user\n<tool_response>\n22 C\n</tool_response>\n<tool_response>\n25 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    ) in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tool_choice_none_hides_the_tools(tokenizer: Any) -> None:
    request = ChatRequest(
        model="m", messages=(ChatMessage("user", "hi"),), tools=(WEATHER,), tool_choice=ToolChoice(mode="none")
    )
    assert "<tools>" not in tokenizer.decode(render_messages(tokenizer, request))


# -- grammars --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grammars(tokenizer: Any) -> Any:
    from chat_qwen_awq.grammar import Grammars

    return Grammars(tokenizer, 2048, [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def schema_request(schema: dict[str, Any]) -> ChatRequest:
    return ChatRequest(
        model="m", messages=(ChatMessage("user", "x"),), output=OutputFormat(kind="json_schema", schema=schema)
    )


def test_a_schema_keyword_that_cannot_be_enforced_is_a_400_naming_it(grammars: Any) -> None:
    schema = {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}
    with pytest.raises(InvalidRequest) as caught:
        grammars.constraint(schema_request(schema))
    assert caught.value.param == "response_format.json_schema.schema"
    assert "if" in caught.value.message


def test_compiled_grammars_are_cached_and_copied_per_sequence(grammars: Any, tokenizer: Any) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    a = grammars.constraint(schema_request(schema))
    b = grammars.constraint(schema_request(schema))
    assert a.matcher is not b.matcher  # independent state per sequence
    for token in tokenizer.encode('{"ok":true}', add_special_tokens=False):
        assert a.consume(token)
    assert a.stopped and not b.stopped


def test_the_json_grammar_allows_no_free_whitespace(grammars: Any, tokenizer: Any) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    c = grammars.constraint(schema_request(schema))
    ids = tokenizer.encode('{ "ok": true}', add_special_tokens=False)
    assert not all(c.consume(t) for t in ids)


def test_tool_arguments_are_closed_objects_unless_the_schema_says_otherwise() -> None:
    from host.sdk import close_objects

    schema = {
        "type": "object",
        "properties": {
            "where": {"type": "object", "properties": {"city": {"type": "string"}}},
            "extra": {"type": "object", "additionalProperties": True, "properties": {}},
            "list": {"type": "array", "items": {"type": "object", "properties": {"x": {"enum": [{"properties": 1}]}}}},
        },
    }
    out = close_objects(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["where"]["additionalProperties"] is False
    assert out["properties"]["extra"]["additionalProperties"] is True
    assert out["properties"]["list"]["items"]["additionalProperties"] is False
    assert out["properties"]["list"]["items"]["properties"]["x"] == {"enum": [{"properties": 1}]}
    assert "additionalProperties" not in schema  # the caller's schema is not changed
