"""``host.protocol.responses``: what decoding cannot check, and the Responses names of shared fields."""

from __future__ import annotations

import msgspec
import pytest

from host.protocol.responses import ResponsesRequest, responses_field

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
SCHEMA = {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}


def request(**body: object) -> ResponsesRequest:
    return msgspec.convert({"model": "m", "input": "hi", **body}, ResponsesRequest)


def test_text_format_becomes_the_domain_output_format() -> None:
    domain, _ = request(text={"format": SCHEMA}).to_domain()
    assert (domain.output.kind, domain.output.schema) == ("json_schema", {"type": "object"})
    assert request(text={"format": {"type": "json_object"}}).to_domain()[0].output.kind == "json_object"
    assert request(text={"format": {"type": "text"}}).to_domain()[0].output.kind == "text"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "f"}])
def test_a_forced_call_drops_text_format_instead_of_refusing_it(choice: object) -> None:
    """The Agents SDK sends an agent's output type with a forced first turn; OpenAI accepts that."""
    domain, _ = request(tools=[TOOL], tool_choice=choice, text={"format": SCHEMA}).to_domain()
    assert domain.output.kind == "text" and domain.tool_choice.mode in ("required", "function")
    auto, _ = request(tools=[TOOL], text={"format": SCHEMA}).to_domain()
    assert (auto.output.kind, auto.tool_choice.mode) == ("json_schema", "auto")


def test_parallel_tool_calls_and_tool_choice_reach_the_domain() -> None:
    domain, _ = request(tools=[TOOL], tool_choice="required", parallel_tool_calls=False).to_domain()
    assert (domain.tool_choice.mode, domain.tool_choice.parallel) == ("required", False)
    named, _ = request(tools=[TOOL], tool_choice={"type": "function", "name": "f"}).to_domain()
    assert (named.tool_choice.mode, named.tool_choice.name) == ("function", "f")
    assert [t.name for t in named.tools] == ["f"]


def test_a_follow_up_continues_the_history_without_the_old_instructions() -> None:
    first, conversation = request(instructions="old").to_domain()
    assert [m.role for m in first.messages] == ["system", "user"] and len(conversation) == 1
    second, longer = request(instructions="new", input="again").to_domain(conversation)
    assert [(m.role, m.content) for m in second.messages] == [("system", "new"), ("user", "hi"), ("user", "again")]
    assert longer == second.messages[1:]


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("max_tokens", "max_output_tokens"),
        ("messages", "input"),
        ("messages[3].content", "input"),
        ("prompt", "input"),
        ("response_format", "text.format"),
        ("response_format.json_schema.schema", "text.format.schema"),
        ("tools[2].function.parameters", "tools[2].parameters"),
        ("tools", "tools"),
        ("tool_choice", "tool_choice"),
        ("temperature", "temperature"),
        (None, None),
    ],
)
def test_shared_field_names_in_the_responses_vocabulary(chat: str | None, responses: str | None) -> None:
    assert responses_field(chat) == responses
