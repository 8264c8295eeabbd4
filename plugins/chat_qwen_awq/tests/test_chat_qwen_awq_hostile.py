"""Issue 26: what a hostile probe broke, as regression tests on the tiny AWQ model over HTTP.

Each body below answered a 500 (or ran unbounded) before: schemas the constraint library gives up
on, subnormal temperatures, a repetition penalty of 1e-300, fan-outs of n x max_tokens x logprobs.
Now each is a 4xx with the OpenAI envelope naming the field (and the limit), decided before any
token, and the server answers the next request as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from chat_qwen_awq.grammar import Constraint
from chat_qwen_awq.schema_limits import SchemaLimits, check_schema
from chat_qwen_awq.testing import MODEL_ID, RecordingBackend, RecordingPlugin, tiny_config
from host.app import create_app
from host.sdk import InvalidRequest
from host.testing.http import assert_error
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread

OUTPUT_TOKENS = 4096
LOGPROBS = 20_000
ALTERNATIVES = 600  # above llguidance's own explosion (500 optional properties): the dry run catches that
OPTIONS = f"models.{MODEL_ID}.options"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = tiny_config(
        max_request_output_tokens=OUTPUT_TOKENS, max_request_logprobs=LOGPROBS, grammar_max_alternatives=ALTERNATIVES
    )
    with serve_in_thread(create_app(config, plugins=[RecordingPlugin()], budgets=CPU_ONLY)) as served:
        assert httpx.post(f"{served}/v1/models/{MODEL_ID}/load", timeout=120).status_code == 200
        yield served


def chat(url: str, **body: Any) -> httpx.Response:
    messages = [{"role": "user", "content": "Tell me about the Great Wall."}]
    payload = msgspec.json.encode({"model": MODEL_ID, "messages": messages, **body})  # json recurses too deep
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{url}/v1/chat/completions", content=payload, headers=headers, timeout=120)


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def optional_properties(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


RECURSIVE = {
    "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}},
    "$ref": "#/$defs/node",
}
SCHEMA = "response_format.json_schema.schema"
TOOL = {"type": "function", "function": {"name": "f", "parameters": nested(100)}}
TOOL_PARAMS = "tools[0].function.parameters"

#: (name, body fields, param, a phrase of the message)
HOSTILE = [
    (
        "10,000 optional properties",
        {"response_format": json_schema(optional_properties(10_000))},
        SCHEMA,
        "schema_bytes",
    ),
    ("1,000 compact properties", {"response_format": json_schema(optional_properties(1000))}, SCHEMA, "alternatives"),
    ("550 optional properties", {"response_format": json_schema(optional_properties(550))}, SCHEMA, "gives up"),
    ("nested 100 deep", {"response_format": json_schema(nested(100))}, SCHEMA, "grammar_max_depth"),
    ("recursive required $ref", {"response_format": json_schema(RECURSIVE)}, SCHEMA, "gives up"),
    ("recursive, streamed", {"response_format": json_schema(RECURSIVE), "stream": True}, SCHEMA, "gives up"),
    ("$ref to the root", {"response_format": json_schema({"$ref": "#"})}, SCHEMA, "cannot be enforced"),
    ("tool nested 100 deep", {"tools": [TOOL], "tool_choice": "required"}, TOOL_PARAMS, "grammar_max_depth"),
    ("repetition_penalty 1e-300", {"temperature": 1, "repetition_penalty": 1e-300}, "repetition_penalty", ">= 0.01"),
    ("n x max_tokens", {"n": 8, "max_tokens": 600}, "max_tokens", f"{OPTIONS}.max_request_output_tokens"),
    (
        "n x max_tokens x top_logprobs",
        {"n": 16, "max_tokens": 100, "logprobs": True, "top_logprobs": 20},
        "top_logprobs",
        f"{OPTIONS}.max_request_logprobs",
    ),
]


@pytest.mark.parametrize(("body", "param", "phrase"), [case[1:] for case in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_bodies_are_a_400_before_any_token(url: str, body: dict[str, Any], param: str, phrase: str) -> None:
    error = assert_error(chat(url, **body), 400, param=param)
    assert phrase in error["message"], error["message"]
    assert chat(url, max_tokens=2, temperature=0).status_code == 200  # and the server goes on


@pytest.mark.parametrize("depth", [400, 490, 2000])
def test_schemas_nested_past_python_s_recursion_are_a_400(url: str, depth: int) -> None:
    # Written by hand: Python's json and msgspec both recurse to encode it.
    schema = '{"type":"object","properties":{"a":' * depth + '{"type":"string"}' + "}}" * depth
    head = msgspec.json.encode({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]})[:-1].decode()
    body = head + ',"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":' + schema + "}}}"
    headers = {"Content-Type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=body.encode(), headers=headers, timeout=60)
    assert response.status_code == 400, response.text
    assert chat(url, max_tokens=2).status_code == 200


def test_a_legacy_completion_counts_every_prompt_and_choice(url: str) -> None:
    body = {"model": MODEL_ID, "prompt": ["a", "b", "c", "d"], "n": 4, "max_tokens": 300}  # 16 x 300 > 4096
    error = assert_error(httpx.post(f"{url}/v1/completions", json=body, timeout=60), 400, param="max_tokens")
    assert error["code"] == "request_too_large" and "16 x 300 = 4800" in error["message"]


@pytest.mark.parametrize("temperature", [1e-40, 1e-320, 5e-324])
def test_subnormal_temperatures_decode_greedily(url: str, temperature: float) -> None:
    greedy = chat(url, max_tokens=8, temperature=0).json()["choices"][0]["message"]["content"]
    r = chat(url, max_tokens=8, temperature=temperature)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == greedy


def test_a_fan_out_without_max_tokens_gets_a_budget_that_fits(url: str) -> None:
    r = chat(url, n=8, temperature=1, seed=3, logprobs=True, top_logprobs=20)
    assert r.status_code == 200, r.text
    share = LOGPROBS // (8 * 21)  # the smaller of the two bounds' shares
    body = r.json()
    assert all(len(c["logprobs"]["content"]) <= share for c in body["choices"])
    assert body["usage"]["completion_tokens"] <= 8 * share
    assert any(c["finish_reason"] == "length" for c in body["choices"])  # the tiny model rarely stops itself


class FailsLater(Constraint):
    """A real matcher (its masks are filled as any other) that the library "gives up on" after
    ``after`` tokens. No schema measured fails late: llguidance's explosions show within a new
    grammar's first two steps, where the dry run catches them; this is the path if one ever does."""

    def __init__(self, inner: Constraint, after: int) -> None:
        super().__init__(inner.matcher, inner.param)
        self.after, self.consumed = after, 0

    def consume(self, token: int) -> bool:
        self.consumed += 1
        return super().consume(token)

    @property
    def error(self) -> str | None:
        return "Parser Error: simulated late failure" if self.consumed >= self.after else super().error


