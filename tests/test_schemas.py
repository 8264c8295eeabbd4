"""Closed objects in constraining schemas (``host.serving.schemas``): the rewrite itself, and what a
backend receives under ``server.json_schema_objects`` closed (the default) and open."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from pydantic import BaseModel

from host.app import create_app
from host.contract.capabilities import Capabilities
from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, Tool
from host.contract.spec import Task
from host.serving.schemas import close_objects, with_closed_schemas
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import CHAT
from host.testing.pytest_plugin import CPU_ONLY, make_config


class Address(BaseModel):
    city: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    addresses: list[Address]
    extra: dict[str, int]  # a free-form map: no properties, stays open


def test_close_objects_closes_what_lists_properties_and_says_nothing() -> None:
    schema = (
        Person.model_json_schema()
    )  # what instructor's JSON_SCHEMA mode sends: $defs, $ref, no additionalProperties
    out = close_objects(schema)
    assert out["additionalProperties"] is False
    assert out["$defs"]["Address"]["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]["addresses"]  # an array, not an object
    assert out["properties"]["extra"]["additionalProperties"] == {"type": "integer"}  # said: kept
    assert "additionalProperties" not in schema and "additionalProperties" not in schema["$defs"]["Address"]
    odd = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"x": {"const": {"properties": {}}}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
        },
        "anyOf": [{"properties": {"a": {}}}, {"type": "string"}],
    }
    closed = close_objects(odd)
    assert closed["properties"]["properties"]["additionalProperties"] is False  # a property named "properties"
    assert closed["properties"]["properties"]["properties"]["x"] == {"const": {"properties": {}}}  # data untouched
    assert closed["properties"]["open"]["additionalProperties"] is True
    assert closed["anyOf"][0]["additionalProperties"] is False and closed["anyOf"][1] == {"type": "string"}


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def request(strict: bool) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=(ChatMessage("user", "hi"),),
        output=OutputFormat(kind="json_schema", schema=SCHEMA, strict=strict),
        tools=(Tool(name="f", parameters=SCHEMA, strict=strict), Tool(name="g")),
    )


@pytest.mark.parametrize(
    ("strict", "open_objects", "closed"),
    [(False, False, True), (True, False, True), (True, True, True), (False, True, False)],
)
def test_strict_schemas_are_always_closed_the_others_unless_objects_are_open(
    strict: bool, open_objects: bool, closed: bool
) -> None:
    out = with_closed_schemas(request(strict), open_objects)
    assert out.output.schema is not None and out.tools[0].parameters is not None
    assert ("additionalProperties" in out.output.schema) == closed
    # Tools: closed when strict; otherwise as sent (their schema is shown to the model in the prompt).
    assert ("additionalProperties" in out.tools[0].parameters) == strict
    assert out.tools[1].parameters is None
    if not closed and not strict:
        assert out == request(strict)


def fake_with_formats() -> FakePlugin:
    caps = Capabilities(tools=True, output_formats=frozenset({"json_object", "json_schema"}))
    return FakePlugin([fake_spec("fake-chat", Task.CHAT, capabilities=caps)])


@pytest.mark.parametrize(("objects", "closed"), [(None, True), ("closed", True), ("open", False)])
def test_what_the_backend_receives(objects: str | None, closed: bool) -> None:
    plugin = fake_with_formats()
    config = make_config({"server": {"json_schema_objects": objects}} if objects else {})
    tool = {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}
    strict_tool = {"type": "function", "function": {"name": "s", "parameters": SCHEMA, "strict": True}}
    with TestClient(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as client:
        for fmt in (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},  # instructor's JSON_SCHEMA mode
            {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}},  # Haystack
        ):
            body: dict[str, Any] = {"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]}
            r = client.post(CHAT, json={**body, "response_format": fmt})
            assert r.status_code == 200, r.text
        r = client.post(CHAT, json={**body, "tools": [tool, strict_tool]})
        assert r.status_code == 200, r.text
    seen = plugin.calls.of("generate")
    assert ("additionalProperties" in seen[0].output.schema) == closed
    assert seen[1].output.schema["additionalProperties"] is False and seen[1].output.strict
    assert "additionalProperties" not in seen[2].tools[0].parameters
    assert seen[2].tools[1].parameters["additionalProperties"] is False
    assert "additionalProperties" not in SCHEMA
