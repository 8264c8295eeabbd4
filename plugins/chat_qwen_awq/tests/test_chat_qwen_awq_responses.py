"""``/v1/responses`` through the official ``openai`` SDK (``client.responses``) and the OpenAI Agents
SDK, on the tiny random-weight model behind a keyed server.

Random weights: the assertions are about the protocol (what the SDKs parse, accumulate and send
back) and about constraints (a forced call's arguments and a json_schema answer validate because
the grammar allows nothing else), never about what the text says.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from chat_qwen_awq.testing import MODEL_ID, TINY
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

KEYS = ["sk-alice", "sk-bob"]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER}]
FORCED: Any = {"type": "function", "name": "get_weather"}
ASK = "What is the weather in Paris for the next 3 days?"
REPO = Path(__file__).resolve().parents[3]
AGENTS_PYTHON = REPO / ".venv-agents" / "bin" / "python"


class Forecast(BaseModel):
    city: Literal["Paris", "Oslo"]
    days: int = Field(ge=1, le=7)
    rainy: bool


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    import chat_qwen_awq

    config = make_config({"models": {MODEL_ID: {"weights": TINY}}, "server": {"api_keys": KEYS}})
    with serve_in_thread(create_app(config, plugins=[chat_qwen_awq], budgets=CPU_ONLY)) as url:
        yield url


def sdk(server: str, key: str = KEYS[0]) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with sdk(server) as c:
        yield c


def create(client: OpenAI, **kwargs: Any) -> Any:
    return client.responses.create(model=MODEL_ID, **{"temperature": 0, "max_output_tokens": 40, **kwargs})


def test_a_plain_response_parses_with_text_and_usage(client: OpenAI) -> None:
    r = create(client, instructions="Answer briefly.", input=ASK)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL_ID
    assert r.status in ("completed", "incomplete")
    [message] = r.output
    assert message.type == "message" and message.role == "assistant"
    assert r.output_text == message.content[0].text
    assert r.usage.output_tokens <= 40 and r.usage.input_tokens > 10
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens" and r.usage.output_tokens == 40


def test_responses_stream_accumulates_to_the_plain_answer(client: OpenAI) -> None:
    plain = create(client, input=ASK)
    with client.responses.stream(model=MODEL_ID, input=ASK, temperature=0, max_output_tokens=40) as stream:
        events = list(stream)
    final = events[-1].response  # get_final_response() wants response.completed; this may be incomplete
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == ("response.completed" if plain.status == "completed" else "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == plain.output_text  # greedy: the same text both ways
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_a_forced_function_call_and_its_output_round_trip(client: OpenAI) -> None:
    first = create(client, input=ASK, tools=TOOLS, tool_choice=FORCED, max_output_tokens=80)
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)  # the grammar's doing, not the weights'
    # The SDK's documented loop: the output items go back as input, with the call's output after them.
    history: list[Any] = [{"role": "user", "content": ASK}, *first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'})
    second = create(client, input=history, tools=TOOLS)  # auto: the model may answer or call again
    assert second.status in ("completed", "incomplete")
    assert {item.type for item in second.output} <= {"message", "function_call"}
    assert second.usage.input_tokens > first.usage.input_tokens
    # Streamed, the call comes as its item and its arguments events.
    with client.responses.stream(
        model=MODEL_ID, input=ASK, tools=TOOLS, tool_choice=FORCED, temperature=0, max_output_tokens=80
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == [call.arguments]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert arguments == call.arguments and final.output[0].arguments == call.arguments


def test_required_tool_choice_streams_calls_that_validate(client: OpenAI) -> None:
    r = create(client, input=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_output_tokens=80)
    [call] = r.output
    jsonschema.validate(json.loads(call.arguments), WEATHER)


def test_text_format_json_schema_validates(client: OpenAI) -> None:
    schema = {**Forecast.model_json_schema(), "additionalProperties": False}
    fmt: Any = {"type": "json_schema", "name": "forecast", "schema": schema, "strict": True}
    r = create(client, input=ASK, text={"format": fmt}, max_output_tokens=80)
    assert r.status == "completed" and r.text.format.type == "json_schema"
    jsonschema.validate(json.loads(r.output_text), schema)
    parsed = client.responses.parse(
        model=MODEL_ID, input=ASK, text_format=Forecast, temperature=0, max_output_tokens=80
    ).output_parsed
    assert isinstance(parsed, Forecast)
    with pytest.raises(openai.BadRequestError) as caught:  # a keyword the grammar cannot enforce
        bad = {"type": "object", "properties": {"a": {"type": "integer"}}, "if": {"required": ["a"]}, "then": {}}
        create(client, input=ASK, text={"format": {"type": "json_schema", "name": "x", "schema": bad}})
    assert caught.value.body["param"] == "text.format.schema"


def test_previous_response_id_retrieve_and_delete(client: OpenAI, server: str) -> None:
    first = create(client, input="Name a colour.")
    second = create(client, previous_response_id=first.id, input="Another one?")
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn came along
    stored = client.responses.retrieve(second.id)
    assert (stored.id, stored.output_text, stored.usage) == (second.id, second.output_text, second.usage)
    with sdk(server, KEYS[1]) as other:  # a valid key, but not the one that made it
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(second.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=MODEL_ID, previous_response_id=first.id, input="x", max_output_tokens=5)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(first.id)
    with sdk(server, "sk-mallory") as stranger, pytest.raises(openai.AuthenticationError):
        stranger.responses.retrieve(second.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    assert client.responses.retrieve(second.id).id == second.id


def test_built_in_tools_are_refused_by_name(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, input=ASK, tools=[*TOOLS, {"type": "web_search"}])
    assert caught.value.body["param"] == "tools[1].type" and "web_search" in caught.value.body["message"]


def test_the_openai_agents_sdk_with_its_default_responses_model(server: str) -> None:
    """The Agents SDK (its own venv: its pins conflict with ours, see scripts/bootstrap) runs an agent
    with a structured output type, and streamed, one that is forced to call a tool on its first turn
    and answers in its output type once the tool's result went back. (An agent whose answer is
    free text cannot be run here: random weights never end it, and the SDK raises on
    ``response.incomplete``, as it does with OpenAI.)"""
    if not AGENTS_PYTHON.exists():
        pytest.skip(".venv-agents is missing: scripts/bootstrap makes it (the OpenAI Agents SDK)")
    script = Path(__file__).with_name("agents_sdk_run.py")
    env = {**os.environ, "PLUGHOST_URL": f"{server}/v1", "PLUGHOST_KEY": KEYS[0], "PLUGHOST_MODEL": MODEL_ID}
    done = subprocess.run(
        [str(AGENTS_PYTHON), str(script)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["structured"]["city"] in ("Paris", "Oslo")
    assert report["tool_arguments"]["city"] in ("Paris", "Oslo")
    assert report["tool_arguments"]["unit"] in ("celsius", "fahrenheit")
    assert report["tool_output_sent"] and report["streamed_events"] > 0
    assert report["streamed_structured"]["city"] in ("Paris", "Oslo")


@pytest.mark.parametrize("stream", [False, True])
def test_the_models_limits_are_400s_naming_the_responses_fields(client: OpenAI, stream: bool) -> None:
    """The backend names Chat Completions fields (``max_tokens``, ``messages``); a Responses client
    is told its own (a JSON error before any event, streamed or not)."""
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, input=ASK, max_output_tokens=100_000, stream=stream)
    assert caught.value.body["param"] == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, input="word " * 5000, stream=stream)
    assert (caught.value.body["param"], caught.value.body["code"]) == ("input", "context_length_exceeded")