@pytest.fixture
def failing_later(monkeypatch: pytest.MonkeyPatch) -> None:
    [backend] = [b for b in RecordingBackend.instances if b.engine is not None]
    grammars = backend.grammars
    real = grammars.constraint

    def constraint(request: Any) -> Constraint | None:
        inner = real(request)
        return None if inner is None else FailsLater(inner, after=5)

    monkeypatch.setattr(grammars, "constraint", constraint)


#: Output that takes more than the 5 tokens after which :class:`FailsLater` fails.
LONG_ANSWER = json_schema(
    {"type": "object", "properties": {"text": {"type": "string", "minLength": 40}}, "required": ["text"]}
)


def test_a_grammar_that_fails_mid_generation_ends_with_a_clear_400(url: str, failing_later: None) -> None:
    error = assert_error(chat(url, response_format=LONG_ANSWER, max_tokens=100), 400, param=SCHEMA)
    assert error["code"] == "grammar_failed" and "after 5 generated tokens" in error["message"], error
    assert "simulated late failure" in error["message"]


def test_a_grammar_that_fails_mid_stream_ends_the_stream_with_an_error_event(url: str, failing_later: None) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": LONG_ANSWER,
        "max_tokens": 100,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "grammar_failed", SCHEMA)
    streamed = "".join(c["delta"].get("content") or "" for e in events[:-2] for c in json.loads(e)["choices"])
    assert streamed.startswith('{"text":')  # it had started; the rest of the stream is the error
    assert chat(url, max_tokens=2).status_code == 200


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"enum": list(range(5000))}, None),  # an enum compiles into a lexer: only its bytes count
        (optional_properties(257), "grammar_max_alternatives"),
        ({"anyOf": [{"type": "integer"}] * 257}, "grammar_max_alternatives"),
        (nested(40), "grammar_max_depth"),  # 80 levels of JSON
        ({"description": "x" * 70_000}, "grammar_max_schema_bytes"),
    ],
)
def test_schema_caps(schema: dict[str, Any], limit: str | None) -> None:
    if limit is None:
        check_schema(schema, SchemaLimits(), "p")
        return
    with pytest.raises(InvalidRequest, match=limit) as caught:
        check_schema(schema, SchemaLimits(option="opts"), "p")
    assert caught.value.param == "p" and f"opts.{limit}" in caught.value.message
