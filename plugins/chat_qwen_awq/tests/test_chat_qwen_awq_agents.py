"""Tools, structured output and logprobs through the official ``openai`` client and LangChain.

The tiny model has random weights: a call whose arguments validate, or JSON that matches a
schema, comes out only because the grammar constrains every token.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel, Field

from chat_qwen_awq.testing import MODEL_ID, tiny_config
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "JST"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME_PARAMS}},
]
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
        "admin": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "admin"],
    "additionalProperties": False,
}


class Person(BaseModel):
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)
    role: Literal["admin", "user"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    import chat_qwen_awq

    with serve_in_thread(create_app(tiny_config(), plugins=[chat_qwen_awq], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=120) as c:
        yield c


def check_call(name: str, arguments: str) -> dict[str, Any]:
    assert name in PARAMS
    args = json.loads(arguments)
    jsonschema.validate(args, PARAMS[name])
    return args


def create(client: OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL_ID, **{"temperature": 0, "max_tokens": 120, **kwargs})


# -- tools ---------------------------------------------------------------------------------------------


def test_named_tool_choice_gives_a_call_whose_arguments_validate(client: OpenAI) -> None:
    r = create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_time"
    check_call(call.function.name, call.function.arguments)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_calls_stream_as_fragments_that_concatenate_per_index(client: OpenAI, tool_choice: Any) -> None:
    plain = create(client, messages=ASK, tools=TOOLS, tool_choice=tool_choice)
    chunks = list(create(client, messages=ASK, tools=TOOLS, tool_choice=tool_choice, stream=True))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            call["name"] += piece.function.name or "" if piece.function else ""
            call["arguments"] += piece.function.arguments or "" if piece.function else ""
    assert calls, "no tool call streamed"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    for call in calls.values():
        assert call["id"].startswith("call_")
        check_call(call["name"], call["arguments"])
    # Greedy: the stream carries the same calls as the plain answer.
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        (c.function.name, json.loads(c.function.arguments)) for c in plain.choices[0].message.tool_calls
    ]


@pytest.mark.parametrize("cut", ["inside the name", "inside the arguments"])
def test_a_forced_call_cut_by_max_tokens_is_a_tool_call_with_length(client: OpenAI, cut: str) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    whole = create(client, messages=ASK, tools=TOOLS, tool_choice=choice)
    assert whole.choices[0].finish_reason == "tool_calls"
    # The whole answer ends '..."days": 3}}', '\n', '</tool_call>', '<|im_end|>': six tokens fewer cut its arguments.
    max_tokens = 2 if cut == "inside the name" else whole.usage.completion_tokens - 6
    plain = create(client, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=max_tokens).choices[0]
    assert plain.finish_reason == "length"
    assert plain.message.content is None or "<tool_call>" not in plain.message.content
    chunks = list(create(client, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=max_tokens, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    if cut == "inside the name":  # nothing to return as a call yet, and no markup either
        assert plain.message.tool_calls is None and not streamed
        return
    [call] = plain.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    expected = whole.choices[0].message.tool_calls[0].function.arguments
    assert expected.startswith(call.function.arguments) and len(call.function.arguments) < len(expected)
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    # Streamed: the same call, in OpenAI's fragments.
    assert streamed[0].id.startswith("call_") and streamed[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in streamed) == call.function.arguments


def test_a_tool_result_round_trip_is_accepted(client: OpenAI) -> None:
    first = create(client, messages=ASK, tools=TOOLS, tool_choice="required")
    message = first.choices[0].message
    history = [
        *ASK,
        message.model_dump(exclude_none=True),  # content None + tool_calls, as clients replay it
        *(
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}
            for call in message.tool_calls
        ),
    ]
    assert history[1]["role"] == "assistant" and "content" not in history[1]
    r = create(client, messages=history, tools=TOOLS, max_tokens=20)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.prompt_tokens > first.usage.prompt_tokens


def test_tool_choice_none_gives_text(client: OpenAI) -> None:
    r = create(client, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=20)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")
    assert isinstance(r.choices[0].message.content, str)


def test_parallel_tool_calls_false_gives_one_call(client: OpenAI) -> None:
    r = create(client, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    [call] = r.choices[0].message.tool_calls
    check_call(call.function.name, call.function.arguments)


# -- structured output ----------------------------------------------------------------------------------


def test_json_schema_output_parses_and_validates(client: OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for stream in (False, True):
        if stream:
            chunks = list(create(client, messages=ASK, response_format=fmt, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reason = chunks[-1].choices[0].finish_reason
        else:
            r = create(client, messages=ASK, response_format=fmt)
            text, reason = r.choices[0].message.content, r.choices[0].finish_reason
        assert reason == "stop"
        jsonschema.validate(json.loads(text), PERSON)
        assert not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', "", text))  # no whitespace outside strings


def test_json_object_output_is_an_object(client: OpenAI) -> None:
    r = create(client, messages=ASK, response_format={"type": "json_object"}, max_tokens=300)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # a free object may run long with random weights: the text is a prefix of an object
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")


def test_parse_with_a_pydantic_model_returns_the_object(client: OpenAI) -> None:
    r = client.chat.completions.parse(
        model=MODEL_ID, messages=ASK, response_format=Person, temperature=0, max_tokens=120
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert parsed.role in ("admin", "user")


def test_a_schema_the_grammar_cannot_enforce_is_a_400_naming_it(client: OpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "if": {"required": ["a"]}, "then": {}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, messages=ASK, response_format=fmt)
    assert caught.value.body["param"] == "response_format.json_schema.schema"
    assert "if" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:  # streamed: still a JSON 400, before any event
        create(client, messages=ASK, stream=True, response_format=fmt)
    assert caught.value.body["param"] == "response_format.json_schema.schema"
    bad_tool = {"type": "function", "function": {"name": "f", "parameters": {**schema, "type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, messages=ASK, tools=[bad_tool], tool_choice="required")
    assert caught.value.body["param"] == "tools"


def test_max_tokens_cuts_a_constrained_answer_with_length(client: OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = create(client, messages=ASK, response_format=fmt, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert r.choices[0].message.content.startswith("{")  # a prefix of valid JSON, not parseable


async def test_constrained_and_free_sequences_share_a_batch(server: str) -> None:
    """A free answer is the same whether or not constrained sequences run beside it."""
    async with AsyncOpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=120) as c:

        async def free() -> str:
            r = await c.chat.completions.create(model=MODEL_ID, messages=ASK, temperature=0, max_tokens=40)
            return r.choices[0].message.content or ""

        async def constrained() -> Any:
            fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
            r = await c.chat.completions.create(
                model=MODEL_ID, messages=ASK, temperature=0, max_tokens=120, response_format=fmt
            )
            return json.loads(r.choices[0].message.content)

        alone = await free()
        results = await asyncio.gather(free(), constrained(), constrained(), free())
    assert results[0] == results[3] == alone
    for obj in results[1:3]:
        jsonschema.validate(obj, PERSON)


# -- logprobs ---------------------------------------------------------------------------------------------


def test_logprobs_are_consistent(client: OpenAI) -> None:
    r = create(client, messages=ASK, logprobs=True, top_logprobs=5, max_tokens=16)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        tops = e.top_logprobs
        assert len(tops) == 5
        assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
        # Greedy picks a top token (random weights make near-ties: compare logprobs, not texts).
        assert e.logprob == pytest.approx(tops[0].logprob, abs=1e-5)
        assert e.token in [t.token for t in tops if t.logprob == pytest.approx(e.logprob, abs=1e-5)]
        assert e.logprob <= 0 and bytes(e.bytes).decode("utf-8", "replace") == e.token
    text = "".join(e.token for e in entries)
    assert text.startswith(r.choices[0].message.content)
    streamed = list(create(client, messages=ASK, logprobs=True, top_logprobs=5, max_tokens=16, stream=True))
    stream_entries = [e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in stream_entries] == [(e.token, round(e.logprob, 4)) for e in entries]


def test_twenty_top_logprobs_and_none_without_the_flag(client: OpenAI) -> None:
    r = create(client, messages=ASK, logprobs=True, top_logprobs=20, max_tokens=2)
    assert all(len(e.top_logprobs) == 20 for e in r.choices[0].logprobs.content)
    assert create(client, messages=ASK, max_tokens=2).choices[0].logprobs is None


def test_logprobs_of_a_constrained_answer_only_list_allowed_tokens(client: OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = create(client, messages=ASK, response_format=fmt, logprobs=True, top_logprobs=20)
    first = r.choices[0].logprobs.content[0]
    assert first.token.startswith("{") and all(t.token.startswith("{") for t in first.top_logprobs)


# -- LangChain ----------------------------------------------------------------------------------------------


def langchain_model(server: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=MODEL_ID, base_url=f"{server}/v1", api_key="dummy", temperature=0, max_tokens=120, max_retries=0
    )


def test_langchain_structured_output_with_json_schema(server: str) -> None:
    structured = langchain_model(server).with_structured_output(Person, method="json_schema")
    result = structured.invoke("Invent a person.")
    assert isinstance(result, Person)


def test_langchain_bind_tools_with_a_forced_tool(server: str) -> None:
    from langchain_core.tools import tool

    @tool
    def get_time(zone: Literal["UTC", "CET", "JST"]) -> str:
        """The time in a zone."""
        return "12:00"

    @tool
    def get_weather(city: str, days: int) -> str:
        """The weather in a city."""
        return "sunny"

    model = langchain_model(server).bind_tools([get_time, get_weather], tool_choice="get_time")
    message = model.invoke("What time is it in Tokyo?")
    [call] = message.tool_calls
    assert call["name"] == "get_time"
    assert call["args"]["zone"] in ("UTC", "CET", "JST")
    assert call["id"].startswith("call_")


# -- n > 1 with stream ------------------------------------------------------------------------------------


def test_n_choices_stream_interleaved_and_match_the_plain_answer(client: OpenAI) -> None:
    kwargs: dict[str, Any] = dict(messages=ASK, n=3, temperature=0.9, seed=7, max_tokens=12)
    plain = create(client, **kwargs)
    chunks = list(create(client, **kwargs, stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: "", 2: ""}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in plain.choices}
    assert finish == {c.index: c.finish_reason for c in plain.choices}
    assert len(set(texts.values())) > 1  # different seeds per choice
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_n_forced_tool_calls_stream_per_choice(client: OpenAI) -> None:
    kwargs: dict[str, Any] = dict(messages=ASK, tools=TOOLS, tool_choice="required", n=2, temperature=0.9, seed=3)
    chunks = list(create(client, **kwargs, stream=True))
    calls: dict[tuple[int, int], dict[str, str]] = {}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault((choice.index, piece.index), {"name": "", "arguments": ""})
                call["name"] += (piece.function.name or "") if piece.function else ""
                call["arguments"] += (piece.function.arguments or "") if piece.function else ""
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
    assert {choice for choice, _ in calls} == {0, 1}
    for (choice, index), call in calls.items():
        last = index == max(i for c, i in calls if c == choice)
        if finish[choice] == "length" and last:  # sampled parallel calls ran into max_tokens: this one is cut
            assert call["name"] in PARAMS
            continue
        assert finish[choice] in ("tool_calls", "length")
        check_call(call["name"], call["arguments"])


# -- /v1/completions ---------------------------------------------------------------------------------------


def test_a_raw_prompt_of_the_rendered_chat_gives_the_chat_answer(client: OpenAI, awq_folder: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(awq_folder))
    rendered = tokenizer.apply_chat_template(ASK, add_generation_prompt=True, tokenize=False)
    chat = create(client, messages=ASK, max_tokens=20)
    raw = client.completions.create(model=MODEL_ID, prompt=rendered, temperature=0, max_tokens=20)
    assert raw.choices[0].text == chat.choices[0].message.content
    assert raw.usage.prompt_tokens == chat.usage.prompt_tokens
    assert raw.usage.completion_tokens == chat.usage.completion_tokens


def test_completions_legacy_logprobs(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL_ID, prompt="The Great Wall", temperature=0, max_tokens=8, logprobs=3)
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(n)]
    for logprob, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert 1 <= len(top) <= 3 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob, abs=1e-5)  # greedy
    streamed = list(
        client.completions.create(
            model=MODEL_ID, prompt="The Great Wall", temperature=0, max_tokens=8, logprobs=3, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text
    assert [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens] == lp.tokens


# -- the engine: one batch, constrained and free rows ---------------------------------------------------------


async def test_one_decode_batch_mixes_constrained_and_free_rows(backend: Any) -> None:
    from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, SamplingParams

    def req(output: OutputFormat | None = None, tokens: int = 40) -> ChatRequest:
        return ChatRequest(
            model="m",
            messages=(ChatMessage("user", "Describe a person."),),
            sampling=SamplingParams(temperature=0, max_tokens=tokens),
            output=output or OutputFormat(),
        )

    async def text(request: ChatRequest) -> tuple[str, str]:
        parts, reason = [], ""
        async for delta in backend.generate(request):
            parts.append(delta.text)
            reason = delta.finish_reason or reason
        return "".join(parts), reason

    alone = await text(req())
    backend.engine.stats.max_batch = 0
    fmt = OutputFormat(kind="json_schema", schema=PERSON)
    results = await asyncio.gather(text(req()), text(req(fmt, 120)), text(req(fmt, 120)), text(req()))
    assert backend.engine.stats.max_batch >= 3  # they really decoded together
    assert results[0] == results[3] == alone  # the masks touched only the constrained rows
    for body, reason in results[1:3]:
        assert reason == "stop"
        jsonschema.validate(json.loads(body), PERSON)


def test_parse_with_a_pydantic_function_tool_gives_parsed_arguments(client: OpenAI) -> None:
    r = client.chat.completions.parse(
        model=MODEL_ID,
        messages=ASK,
        tools=[openai.pydantic_function_tool(Person, name="save_person")],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    )
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "save_person"
    assert isinstance(call.function.parsed_arguments, Person)
