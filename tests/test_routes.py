"""Every route against the fake backends: success shapes, validation, and the error envelope.

Every error body must be OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with a
string ``code``; a client mistake is a 400 that names the field in ``param``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Iterator
from types import EllipsisType
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.domain import ChatDelta, ChatRequest
from host.errors import InvalidRequest
from host.spec import ModelSpec, Task
from host.testing.fakes import FakeBackend, FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config

CHAT, EMBED, RERANK = "/v1/chat/completions", "/v1/embeddings", "/v1/rerank"
MAX_BODY = 4096
MAX_INPUTS = 4
MAX_DOCS = 5
USER = [{"role": "user", "content": "hi there"}]


class MidStreamFailure(FakeBackend):
    """Streams two words, then fails: with InvalidRequest (``fail: "invalid"``) or a bug (``"crash"``)."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        self.calls.add("generate", self.spec.id, request)
        yield ChatDelta(text="partial")
        yield ChatDelta(text=" answer")
        if self.options["fail"] == "invalid":
            raise InvalidRequest("The conversation grew past the context window.", param="messages")
        raise RuntimeError("CUDA error: device-side assert triggered")


def failing_spec(model_id: str, fail: str) -> ModelSpec:
    """A fake chat model served by :class:`MidStreamFailure` (this module is imported already)."""
    return msgspec.structs.replace(fake_spec(model_id, Task.CHAT, fail=fail), backend=f"{__name__}:MidStreamFailure")


@pytest.fixture
def plugin() -> FakePlugin:
    return FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT, aliases=("fake-chat-alias",)),
            fake_spec("fake-embed", Task.EMBEDDING),
            fake_spec("fake-rerank", Task.RERANK),
            failing_spec("bad-stream", "invalid"),
            failing_spec("crash-stream", "crash"),
        ]
    )


