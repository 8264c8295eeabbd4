"""Anthropic's Messages API on the tiny model through the official ``anthropic`` client, on a
server that wants an API key (the SDK sends it as ``x-api-key``).

Random weights: these tests check the protocol (shapes, event order, stop reasons, counts that
agree), and that forced tool calls and structured outputs validate, which only the grammar makes so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from chat_qwen_awq.testing import MODEL_ID, TINY
from host.app import create_app
from host.testing.anthropic import assert_anthropic_error, check_message, message_from_stream
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

KEY = "sk-anthropic-test"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER},
    {"name": "get_time", "description": "The time", "input_schema": {"type": "object", "properties": {}}},
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    import chat_qwen_awq

    config = make_config({"models": {MODEL_ID: {"weights": TINY}}, "server": {"api_keys": [KEY]}})
    with serve_in_thread(create_app(config, plugins=[chat_qwen_awq], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


#: Greedy decoding, so that two answers to one question agree. The 2026 SDK dropped the sampling
#: parameters from ``messages.create``; the API (and plughost) still take them.
GREEDY = {"extra_body": {"temperature": 0}}


def create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    return client.messages.create(**{"model": MODEL_ID, "max_tokens": 48, "messages": ASK, **GREEDY, **kwargs})


def test_create_and_stream_agree(client: anthropic.Anthropic) -> None:
    kwargs = {"system": [{"type": "text", "text": "You are terse."}], "max_tokens": 24}
    message = create(client, **kwargs)
    check_message(message.model_dump())
    assert message.model == MODEL_ID and message.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(model=MODEL_ID, messages=ASK, **GREEDY, **kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == message.content[0].text
    assert final.stop_reason == message.stop_reason
    assert final.usage.input_tokens == message.usage.input_tokens > 0
    assert final.usage.output_tokens == message.usage.output_tokens


def test_count_tokens_is_the_prompt_the_model_reads(client: anthropic.Anthropic) -> None:
    with_tools = client.messages.count_tokens(model=MODEL_ID, messages=ASK, tools=TOOLS).input_tokens
    assert with_tools == create(client, tools=TOOLS, max_tokens=4).usage.input_tokens
    plain = client.messages.count_tokens(model=MODEL_ID, messages=ASK).input_tokens
    assert plain == create(client, max_tokens=4).usage.input_tokens
    hidden = client.messages.count_tokens(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice={"type": "none"})
    assert plain == hidden.input_tokens < with_tools  # tool_choice none: the tools are not shown


def test_forced_tool_use_then_a_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    first = create(client, tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"}, max_tokens=80)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id
    jsonschema.validate(call.input, WEATHER)
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 degrees"}]},
    ]
    second = create(client, tools=TOOLS, messages=history, max_tokens=16)
    check_message(second.model_dump())
    assert second.usage.input_tokens > first.usage.input_tokens


def test_forced_tool_use_streams_its_input_as_json_deltas(server: str, client: anthropic.Anthropic) -> None:
    kwargs = {"tools": TOOLS, "tool_choice": {"type": "any"}, "max_tokens": 80}
    plain = create(client, **kwargs)
    raw = httpx.post(
        f"{server}/v1/messages",
        json={"model": MODEL_ID, "temperature": 0, "messages": ASK, "stream": True, **kwargs},
        headers={"x-api-key": KEY},
        timeout=120,
    )
    streamed = message_from_stream(raw.text)
    assert "input_json_delta" in raw.text and streamed["stop_reason"] == plain.stop_reason == "tool_use"
    calls = [(b["name"], b["input"]) for b in streamed["content"] if b["type"] == "tool_use"]
    assert calls == [(b.name, b.input) for b in plain.content if b.type == "tool_use"]
    with client.messages.stream(model=MODEL_ID, messages=ASK, **GREEDY, **kwargs) as stream:
        final = stream.get_final_message()
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == calls


def test_a_stop_sequence_is_reported(client: anthropic.Anthropic) -> None:
    text = create(client, max_tokens=40).content[0].text
    sequence = next(text[i : i + 2] for i in range(4, len(text) - 2) if text[i : i + 2].isalpha())
    stopped = create(client, max_tokens=40, stop_sequences=[sequence])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", sequence)
    assert "".join(b.text for b in stopped.content if b.type == "text") == text[: text.index(sequence)]


def test_output_config_format_gives_json_that_validates(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL_ID,
        max_tokens=80,
        messages=ASK,
        output_config={"format": {"type": "json_schema", "schema": WEATHER}},
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), WEATHER)


def test_a_wrong_key_is_anthropics_401(server: str) -> None:
    with (
        anthropic.Anthropic(base_url=server, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        wrong.messages.create(model=MODEL_ID, max_tokens=8, messages=ASK)
    assert denied.value.status_code == 401
    r = httpx.post(f"{server}/v1/messages/count_tokens", json={"model": MODEL_ID, "messages": ASK})
    assert_anthropic_error(r, 401, "authentication_error")
