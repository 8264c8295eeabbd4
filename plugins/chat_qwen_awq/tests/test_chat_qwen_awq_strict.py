"""Closed objects under constrained decoding, with the tiny random-weight model: the requests of
instructor's JSON_SCHEMA mode (a Pydantic schema, no ``strict``, no ``additionalProperties``) and of
Haystack (``strict: true``, a hand-written schema without ``additionalProperties``) get exactly the
declared keys, whatever the sampler draws; ``server.json_schema_objects: open`` lets a non-strict
schema's objects take other keys again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from chat_qwen_awq.testing import MODEL_ID, tiny_config
from host.app import create_app
from host.contract.domain import ChatMessage, ChatRequest, OutputFormat
from host.serving.schemas import close_objects, with_closed_schemas
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread

ASK: list[Any] = [{"role": "user", "content": "Describe a person as JSON."}]


class Pet(BaseModel):
    kind: str = Field(max_length=8)
    age: int = Field(ge=0, le=30)


class Owner(BaseModel):
    name: str = Field(max_length=10)
    pets: list[Pet] = Field(max_length=2)


#: Haystack's OpenAIChatGenerator with a JSON-schema dict (its Pydantic path goes through the SDK's
#: own strict conversion): strict, and objects that say nothing about other keys.
HAYSTACK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "meta": {"type": "object", "properties": {"year": {"type": "integer", "minimum": 1900, "maximum": 2100}}},
    },
    "required": ["title", "meta"],
}


@pytest.fixture(scope="module")
def client() -> Iterator[OpenAI]:
    import chat_qwen_awq

    app = create_app(tiny_config(), plugins=[chat_qwen_awq], budgets=CPU_ONLY)
    with serve_in_thread(app) as url, OpenAI(base_url=f"{url}/v1", api_key="dummy", max_retries=0, timeout=120) as c:
        yield c


def keys_are_declared(value: Any, schema: dict[str, Any]) -> None:
    """jsonschema against the closed schema: any undeclared key anywhere fails."""
    jsonschema.validate(value, close_objects(schema))


@pytest.mark.parametrize(
    ("name", "schema", "strict"),
    [("instructor", Owner.model_json_schema(), None), ("haystack", HAYSTACK, True)],
)
def test_sampled_answers_carry_only_the_declared_keys(
    client: OpenAI, name: str, schema: dict[str, Any], strict: bool | None
) -> None:
    json_schema: dict[str, Any] = {"name": name, "schema": schema}
    if strict is not None:
        json_schema["strict"] = strict
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        response_format={"type": "json_schema", "json_schema": json_schema},  # type: ignore[typeddict-item]
        n=8,
        temperature=1.0,
        seed=11,
        max_tokens=200,
    )
    for choice in r.choices:
        assert choice.finish_reason == "stop", choice.message.content  # closed objects end: no run to max_tokens
        keys_are_declared(json.loads(choice.message.content or ""), schema)
    if name == "instructor":  # what instructor does with the answer
        for choice in r.choices:
            Owner.model_validate_json(choice.message.content or "")


def grammar_allows(grammars: Any, request: ChatRequest, text: str, tokenizer: Any) -> bool:
    constraint = grammars.constraint(request)
    return all(constraint.consume(t) for t in tokenizer.encode(text, add_special_tokens=False))


def test_open_objects_let_a_non_strict_schema_take_other_keys(awq_folder: Path) -> None:
    from transformers import AutoTokenizer

    from chat_qwen_awq.grammar import Grammars

    tokenizer = AutoTokenizer.from_pretrained(str(awq_folder))
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    extra = '{"a":1,"b":2}'
    for strict, open_objects, allowed in [(False, False, False), (True, True, False), (False, True, True)]:
        request = ChatRequest(
            model="m",
            messages=(ChatMessage("user", "x"),),
            output=OutputFormat(kind="json_schema", schema=schema, strict=strict),
        )
        served = with_closed_schemas(request, open_objects)
        assert grammar_allows(grammars, served, extra, tokenizer) == allowed, (strict, open_objects)
        assert grammar_allows(grammars, served, '{"a":1}', tokenizer)
