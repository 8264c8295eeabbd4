"""The app's own OpenAPI schema (``/openapi.json``), and schemathesis driving a live server from it.

schemathesis generates positive (schema-valid) and negative (schema-breaking) requests for every
operation; every answer must be a non-5xx whose status, content type, headers and body the schema
documents, a schema-valid request is never refused (issue 26: the schema must state the server's
real constraints), and ``Allow`` lists exactly a path's methods. Bounded to a few dozen examples
per operation so that it stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from host.app import create_app
from host.contract.capabilities import Capabilities
from host.contract.spec import Task
from host.protocol.tools import UNKNOWN_TOOL_CHOICE
from host.testing.anthropic import check_error_body, check_message, message_from_stream
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

EXAMPLES = 50
TOOLS_CAPABILITIES = Capabilities(tools=True, output_formats=frozenset({"json_object", "json_schema"}))


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    plugin = FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT),
            fake_spec("fake-embed", Task.EMBEDDING),
            fake_spec("fake-rerank", Task.RERANK),
            # Declares tools and structured outputs (the echo ignores them): Messages requests with
            # tools reach the backend instead of stopping at the capability check.
            fake_spec("fake-chat-tools", Task.CHAT, capabilities=TOOLS_CAPABILITIES),
        ]
    )
    config = make_config({"scheduler": {"max_resident_per_task": 3, "min_residency_s": 0}})
    with serve_in_thread(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as url:
        yield url


def test_schema_documents_the_bodies(live: str) -> None:
    doc = httpx.get(f"{live}/openapi.json").json()
    ops = {path: item for path, item in doc["paths"].items()}
    for path, struct in [
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/embeddings", "EmbeddingsRequest"),
        ("/v1/rerank", "RerankBody"),
        ("/v1/responses", "ResponsesRequest"),
    ]:
        post = ops[path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["title"] == struct
        assert {"200", "400", "401", "404", "503"} <= set(post["responses"])
    chat = ops["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"model", "messages", "max_tokens", "n", "stream", "stream_options"} <= set(chat)
    assert httpx.get(f"{live}/docs").status_code == 200


OPERATIONS = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v2/embed"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/rerank"),
    ("POST", "/rerank"),
    ("POST", "/v2/rerank"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("POST", "/v1/models/{model_id}"),
    ("GET", "/health"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/{response_id}"),
    ("DELETE", "/v1/responses/{response_id}"),
    ("GET", "/ui/api/overview"),
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(live: str, mode: GenerationMode) -> None:
    # Driven by hand rather than with schemathesis' pytest plugin, whose lazy fixtures break on pytest 9.
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted((op.method.upper(), op.path) for op in operations) == sorted(OPERATIONS)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
        accepts_valid_data,
        allow_header_conformance,
        unsupported_method,
    ]
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not len(operation.body):
            continue  # no body; path parameters are free-form strings: nothing schema-breaking to send

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(base_url=live, checks=checks)

        run()


#: Operations whose request schema does not yet state all their body's rules: the Responses and the
#: Messages APIs (issue 21) check several in ``to_domain`` (an item's fields by its type, ``input``
#: itself, a tool choice's fields).
LOOSE_SCHEMAS = {"/v1/responses", "/v1/messages", "/v1/messages/count_tokens"}


def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' ``positive_data_acceptance``, except for the one rule of the chat body that JSON
    schema cannot state (a named ``tool_choice`` must name one of ``tools``: a value naming a value),
    which the schema's description states and the server answers with its own error code, and for
    :data:`LOOSE_SCHEMAS`."""
    if case.path in LOOSE_SCHEMAS:
        return None
    known = response.status_code == 400 and case.path == "/v1/chat/completions"
    if known and response.json()["error"]["code"] == UNKNOWN_TOOL_CHOICE:
        return None
    return positive_data_acceptance(ctx, response, case)


def _body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


