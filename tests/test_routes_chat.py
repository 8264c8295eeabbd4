"""``POST /v1/chat/completions`` against the fake backends: completions, n choices, streaming, and
when a generation stops relative to its lease."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from host.contract.domain import ChatRequest
from host.contract.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import CHAT, asgi_post_scope, assert_error, sse_events

USER = [{"role": "user", "content": "hi there"}]
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "fake-chat", "messages": USER, **body})


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
        ("top_p", -0.1),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", -1),
        ("n", 0),
        ("n", 17),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("repetition_penalty", 0),
        ("repetition_penalty", 1e-300),  # issue 26: below the documented 0.01 (it overflowed the logits: a 500)
        ("repetition_penalty", 10.5),
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
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "42"}], "messages[1].tool_call_id"),
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
    assert_error(chat(client, stop=[""]), 400, param="stop[0]")
    assert_error(chat(client, stop=""), 400, param="stop")


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
    ("body", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tools": [TOOL], "tool_choice": "required"}, "tools"),
        ({"tools": [TOOL]}, "tools"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ],
)
def test_chat_features_the_model_does_not_declare_are_400(
    client: TestClient, plugin: FakePlugin, body: dict[str, Any], param: str
) -> None:
    # The fake echo model declares raw prompts only (no tools, output formats or logprobs): the host
    # refuses the rest before the backend sees a request (tools, response_format and logprobs are
    # accepted on the wire).
    before = plugin.calls.count("generate")
    error = assert_error(chat(client, **body), 400, param=param)
    if "does not support" in error["message"]:
        assert "'fake-chat'" in error["message"]
        assert plugin.calls.count("generate") == before


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools[0].function.parameters",
        ),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_object"}, "tools": [TOOL], "tool_choice": "required"}, "response_format"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
def test_chat_tool_and_format_fields_are_validated(client: TestClient, body: dict[str, Any], param: str) -> None:
    assert_error(chat(client, **body), 400, param=param)


@pytest.mark.parametrize("temperature", [1e-40, 1e-320, 5e-324, 9.9e-6])
def test_subnormal_and_tiny_temperatures_are_greedy(client: TestClient, plugin: FakePlugin, temperature: float) -> None:
    # Issue 26: dividing logits by these overflowed them (a 500); below 1e-5 is greedy, as in vLLM.
    assert chat(client, temperature=temperature).status_code == 200
    assert plugin.calls.of("generate")[-1].sampling.temperature == 0.0


def test_the_wire_takes_what_its_schema_allows(client: TestClient, plugin: FakePlugin) -> None:
    # Issue 26: values the OpenAPI schema states as valid are never refused.
    history = [
        {"role": "user", "content": "x"},
        {"role": "assistant"},  # neither content nor calls: an empty turn
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]},
    ]
    r = chat(
        client,
        messages=history,
        top_p=0,
        temperature=1e-5,
        tools=[TOOL, TOOL],
        tool_choice="none",
        n=2.0,
        max_tokens=8.0,
    )
    assert r.status_code == 200, r.text
    request = plugin.calls.of("generate")[-1]
    assert [m.content for m in request.messages] == ["x", "", "", "ok"]
    assert request.messages[2].tool_calls[0].arguments == "{not json"  # the template shows it as it is
    assert (request.sampling.top_p, request.sampling.temperature, request.sampling.max_tokens) == (0, 1e-5, 8)
    assert [t.name for t in request.tools] == ["get_weather", "get_weather"] and request.choices == 2


def test_chat_accepts_tools_and_tool_history(client: TestClient, plugin: FakePlugin) -> None:
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
    ]
    # tool_choice "none": the tools are context only, which a model without tool calling can serve.
    r = chat(client, messages=history, tools=[TOOL], tool_choice="none")
    assert r.status_code == 200, r.text
    request = plugin.calls.of("generate")[-1]
    assert request.tools[0].name == "get_weather" and request.tool_choice.mode == "none"
    assert request.messages[1].tool_calls[0].arguments == '{"city": "Paris"}'
    assert (request.messages[2].role, request.messages[2].tool_call_id) == ("tool", "call_1")


def test_chat_n_choices(client: TestClient, plugin: FakePlugin) -> None:
    r = chat(client, n=3, seed=10)
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "echo: hi there" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 9
    assert sorted(req.sampling.seed for req in plugin.calls.of("generate")) == [10, 11, 12]


def test_chat_stream_with_n_choices(client: TestClient, plugin: FakePlugin) -> None:
    # n > 1 with stream used to be a 400; the choices now stream interleaved, each with its index.
    r = chat(client, n=3, seed=5, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200, r.text
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text: dict[int, str] = {0: "", 1: "", 2: ""}
    finish: dict[int, str] = {}
    for c in chunks[:-1]:
        [choice] = c["choices"]
        text[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert text == {i: "echo: hi there" for i in range(3)}
    assert finish == {0: "stop", 1: "stop", 2: "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert sorted(req.sampling.seed for req in plugin.calls.of("generate")) == [5, 6, 7]


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
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    # Issue 12, finding 7: the client gets the request id, never the exception's class or text.
    assert "CUDA" not in error["message"] and "RuntimeError" not in error["message"]
    assert response.headers["x-request-id"] in error["message"]
    # The host stays healthy and the model serves the next request.
    assert client.get("/v1/models/crash-stream").json()["status"]["in_flight"] == 0
    assert client.get("/health").json()["status"] == "ok"


def test_backend_crash_in_a_plain_completion_is_an_enveloped_500(client: TestClient) -> None:
    error = assert_error(chat(client, model="crash-stream"), 500)
    assert (error["type"], error["code"]) == ("server_error", "internal_error")  # the same code as streamed
    assert chat(client).status_code == 200  # the host keeps serving


@pytest.mark.parametrize("model", ["bad-stream", "crash-stream"])
def test_an_error_has_the_same_type_code_and_param_streamed_and_plain(client: TestClient, model: str) -> None:
    plain = chat(client, model=model).json()["error"]
    streamed = json.loads(sse_events(chat(client, model=model, stream=True))[-2])["error"]
    assert (streamed["type"], streamed["code"], streamed["param"]) == (plain["type"], plain["code"], plain["param"])


def test_invalid_request_mid_completion_is_400(client: TestClient) -> None:
    assert_error(chat(client, model="bad-stream"), 400, param="messages")


def test_a_stream_whose_client_left_before_the_first_byte_releases_its_lease(plughost_app) -> None:
    """A client that disconnects before the first byte of a streamed answer frees its lease (the
    route's generator ``finally`` and its background task both release; whichever runs first wins)."""
    import json as _json

    from host.testing.fakes import FakePlugin

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

        await app(asgi_post_scope(app, CHAT), receive, send)

    with TestClient(app) as client:
        client.blocking_portal.call(call_and_vanish)
        for _ in range(100):
            if client.get("/v1/models/c").json()["status"]["in_flight"] == 0:
                break
            import time as _time

            _time.sleep(0.01)
        assert client.get("/v1/models/c").json()["status"]["in_flight"] == 0


def test_a_backend_crash_in_a_plain_completion_keeps_its_details_in_the_log(client: TestClient) -> None:
    response = chat(client, model="crash-stream")
    error = assert_error(response, 500, code="internal_error")
    # Neither the exception's text nor its class (issue 12, finding 7); the request id to find the log.
    assert "RuntimeError" not in error["message"] and "CUDA" not in error["message"]
    assert response.headers["x-request-id"] in error["message"]