@pytest.fixture
def client(plugin: FakePlugin) -> Iterator[TestClient]:
    config = make_config(
        {
            "server": {
                "max_body_bytes": MAX_BODY,
                "max_embedding_inputs": MAX_INPUTS,
                "max_rerank_documents": MAX_DOCS,
            },
            "scheduler": {"max_resident_per_task": 4, "min_residency_s": 0},
            "models": {"fake-embed": {"aliases": ["text-embedding-3-small"]}},
        }
    )
    with TestClient(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as c:
        yield c


def assert_error(
    response: httpx.Response, status: int, *, code: str | None = None, param: str | EllipsisType | None = ...
) -> dict[str, Any]:
    """Check the OpenAI error envelope; returns the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code
    if param is not ...:
        assert error["param"] == param
    return error


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "fake-chat", "messages": USER, **body})


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]


VALID = {
    CHAT: {"model": "fake-chat", "messages": USER},
    EMBED: {"model": "fake-embed", "input": "hello"},
    RERANK: {"model": "fake-rerank", "query": "q", "documents": ["d"]},
}


# -- shared behaviour of the POST routes ---------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK, "/rerank", "/v2/rerank"])
def test_post_answers_200_not_201(client: TestClient, path: str) -> None:
    r = client.post(path, json=VALID.get(path, VALID[RERANK]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "fake-chat",', b"\xff\xfe"])
def test_malformed_json_is_400(client: TestClient, path: str, raw: bytes) -> None:
    error = assert_error(
        client.post(path, content=raw, headers={"content-type": "application/json"}), 400, code="invalid_json"
    )
    assert "JSON" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
@pytest.mark.parametrize("raw", [b"", b"   ", b"[]", b'"text"', b"null"])
def test_empty_or_non_object_body_is_400(client: TestClient, path: str, raw: bytes) -> None:
    assert_error(client.post(path, content=raw, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_missing_model_names_the_field(client: TestClient, path: str) -> None:
    body = {k: v for k, v in VALID[path].items() if k != "model"}
    error = assert_error(client.post(path, json=body), 400, param="model")
    assert "model" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_unknown_model_is_404(client: TestClient, path: str) -> None:
    error = assert_error(
        client.post(path, json={**VALID[path], "model": "gpt-5"}), 404, code="model_not_found", param="model"
    )
    assert "gpt-5" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "model"), [(CHAT, "fake-embed"), (EMBED, "fake-rerank"), (RERANK, "fake-chat"), (EMBED, "fake-chat-alias")]
)
def test_model_of_the_wrong_task_is_400(client: TestClient, path: str, model: str) -> None:
    error = assert_error(
        client.post(path, json={**VALID[path], "model": model}), 400, code="model_task_mismatch", param="model"
    )
    assert "not" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_body_over_the_limit_is_413(client: TestClient, path: str, plugin: FakePlugin) -> None:
    body = {**VALID[path], "user": "x" * (MAX_BODY + 1)}
    error = assert_error(client.post(path, json=body), 413, code="payload_too_large")
    assert "max_body_bytes" in error["message"]
    assert plugin.calls.count("load") == 0  # rejected before any model was touched


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    """Without a Content-Length the limit still holds (the body is counted while it is read)."""
    body = json.dumps({**VALID[CHAT], "user": "x" * (2 * MAX_BODY)}).encode()
    chunks = (body[i : i + 512] for i in range(0, len(body), 512))
    r = client.post(CHAT, content=chunks, headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, code="payload_too_large")


def test_body_just_under_the_limit_is_accepted(client: TestClient) -> None:
    body = {**VALID[EMBED], "user": ""}
    body["user"] = "x" * (MAX_BODY - len(json.dumps(body)) - 10)
    assert client.post(EMBED, json=body).status_code == 200


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        (CHAT, {"metadata": {"trace": 1}, "parallel_tool_calls": False, "store": False}),
        (CHAT, {"messages": [{"role": "user", "content": "hi", "refusal": None, "x-custom": [1]}]}),
        (CHAT, {"stream_options": {"include_usage": False, "continuous_usage_stats": True}}),
        (EMBED, {"truncate_prompt_tokens": 12, "extra_body": {}}),
        (RERANK, {"rank_fields": ["text"], "max_tokens_per_doc": 512}),
    ],
)
def test_unknown_fields_are_tolerated(client: TestClient, path: str, extra: dict[str, Any]) -> None:
    assert client.post(path, json={**VALID[path], **extra}).status_code == 200


def test_unknown_route_is_an_enveloped_404(client: TestClient) -> None:
    assert_error(client.get("/v1/completions-that-do-not-exist"), 404, code="not_found")
    assert_error(client.post("/v1/engines/davinci/completions", json={}), 404, code="not_found")


def test_wrong_method_is_an_enveloped_405(client: TestClient) -> None:
    assert_error(client.get(CHAT), 405, code="method_not_allowed")
    assert_error(client.delete("/v1/models"), 405, code="method_not_allowed")


# -- chat completions -------------------------------------------------------------------------------


def test_chat_completion_shape(client: TestClient) -> None:
    r = chat(client, temperature=0.7, max_tokens=1024, stream=False)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "fake-chat"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hi there"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 3


def test_chat_request_reaches_the_backend_as_a_domain_request(client: TestClient, plugin: FakePlugin) -> None:
    chat(
        client,
        messages=[{"role": "developer", "content": "be brief"}, *USER],
        temperature=0,
        top_p=0.5,
        stop="END",
        seed=7,
        max_completion_tokens=9,
    )
    request: ChatRequest = plugin.calls.of("generate", "fake-chat")[0]
    assert [(m.role, m.content) for m in request.messages] == [("system", "be brief"), ("user", "hi there")]
    s = request.sampling
    assert (s.temperature, s.top_p, s.stop, s.seed, s.max_tokens) == (0.0, 0.5, ("END",), 7, 9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", 1),
        ("messages", "hi"),
        ("temperature", "hot"),
        ("stream", "yes"),
        ("n", "2"),
        ("max_tokens", 1.5),
        ("stop", 5),
        ("seed", "abc"),
        ("stream_options", True),
    ],
)
def test_chat_wrong_types_name_the_field(client: TestClient, field: str, value: Any) -> None:
    error = assert_error(chat(client, **{field: value}), 400, param=field)
    assert field in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", -1),
        ("n", 0),
        ("n", 17),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("repetition_penalty", 0),
        ("top_k", -2),
    ],
)
def test_chat_out_of_range_values_name_the_field(client: TestClient, field: str, value: Any) -> None:
    assert_error(chat(client, **{field: value}), 400, param=field)


def test_chat_empty_messages(client: TestClient) -> None:
    assert_error(chat(client, messages=[]), 400, param="messages")


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "system", "content": "s"}, {"content": "no role"}], "messages[1].role"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "42"}], "messages[1].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
    ],
)
def test_chat_bad_messages_name_the_message(client: TestClient, messages: list[Any], param: str) -> None:
    assert_error(chat(client, messages=messages), 400, param=param)


def test_chat_text_content_parts_are_joined(client: TestClient) -> None:
    parts = [{"type": "text", "text": "alpha "}, {"type": "text", "text": "beta"}]
    r = chat(client, messages=[{"role": "user", "content": parts}])
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: alpha beta"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    ],
)
def test_chat_non_text_content_part_is_400(client: TestClient, part: dict[str, Any]) -> None:
    content = [{"type": "text", "text": "what is this?"}, part]
    error = assert_error(
        chat(client, messages=[{"role": "user", "content": content}]), 400, param="messages[0].content[1].type"
    )
    assert part["type"] in error["message"]


def test_chat_stop_sequences(client: TestClient) -> None:
    r = chat(client, messages=[{"role": "user", "content": "alpha beta gamma"}], stop=["gamma", "a", "b", "c"])
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = chat(client, messages=[{"role": "user", "content": "alpha beta gamma"}], stop="gamma")
    assert r.json()["choices"][0]["message"]["content"] == "echo: alpha beta "
    assert_error(chat(client, stop=["a", "b", "c", "d", "e"]), 400, param="stop")
    assert_error(chat(client, stop=[""]), 400, param="stop")


def test_chat_max_tokens_gives_finish_reason_length(client: TestClient) -> None:
    r = chat(client, messages=[{"role": "user", "content": "one two three four"}], max_tokens=2)
    choice = r.json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("echo: one", "length")


def test_backend_validation_error_is_400(client: TestClient) -> None:
    """The fake rejects prompt + max_tokens beyond its 4096-token context, as a real backend does."""
    error = assert_error(chat(client, max_tokens=4095), 400, param="max_tokens")
    assert "context length" in error["message"]
    error = assert_error(chat(client, max_tokens=4095, stream=True), 400, param="max_tokens")  # before any SSE


@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("tools", [{"type": "function"}]), ("response_format", {"type": "json_object"})],
)
def test_chat_unsupported_features_are_400(client: TestClient, field: str, value: Any) -> None:
    assert_error(chat(client, **{field: value}), 400, param=field)


def test_chat_n_choices(client: TestClient, plugin: FakePlugin) -> None:
    r = chat(client, n=3, seed=10)
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "echo: hi there" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 9
    assert sorted(req.sampling.seed for req in plugin.calls.of("generate")) == [10, 11, 12]


def test_chat_stream_with_n_above_1_is_400(client: TestClient) -> None:
    assert_error(chat(client, n=2, stream=True), 400, param="n")


def test_chat_alias_resolves_to_the_canonical_id(client: TestClient) -> None:
    for name in ("fake-chat-alias", "FAKE-CHAT"):
        r = chat(client, model=name)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "fake-chat"


# -- chat streaming ----------------------------------------------------------------------------------


def test_chat_stream(client: TestClient) -> None:
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "fake-chat" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hi there"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 3


def test_chat_stream_without_usage_has_no_usage_chunk(client: TestClient) -> None:
    chunks = [json.loads(e) for e in sse_events(chat(client, stream=True))[:-1]]
    assert all(c.get("usage") is None and c["choices"] for c in chunks)


def test_chat_stream_releases_its_lease(client: TestClient) -> None:
    chat(client, stream=True)
    status = client.get("/v1/models/fake-chat").json()["status"]
    assert (status["state"], status["in_flight"]) == ("resident", 0)


def test_invalid_request_mid_stream_is_an_sse_error_then_done(client: TestClient) -> None:
    r = chat(client, model="bad-stream", stream=True)
    assert r.status_code == 200  # the headers were sent before the failure
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error == {
        "message": "The conversation grew past the context window.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "invalid_value",
    }
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "partial answer"  # what was generated before the failure was delivered


def test_backend_crash_mid_stream_is_an_sse_error_then_done(client: TestClient) -> None:
    response = chat(client, model="crash-stream", stream=True)
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert (error["type"], error["code"]) == ("server_error", "backend_error")
    # Finding 7: the client gets the request id, never the exception's class or text (the log has them).
    assert "CUDA" not in error["message"] and "RuntimeError" not in error["message"]
    assert response.headers["x-request-id"] in error["message"]
    # The host stays healthy and the model serves the next request.
    assert client.get("/v1/models/crash-stream").json()["status"]["in_flight"] == 0
    assert client.get("/health").json()["status"] == "ok"


def test_backend_crash_in_a_plain_completion_is_an_enveloped_500(client: TestClient) -> None:
    response = chat(client, model="crash-stream")
    error = assert_error(response, 500)
    assert error["type"] == "server_error"
    assert "CUDA" not in error["message"] and "RuntimeError" not in error["message"]
    assert response.headers["x-request-id"] in error["message"]
    assert chat(client).status_code == 200  # the host keeps serving


def test_invalid_request_mid_completion_is_400(client: TestClient) -> None:
    assert_error(chat(client, model="bad-stream"), 400, param="messages")


# -- embeddings ------------------------------------------------------------------------------------------


def embed(client: TestClient, input: Any, **body: Any) -> httpx.Response:
    return client.post(EMBED, json={"model": "fake-embed", "input": input, **body})


def test_embeddings_shape(client: TestClient) -> None:
    body = embed(client, "文本向量化测试").json()
    assert body["object"] == "list"
    assert body["model"] == "fake-embed"
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 8
    assert math.isclose(sum(v * v for v in item["embedding"]), 1.0, rel_tol=1e-6)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("value", "count"),
    [
        ("one text", 1),
        (["a", "b", "c"], 3),
        ([1, 2, 3], 1),
        ([[1, 2], [3], [4, 5, 6]], 3),
    ],
)
def test_embeddings_input_forms(client: TestClient, plugin: FakePlugin, value: Any, count: int) -> None:
    data = embed(client, value).json()["data"]
    assert [d["index"] for d in data] == list(range(count))
    request = plugin.calls.of("embed")[0]
    assert len(request.texts if request.texts is not None else request.token_ids) == count
    if isinstance(value, list) and isinstance(value[0], int):
        assert request.token_ids == (tuple(value),)
    elif isinstance(value, list) and isinstance(value[0], list):
        assert request.token_ids == tuple(tuple(v) for v in value)
    else:
        assert request.texts == ((value,) if isinstance(value, str) else tuple(value))


def test_embeddings_keep_input_order(client: TestClient) -> None:
    single = {t: embed(client, t).json()["data"][0]["embedding"] for t in ("x", "y", "z")}
    batch = embed(client, ["z", "x", "y"]).json()["data"]
    assert [d["embedding"] for d in batch] == [single["z"], single["x"], single["y"]]


def test_embeddings_base64_equals_float(client: TestClient) -> None:
    floats = embed(client, ["a", "b"], encoding_format="float").json()["data"]
    encoded = embed(client, ["a", "b"], encoding_format="base64").json()["data"]
    for f, e in zip(floats, encoded, strict=True):
        assert isinstance(e["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(e["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (["text", 1], "input"),
        ([[1, 2], "text"], "input"),
        ([[1], 2], "input"),
        ([], "input"),
        ("", "input"),
        ([[]], "input"),
        (["a", ""], "input"),
        ({"text": "a"}, "input"),
        (None, "input"),
        ([[1, "a"]], "input[0][1]"),
        ([1.5], "input[0]"),
    ],
)
def test_embeddings_bad_input_names_the_field(client: TestClient, value: Any, param: str) -> None:
    assert_error(embed(client, value), 400, param=param)


def test_embeddings_too_many_inputs(client: TestClient) -> None:
    assert embed(client, ["t"] * MAX_INPUTS).status_code == 200
    error = assert_error(embed(client, ["t"] * (MAX_INPUTS + 1)), 400, param="input")
    assert f"limit is {MAX_INPUTS}" in error["message"]
    assert_error(embed(client, [[1]] * (MAX_INPUTS + 1)), 400, param="input")


@pytest.mark.parametrize(
    ("field", "value"), [("encoding_format", "hex"), ("dimensions", 0), ("dimensions", "8"), ("input_type", "banana")]
)
def test_embeddings_bad_options_name_the_field(client: TestClient, field: str, value: Any) -> None:
    assert_error(embed(client, "a", **{field: value}), 400, param=field)


def test_embeddings_dimensions(client: TestClient) -> None:
    vector = embed(client, "a", dimensions=4).json()["data"][0]["embedding"]
    assert len(vector) == 4
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert_error(embed(client, "a", dimensions=9), 400, param="dimensions")  # beyond the model: the backend says so


def test_embeddings_query_type_and_alias(client: TestClient, plugin: FakePlugin) -> None:
    r = client.post(EMBED, json={"model": "text-embedding-3-small", "input": "q", "input_type": "search_query"})
    assert r.json()["model"] == "fake-embed"
    assert plugin.calls.of("embed")[0].input_type == "query"


# -- rerank ------------------------------------------------------------------------------------------------

DOCS = ["cats purr", "dogs bark loudly", "cats and dogs play", "stock markets"]


def rerank(client: TestClient, path: str = RERANK, **body: Any) -> httpx.Response:
    return client.post(path, json={"model": "fake-rerank", "query": "cats dogs", "documents": DOCS, **body})


@pytest.mark.parametrize("path", [RERANK, "/rerank", "/v2/rerank"])
def test_rerank_orders_by_score_and_returns_all_by_default(client: TestClient, path: str) -> None:
    body = rerank(client, path).json()
    assert body["model"] == "fake-rerank"
    results = body["results"]
    assert len(results) == len(DOCS)
    assert results[0] == {"index": 2, "score": 1.0, "relevance_score": 1.0, "document": "cats and dogs play"}
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    assert all(r["relevance_score"] == r["score"] and r["document"] == DOCS[r["index"]] for r in results)
    assert results[-1]["index"] == 3 and results[-1]["score"] == 0.0


@pytest.mark.parametrize(
    ("limit", "expected"),
    [({"top_k": 2}, 2), ({"top_n": 1}, 1), ({"top_n": 10}, 4), ({"top_n": 1, "top_k": 3}, 1), ({"top_k": None}, 4)],
)
def test_rerank_limits(client: TestClient, limit: dict[str, Any], expected: int) -> None:
    results = rerank(client, **limit).json()["results"]
    assert len(results) == expected
    assert results[0]["index"] == 2


def test_rerank_without_documents_in_results(client: TestClient) -> None:
    results = rerank(client, return_documents=False).json()["results"]
    assert all(set(r) == {"index", "score", "relevance_score"} for r in results)


def test_rerank_document_objects(client: TestClient, plugin: FakePlugin) -> None:
    docs = [{"text": "cats purr"}, "dogs", {"text": "cats dogs", "id": "doc-7"}]
    results = rerank(client, documents=docs).json()["results"]
    assert results[0] == {"index": 2, "score": 1.0, "relevance_score": 1.0, "document": "cats dogs"}
    assert plugin.calls.of("rerank")[0].documents == ("cats purr", "dogs", "cats dogs")


def test_rerank_instruction_reaches_the_backend(client: TestClient, plugin: FakePlugin) -> None:
    rerank(client, instruction="Find pet facts")
    assert plugin.calls.of("rerank")[0].instruction == "Find pet facts"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": []}, "documents"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"top_k": 0}, "top_k"),
        ({"top_n": -1}, "top_n"),
        ({"top_k": "2"}, "top_k"),
        ({"documents": "one doc"}, "documents"),
        ({"documents": [1]}, "documents[0]"),
        ({"documents": [{"txt": "a"}]}, "documents[0].text"),
        ({"query": None}, "query"),
        ({"return_documents": "no"}, "return_documents"),
    ],
)
def test_rerank_validation_names_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    assert_error(rerank(client, **body), 400, param=param)


def test_rerank_too_many_documents(client: TestClient) -> None:
    assert rerank(client, documents=["d"] * MAX_DOCS).status_code == 200
    error = assert_error(rerank(client, documents=["d"] * (MAX_DOCS + 1)), 400, param="documents")
    assert f"limit is {MAX_DOCS}" in error["message"]


# -- models, load/unload, health ----------------------------------------------------------------------------


def test_list_models(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"fake-chat", "fake-embed", "fake-rerank", "bad-stream", "crash-stream"}
    for card in cards.values():
        assert card["object"] == "model"
        assert isinstance(card["created"], int)
        assert card["owned_by"] == "fakes"
        assert card["status"]["state"] == "available"  # nothing is loaded until used
    assert {cards[m]["task"] for m in ("fake-chat", "fake-embed", "fake-rerank")} == {"chat", "embedding", "rerank"}
    assert cards["fake-chat"]["aliases"] == ["fake-chat-alias"]
    assert cards["fake-embed"]["aliases"] == ["text-embedding-3-small"]  # added by the config


def test_models_show_residency_after_use(client: TestClient) -> None:
    assert chat(client).status_code == 200
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    status = cards["fake-chat"]["status"]
    assert (status["state"], status["device"], status["placement"]) == ("resident", "cpu", "cpu")
    assert cards["fake-embed"]["status"]["state"] == "available"


def test_get_one_model_by_id_or_alias(client: TestClient) -> None:
    for name in ("fake-embed", "text-embedding-3-small"):
        card = client.get(f"/v1/models/{name}").json()
        assert (card["id"], card["object"], card["task"]) == ("fake-embed", "model", "embedding")
    assert_error(client.get("/v1/models/gpt-5"), 404, code="model_not_found")


def test_load_and_unload(client: TestClient, plugin: FakePlugin) -> None:
    r = client.post("/v1/models/fake-rerank/load")
    assert r.status_code == 200, r.text
    assert r.json()["status"]["state"] == "resident"
    assert plugin.calls.count("load", "fake-rerank") == 1
    assert client.get("/health").json()["resident"] == ["fake-rerank"]
    r = client.post("/v1/models/fake-rerank/unload")
    assert r.status_code == 200
    assert r.json()["status"]["state"] == "available"
    assert plugin.calls.count("unload", "fake-rerank") == 1
    assert client.post("/v1/models/fake-rerank/unload").json()["status"]["state"] == "available"  # idempotent
    assert plugin.calls.count("unload", "fake-rerank") == 1
    assert client.post("/v1/models/fake-chat-alias/load").json()["id"] == "fake-chat"  # aliases resolve
    assert_error(client.post("/v1/models/gpt-5/load"), 404, code="model_not_found")
    assert_error(client.post("/v1/models/gpt-5/unload"), 404, code="model_not_found")


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "ready": True, "models": 5, "resident": [], "loading": [], "failed": []}
    embed(client, "a")
    assert client.get("/health").json()["resident"] == ["fake-embed"]


def test_the_fixture_client_serves_the_fakes(plughost_client: TestClient) -> None:
    """The shipped ``plughost_client`` fixture works as documented for plugin authors."""
    assert {m["id"] for m in plughost_client.get("/v1/models").json()["data"]} == {
        "fake-chat",
        "fake-embed",
        "fake-rerank",
    }
    assert plughost_client.post(CHAT, json=VALID[CHAT]).status_code == 200


def test_model_routes_accept_ids_with_a_slash(plughost_app) -> None:
    from host.spec import Task
    from host.testing.fakes import FakePlugin, fake_spec

    plugin = FakePlugin([fake_spec("Qwen/Qwen3-Embedding-0.6B", Task.EMBEDDING, aliases=("org/alias",))])
    with TestClient(plughost_app(plugins=[plugin])) as client:
        assert client.get("/v1/models/Qwen/Qwen3-Embedding-0.6B").json()["id"] == "Qwen/Qwen3-Embedding-0.6B"
        assert client.get("/v1/models/org/alias").json()["id"] == "Qwen/Qwen3-Embedding-0.6B"
        loaded = client.post("/v1/models/org/alias/load")
        assert loaded.status_code == 200 and loaded.json()["status"]["state"] == "resident"
        assert client.post("/v1/models/Qwen/Qwen3-Embedding-0.6B/unload").json()["status"]["state"] == "available"
        bad = client.post("/v1/models/Qwen/Qwen3-Embedding-0.6B/explode")
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"


def test_a_stream_whose_client_left_before_the_first_byte_releases_its_lease(plughost_app) -> None:
    """A client that disconnects before the first byte of a streamed answer frees its lease (the
    route's generator ``finally`` and its background task both release; whichever runs first wins)."""
    import json as _json

    from host.spec import Task
    from host.testing.fakes import FakePlugin, fake_spec

    app = plughost_app(plugins=[FakePlugin([fake_spec("c", Task.CHAT, token_delay_s=0.01)])])
    body = _json.dumps({"model": "c", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}).encode()

    async def call_and_vanish() -> None:
        sent = {"body": False}

        async def receive() -> dict:
            if not sent["body"]:
                sent["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}  # gone before the first byte of the answer

        async def send(message: dict) -> None:
            pass

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": app,
            "state": {},
        }
        await app(scope, receive, send)

    with TestClient(app) as client:
        client.blocking_portal.call(call_and_vanish)
        for _ in range(100):
            if client.get("/v1/models/c").json()["status"]["in_flight"] == 0:
                break
            import time as _time

            _time.sleep(0.01)
        assert client.get("/v1/models/c").json()["status"]["in_flight"] == 0
