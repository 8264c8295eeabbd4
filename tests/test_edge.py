"""The HTTP edge against hostile and cross-site clients (issue 12, findings 3, 5 and 7), API keys,
and request ids. Everything runs through the real app on Litestar's TestClient; the OpenAI SDK
test runs against a real uvicorn server on loopback."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from host.app import create_app
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import BackendError, InvalidRequest, decode_body
from host.contract.spec import Grant, Task
from host.protocol.chat import ChatCompletionRequest
from host.protocol.completions import CompletionRequest
from host.protocol.embeddings import EmbeddingsRequest
from host.protocol.rerank import RerankBody
from host.server.security import EdgePolicy
from host.testing.fakes import FakeChatBackend, FakeEmbeddingBackend, FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

CHAT, EMBED, RERANK = "/v1/chat/completions", "/v1/embeddings", "/v1/rerank"
COMPLETIONS = "/v1/completions"
VALID: dict[str, dict[str, Any]] = {
    CHAT: {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    EMBED: {"model": "fake-embed", "input": "hello"},
    RERANK: {"model": "fake-rerank", "query": "q", "documents": ["a", "b"]},
    COMPLETIONS: {"model": "fake-chat", "prompt": "hi", "max_tokens": 2},
    "/rerank": {"model": "fake-rerank", "query": "q", "documents": ["a", "b"]},
    "/v2/rerank": {"model": "fake-rerank", "query": "q", "documents": ["a", "b"]},
}
POSTS = list(VALID)
SECRET = "/srv/secret-weights/qwen/model.safetensors"


class BrokenWeights(FakeEmbeddingBackend):
    """A backend whose load fails with a message that names a weights path."""

    def load(self, grant: Grant) -> None:
        raise OSError(f"{SECRET}: file is truncated")


class LeakyChat(FakeChatBackend):
    """A chat backend whose engine fails the way chat_qwen_awq's does: a BackendError naming internals."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        yield ChatDelta(text="partial")
        raise BackendError(f"decode failed: RuntimeError: {SECRET} on cuda:0")


def plugin() -> FakePlugin:
    broken = msgspec.structs.replace(fake_spec("broken", Task.EMBEDDING), backend=f"{__name__}:BrokenWeights")
    leaky = msgspec.structs.replace(fake_spec("leaky", Task.CHAT), backend=f"{__name__}:LeakyChat")
    return FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT),
            fake_spec("fake-embed", Task.EMBEDDING),
            fake_spec("fake-rerank", Task.RERANK),
            broken,
            leaky,
        ]
    )


def make_client(server: dict[str, Any] | None = None) -> TestClient:
    config = make_config({"server": {"allowed_hosts": ["testserver.local"], **(server or {})}})
    return TestClient(create_app(config, plugins=[plugin()], budgets=CPU_ONLY))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error


# -- finding 3: hostile bodies are 400s -------------------------------------------------------------


@pytest.mark.parametrize("path", POSTS)
def test_invalid_utf8_in_a_string_is_400(client: TestClient, path: str) -> None:
    raw = json.dumps(VALID[path]).replace('"model": "fake-', '"model": "\\u0000-').encode()
    raw = raw.replace(b"\\u0000", b"\xff\xfe")  # a string the client claims is UTF-8 and is not
    error = error_of(client.post(path, content=raw, headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json" and "UTF-8" in error["message"]


@pytest.mark.parametrize("path", POSTS)
def test_deep_nesting_in_an_unknown_field_is_400(client: TestClient, path: str) -> None:
    raw = json.dumps(VALID[path])[:-1].encode() + b', "junk": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    error = error_of(client.post(path, content=raw, headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json"


def test_deep_nesting_beyond_the_recursion_limit_is_400(client: TestClient) -> None:
    raw = b'{"model": "fake-embed", "input": "x", "junk": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error_of(client.post(EMBED, content=raw, headers={"content-type": "application/json"}), 400, "invalid_json")


WIRE_TYPES = [ChatCompletionRequest, EmbeddingsRequest, RerankBody]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, database=None)
@given(raw=st.binary(max_size=200))
def test_decoder_fuzz_bytes_never_raises_anything_but_invalid_request(raw: bytes) -> None:
    for type_ in WIRE_TYPES:
        with contextlib.suppress(InvalidRequest):
            decode_body(raw, type_)


@settings(max_examples=300, deadline=None, database=None)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "model": json_values,
            "messages": json_values,
            "input": json_values,
            "query": json_values,
            "documents": json_values,
            "stream": json_values,
            "n": json_values,
            "top_n": json_values,
        },
    )
)
def test_decoder_fuzz_json_never_raises_anything_but_invalid_request(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    for type_ in WIRE_TYPES:
        with contextlib.suppress(InvalidRequest):
            decode_body(raw, type_)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(POSTS), body=json_values, raw=st.binary(max_size=64))