CHAT_BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
#: Issue 26: bodies the server refuses; its schema must say they are invalid (it did not).
REFUSED = [
    ("/v1/embeddings", {"model": "fake-embed", "input": "", "dimensions": 1}),
    ("/v1/embeddings", {"model": "fake-embed", "input": [3, -1]}),
    ("/v1/embeddings", {"model": "fake-embed", "input": ["a", 3]}),
    ("/v1/rerank", {"model": "fake-rerank", "query": "", "documents": ["a"]}),
    ("/v1/rerank", {"model": "fake-rerank", "query": " \n", "documents": ["a"]}),
    ("/v1/rerank", {"model": "fake-rerank", "query": "q", "documents": []}),
    ("/v1/rerank", {"model": "fake-rerank", "query": "q", "documents": ["a"], "top_n": 0}),
    ("/v1/chat/completions", {**CHAT_BODY, "repetition_penalty": 0}),
    ("/v1/chat/completions", {**CHAT_BODY, "repetition_penalty": 1e-300}),
    ("/v1/chat/completions", {**CHAT_BODY, "top_logprobs": 2}),
    ("/v1/chat/completions", {**CHAT_BODY, "tool_choice": "required"}),
    ("/v1/chat/completions", {**CHAT_BODY, "stop": [""]}),
    ("/v1/chat/completions", {**CHAT_BODY, "messages": [{"role": "tool", "content": "x"}]}),
    ("/v1/chat/completions", {**CHAT_BODY, "messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
    ("/v1/completions", {"model": "fake-chat", "prompt": "x", "suffix": "y"}),
    ("/v1/completions", {"model": "fake-chat", "prompt": "x", "echo": True, "logprobs": 1}),
    ("/v1/completions", {"model": "fake-chat", "prompt": ["x", ""]}),
]
#: ... and bodies it takes, which its schema must allow.
ACCEPTED = [
    ("/v1/chat/completions", {**CHAT_BODY, "top_p": 0, "temperature": 5e-324, "n": 2.0}),
    ("/v1/chat/completions", {**CHAT_BODY, "messages": [{"role": "assistant"}, {"role": "user", "content": "x"}]}),
    ("/v1/rerank", {"model": "fake-rerank", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1.0}),
    ("/v1/embeddings", {"model": "fake-embed", "input": [[1, 2], [3]]}),
    ("/v1/completions", {"model": "fake-chat", "prompt": ["x"], "suffix": ""}),
]


@pytest.mark.parametrize(("path", "body"), REFUSED + ACCEPTED)
def test_the_schema_and_the_server_agree(live: str, path: str, body: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(_body_schema(httpx.get(f"{live}/openapi.json").json(), path))
    response = httpx.post(f"{live}{path}", json=body, timeout=30)
    if (path, body) in REFUSED:
        assert response.status_code == 400, response.text
        assert not validator.is_valid(body)
    else:
        assert response.status_code == 200, response.text
        assert validator.is_valid(body), list(validator.iter_errors(body))


def test_allow_lists_every_method_of_a_path(live: str) -> None:
    # Issue 26: OPTIONS on a model answered "Allow: OPTIONS, POST" while the schema documents GET too.
    for path in ("/v1/models/fake-chat", "/v1/models/fake-chat/load"):
        response = httpx.options(f"{live}{path}")
        assert response.status_code == 204 and response.headers["allow"] == "GET, OPTIONS, POST"
    allowed = httpx.delete(f"{live}/v1/models/fake-chat").headers["allow"]
    assert sorted(allowed.split(", ")) == ["GET", "OPTIONS", "POST"]


def test_the_responses_routes_answer_inside_their_schema(live: str) -> None:
    """Generated bodies rarely name a real model: the answers of valid requests are checked here."""
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    create = schema["/v1/responses"]["POST"]
    body = {"model": "fake-chat", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    for extra in ({}, {"max_output_tokens": 1, "instructions": "x", "metadata": {"k": "v"}}, {"store": False}):
        response = create.Case(body={**body, **extra}, media_type="application/json").call_and_validate(
            base_url=live, checks=checks
        )
        assert response.status_code == 200
    stored = response_id = httpx.post(f"{live}/v1/responses", json=body).json()["id"]
    for method in ("GET", "DELETE", "GET"):  # found, deleted, then gone (404)
        case = schema["/v1/responses/{response_id}"][method].Case(path_parameters={"response_id": stored})
        case.call_and_validate(base_url=live, checks=checks)
    assert httpx.get(f"{live}/v1/responses/{response_id}").status_code == 404


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_messages_on_served_models_answer_valid_anthropic_bodies(live: str, mode: GenerationMode) -> None:
    """The Messages routes with ``model`` set to a served chat model, so that generated bodies get
    past the model lookup: no 5xx, every error in Anthropic's envelope, every 200 a valid message
    or a valid event stream (plain and streamed bodies share one 200, which the schema leaves open)."""
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    paths = {"/v1/messages", "/v1/messages/count_tokens"}
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path in paths]
    assert len(operations) == 2

    def served(pair: tuple[Any, str]) -> Any:
        case, model = pair
        if isinstance(case.body, dict):
            case.body["model"] = model
        return case

    models = st.sampled_from(["fake-chat", "fake-chat-tools"])
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=st.tuples(operation.as_strategy(generation_mode=mode), models).map(served))
        def run(case: Any) -> None:
            response = case.call(base_url=live)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
            if response.status_code != 200:
                check_error_body(response.json())
            elif case.operation.path.endswith("count_tokens"):
                assert response.json()["input_tokens"] >= 0
            elif response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
                assert "error" not in message_from_stream(response.text)
            else:
                check_message(response.json())

        run()