def test_routes_fuzz_never_answer_5xx(client: TestClient, path: str, body: Any, raw: bytes) -> None:
    for content in (json.dumps(body).encode(), raw):
        r = client.post(path, content=content, headers={"content-type": "application/json"})
        assert r.status_code < 500, r.text


# -- finding 5: web pages, content types, DNS rebinding ---------------------------------------------


def test_text_plain_from_a_web_page_is_refused(client: TestClient) -> None:
    body = json.dumps(VALID[CHAT])
    page = {"content-type": "text/plain", "origin": "http://evil.example"}
    error_of(client.post(CHAT, content=body, headers=page), 403, "forbidden")
    error_of(client.post("/v1/models/fake-chat/unload", headers={"origin": "http://evil.example"}), 403, "forbidden")


def test_text_plain_and_multipart_are_never_json(client: TestClient) -> None:
    body = json.dumps(VALID[EMBED])
    for media in ("text/plain", "multipart/form-data; boundary=x"):
        error = error_of(client.post(EMBED, content=body, headers={"content-type": media}), 415)
        assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]


def test_curl_dash_d_without_origin_still_works(client: TestClient) -> None:
    # curl -d sends application/x-www-form-urlencoded; no browser can send that without Origin.
    body = json.dumps(VALID[EMBED])
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post(EMBED, content=body, headers=form).status_code == 200
    assert client.post(EMBED, content=body, headers={"content-type": ""}).status_code == 200
    same_site = {**form, "origin": "http://testserver.local"}
    error_of(client.post(EMBED, content=body, headers=same_site), 415, "unsupported_media_type")


def test_same_origin_pages_are_allowed(client: TestClient) -> None:
    r = client.post(EMBED, json=VALID[EMBED], headers={"origin": "http://testserver.local"})
    assert r.status_code == 200


def test_rebinding_host_names_are_refused_on_a_loopback_bind() -> None:
    config = make_config({"server": {"allowed_hosts": None}})  # the default: loopback names only
    with TestClient(create_app(config, plugins=[plugin()], budgets=CPU_ONLY), base_url="http://127.0.0.1:15530") as c:
        assert c.get("/v1/models").status_code == 200
        for host in ("localhost", "localhost:15530", "127.0.0.1:8000", "[::1]:15530", "[::1]"):
            assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:15530", "127.0.0.1.evil.example", ""):
            error = error_of(c.get("/v1/models", headers={"host": host}), 403, "forbidden")
            assert error["param"] == "Host"
        error_of(c.post(EMBED, json=VALID[EMBED], headers={"host": "attacker.test"}), 403, "forbidden")


def test_host_policy_follows_the_bind_and_allowed_hosts() -> None:
    def policy(**server: Any) -> EdgePolicy:
        return EdgePolicy.from_config(make_config({"server": {"allowed_hosts": None, **server}}).server, environ={})

    assert policy().allowed_hosts is not None and "localhost" in (policy().allowed_hosts or ())
    assert policy(host="0.0.0.0").allowed_hosts is None  # a public bind answers any name unless configured
    assert policy(host="0.0.0.0", allowed_hosts=["api.example"]).check("GET", "/", {"host": "evil.example"})
    assert policy(host="0.0.0.0", allowed_hosts=["api.example"]).check("GET", "/", {"host": "API.example:443"}) is None
    assert policy(allowed_hosts=["*"]).check("GET", "/", {"host": "anything"}) is None


def test_cors_origins_get_cors_headers_and_others_are_refused() -> None:
    with make_client({"cors_origins": ["https://app.example"]}) as c:
        preflight = c.options(
            EMBED,
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post(EMBED, json=VALID[EMBED], headers={"origin": "https://app.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        error_of(c.post(EMBED, json=VALID[EMBED], headers={"origin": "https://other.example"}), 403, "forbidden")
        error_of(c.options(EMBED, headers={"origin": "https://other.example"}), 403, "forbidden")


def test_no_cors_headers_by_default(client: TestClient) -> None:
    r = client.post(EMBED, json=VALID[EMBED])
    assert "access-control-allow-origin" not in r.headers


# -- API keys ---------------------------------------------------------------------------------------


def test_api_keys_guard_every_api_route_but_health() -> None:
    with make_client({"api_keys": ["k-one", "k-two"]}) as c:
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/models/fake-chat"), ("GET", "/metrics")]:
            error = error_of(c.request(method, path), 401, "invalid_api_key")
            assert error["type"] == "authentication_error"
        for path in POSTS:
            error_of(c.post(path, json=VALID[path]), 401, "invalid_api_key")
            error_of(c.post(path, json=VALID[path], headers={"authorization": "Bearer nope"}), 401)
            error_of(c.post(path, json=VALID[path], headers={"authorization": "k-one"}), 401)  # scheme required
            assert c.post(path, json=VALID[path], headers={"authorization": "Bearer k-two"}).status_code == 200
        assert c.post("/v1/models/fake-chat/unload").status_code == 401
        assert c.get("/health").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/v1/models", headers={"authorization": "bearer k-one"}).status_code == 200
        assert c.get("/v1/models").headers["www-authenticate"] == "Bearer"


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGHOST_API_KEY", "from-env")
    with make_client() as c:
        error_of(c.get("/v1/models"), 401, "invalid_api_key")
        assert c.get("/v1/models", headers={"authorization": "Bearer from-env"}).status_code == 200


def test_openai_sdk_with_and_without_a_key() -> None:
    config = make_config({"server": {"api_keys": ["sk-plughost-test"]}})
    with serve_in_thread(create_app(config, plugins=[plugin()], budgets=CPU_ONLY)) as url:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-plughost-test", max_retries=0)
        assert good.embeddings.create(model="fake-embed", input="hi").data[0].embedding
        chat = good.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.embeddings.create(model="fake-embed", input="hi")
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


# -- request ids ------------------------------------------------------------------------------------


def test_request_id_is_echoed_or_generated_on_every_response(client: TestClient) -> None:
    mine = {"x-request-id": "trace-42.abc"}
    assert client.get("/health", headers=mine).headers["x-request-id"] == "trace-42.abc"
    assert client.post(EMBED, json=VALID[EMBED], headers=mine).headers["x-request-id"] == "trace-42.abc"
    assert client.get("/no/such/route", headers=mine).headers["x-request-id"] == "trace-42.abc"
    assert client.post(EMBED, json={}, headers=mine).headers["x-request-id"] == "trace-42.abc"
    stream = client.post(CHAT, json={**VALID[CHAT], "stream": True}, headers=mine)
    assert stream.status_code == 200 and stream.headers["x-request-id"] == "trace-42.abc"
    generated = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    for hostile in ("a b", "x" * 300, "evil\u00e9".encode("latin-1"), "<script>"):
        rid = client.get("/health", headers={"x-request-id": hostile}).headers["x-request-id"]
        assert rid != hostile and rid.isalnum()


def test_request_id_is_in_every_log_line_of_the_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        client.post(EMBED, json={**VALID[EMBED], "model": "broken"}, headers={"x-request-id": "req-logged-1"})
    lines = [r for r in caplog.records if r.name.startswith("plughost")]
    assert lines and all(getattr(r, "request_id", None) == "req-logged-1" for r in lines)
    assert all("[req-logged-1]" in r.getMessage() for r in lines)


# -- finding 7: no paths or exception classes for clients -------------------------------------------


def test_load_errors_name_no_path_and_no_exception(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        r = client.post(EMBED, json={**VALID[EMBED], "model": "broken"})
    error = error_of(r, 503, "model_load_failed")
    assert SECRET not in r.text and "OSError" not in r.text and "broken" in error["message"]
    assert SECRET in caplog.text  # the operator still sees it
    models = client.get("/v1/models").text
    assert SECRET not in models and "OSError" not in models and "secret" not in models


# -- finding 8: explicit null for every optional field ----------------------------------------------

WIRE_BY_ROUTE = {
    CHAT: ChatCompletionRequest,
    EMBED: EmbeddingsRequest,
    RERANK: RerankBody,
    COMPLETIONS: CompletionRequest,
}


def optional_fields(struct: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(struct) if not f.required]


@pytest.mark.parametrize(
    ("path", "field"), [(path, field) for path, struct in WIRE_BY_ROUTE.items() for field in optional_fields(struct)]
)
def test_explicit_null_is_accepted_for_every_optional_field(client: TestClient, path: str, field: str) -> None:
    r = client.post(path, json={**VALID[path], field: None})
    assert r.status_code == 200, r.text


def test_nulls_mean_the_defaults(client: TestClient) -> None:
    nulls = {"n": None, "stream": None, "stream_options": {"include_usage": None}, "temperature": None}
    r = client.post(CHAT, json={**VALID[CHAT], **nulls})
    assert r.status_code == 200 and len(r.json()["choices"]) == 1  # n: 1, not streamed
    r = client.post(EMBED, json={**VALID[EMBED], "encoding_format": None})
    assert isinstance(r.json()["data"][0]["embedding"], list)  # float, the default
    r = client.post(RERANK, json={**VALID[RERANK], "return_documents": None, "top_n": None})
    assert all("document" in item for item in r.json()["results"])


def test_backend_errors_reach_clients_without_internals(client: TestClient) -> None:
    body = {"model": "leaky", "messages": [{"role": "user", "content": "hi"}]}
    plain = client.post(CHAT, json=body, headers={"x-request-id": "leak-1"})
    error = error_of(plain, 500, "backend_error")
    assert SECRET not in plain.text and "RuntimeError" not in plain.text and "leak-1" in error["message"]
    stream = client.post(CHAT, json={**body, "stream": True}, headers={"x-request-id": "leak-2"})
    assert stream.status_code == 200 and SECRET not in stream.text and "RuntimeError" not in stream.text
    assert "leak-2" in stream.text and stream.text.rstrip().endswith("data: [DONE]")
