"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic's Messages API) against the
fake backends: the mapping into domain requests, the answer and its stream, errors in Anthropic's
envelope, ``x-api-key``; and the ``anthropic`` SDK against a live server.

The same API on the real tiny chat model, tools included, and Claude Code: the plugin's
``test_chat_qwen_awq_anthropic.py`` and ``tests/test_claude_code.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.capabilities import Capabilities
from host.contract.domain import ChatMessage, ChatRequest, Tool, ToolCall, ToolChoice
from host.contract.errors import InvalidRequest
from host.contract.spec import Task
from host.protocol.anthropic import CountTokensRequest, MessagesRequest
from host.testing.anthropic import assert_anthropic_error, check_message, message_from_stream, named_events
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import CHAT, assert_error
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

MESSAGES, COUNT = "/v1/messages", "/v1/messages/count_tokens"
USER = [{"role": "user", "content": "hi there"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"name": "get_weather", "description": "Weather in a city", "input_schema": SCHEMA}


def post(client: TestClient, **body: Any) -> httpx.Response:
    return client.post(MESSAGES, json={"model": "fake-chat", "max_tokens": 64, "messages": USER, **body})


def domain(**body: Any) -> ChatRequest:
    import msgspec

    wire = msgspec.convert({"model": "m", "max_tokens": 16, "messages": USER, **body}, MessagesRequest)
    return wire.to_request()


# -- the mapping into the domain request (no server) --------------------------------------------------


def test_system_blocks_tool_use_and_tool_results_map_to_the_messages_the_template_renders() -> None:
    request = domain(
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "19 C"}]},
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
            {"role": "system", "content": "Answer in French."},  # Claude Code's mid-conversation system turn
        ],
        tools=[WEATHER],
        stop_sequences=["END"],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "u"},
        thinking={"type": "adaptive"},
        output_config={"effort": "high"},
        context_management={"edits": []},
    )
    assert request.messages == (
        ChatMessage("system", "Be brief.\nBe kind."),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            "Let me look.",
            tool_calls=(
                ToolCall(index=0, id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(index=1, id="toolu_2", name="get_weather", arguments='{"city": "Lyon"}'),
            ),
            reasoning="hmm",  # a replayed thinking block is the turn's reasoning
        ),
        ChatMessage("tool", "21 C", tool_call_id="toolu_1"),
        ChatMessage("tool", "19 C", tool_call_id="toolu_2"),
        ChatMessage("user", "Which is warmer?"),
        ChatMessage("system", "Answer in French."),
    )
    assert request.tools == (Tool(name="get_weather", description="Weather in a city", parameters=SCHEMA),)
    assert request.tool_choice == ToolChoice(mode="auto")
    s = request.sampling
    assert (s.max_tokens, s.stop, s.temperature, s.top_p, s.top_k) == (16, ("END",), 0.5, 0.9, 40)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (None, ToolChoice(mode="auto")),
        ({"type": "auto"}, ToolChoice(mode="auto")),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice(mode="auto", parallel=False)),
        ({"type": "any"}, ToolChoice(mode="required")),
        ({"type": "tool", "name": "get_weather"}, ToolChoice(mode="function", name="get_weather", parallel=False)),
        ({"type": "none"}, ToolChoice(mode="none")),
    ],
)
def test_tool_choice_maps_to_the_domain(wire: Any, expected: ToolChoice) -> None:
    body = {"tools": [WEATHER]} | ({"tool_choice": wire} if wire else {})
    assert domain(**body).tool_choice == expected


def test_without_tools_nothing_is_called() -> None:
    assert domain().tool_choice == ToolChoice(mode="none")
    assert domain(tool_choice={"type": "auto"}).tool_choice == ToolChoice(mode="none")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "x", "input_schema": {"type": "array"}}]}, "tools[0].input_schema"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"stop_sequences": ["ok", ""]}, "stop_sequences[1]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [*USER, {"role": "assistant", "content": "Sure, "}]}, "messages[1].role"),
        (
            {
                "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
                "tools": [WEATHER],
                "tool_choice": {"type": "any"},
            },
            "output_config.format",
        ),
    ],
)
def test_what_the_model_cannot_honour_is_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        domain(**body)
    assert caught.value.param == param


def test_output_config_format_is_a_json_schema_output() -> None:
    request = domain(output_config={"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low"})
    assert (request.output.kind, request.output.schema) == ("json_schema", SCHEMA)


def test_count_tokens_takes_the_same_prompt_without_max_tokens() -> None:
    import msgspec

    wire = msgspec.convert({"model": "m", "messages": USER, "tools": [WEATHER]}, CountTokensRequest)
    assert wire.to_domain().tools[0].name == "get_weather"


# -- the routes on the fake backend --------------------------------------------------------------------


def test_a_message(client: TestClient, plugin: FakePlugin) -> None:
    r = post(client, system="be brief")
    assert r.status_code == 200, r.text
    message = r.json()
    check_message(message)
    assert message["model"] == "fake-chat"
    assert message["content"] == [{"type": "text", "text": "echo: hi there"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    assert message["usage"] == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    [seen] = plugin.specs[0].options.calls.of("generate", "fake-chat")
    assert seen.messages[0] == ChatMessage("system", "be brief")


@pytest.mark.parametrize(
    ("body", "reason", "sequence", "text"),
    [
        ({}, "end_turn", None, "echo: hi there"),
        ({"stop_sequences": [" the"]}, "stop_sequence", " the", "echo: hi"),
        ({"max_tokens": 2}, "max_tokens", None, "echo: hi"),
    ],
)
def test_stop_reasons_plain_and_streamed(
    client: TestClient, body: dict[str, Any], reason: str, sequence: str | None, text: str
) -> None:
    plain = post(client, **body).json()
    assert (plain["stop_reason"], plain["stop_sequence"]) == (reason, sequence)
    assert plain["content"] == [{"type": "text", "text": text}]
    r = post(client, stream=True, **body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    streamed = message_from_stream(r.text)
    assert (streamed["content"], streamed["stop_reason"], streamed["stop_sequence"]) == (
        plain["content"],
        reason,
        sequence,
    )
    assert streamed["usage"] == plain["usage"]
    names = [name for name, _ in named_events(r.text)]
    assert names[:3] == ["message_start", "ping", "content_block_start"]


def test_count_tokens_counts_what_the_message_would_read(client: TestClient) -> None:
    r = client.post(COUNT, json={"model": "fake-chat", "system": "be brief", "messages": USER})
    assert r.status_code == 200, r.text
    assert r.json() == {"input_tokens": post(client, system="be brief").json()["usage"]["input_tokens"]}


def test_count_tokens_of_a_model_that_cannot_count_is_a_400(client: TestClient) -> None:
    # FailingChatBackend has no prompt_ids(): the 400 says so, in Anthropic's envelope.
    r = client.post(COUNT, json={"model": "bad-stream", "messages": USER})
    assert "cannot count" in assert_anthropic_error(r, 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "says"),
    [
        (MESSAGES, {"model": "fake-chat", "messages": USER}, 400, "invalid_request_error", "max_tokens"),
        (MESSAGES, {"model": "nope", "max_tokens": 5, "messages": USER}, 404, "not_found_error", "nope"),
        (MESSAGES, {"model": "fake-embed", "max_tokens": 5, "messages": USER}, 400, "invalid_request_error", "model"),
        (MESSAGES, {"model": "fake-chat", "max_tokens": 5, "messages": USER, "tools": [WEATHER]}, 400, None, "tools: "),
        (
            MESSAGES,
            {
                "model": "fake-chat",
                "max_tokens": 5,
                "messages": USER,
                "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
            },
            400,
            None,
            "output_config.format: ",
        ),
        (
            MESSAGES,
            {"model": "fake-chat", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            400,
            None,
            "role",
        ),
        (COUNT, {"model": "fake-chat", "messages": []}, 400, "invalid_request_error", "messages"),
        (MESSAGES + "/nope", {}, 404, "not_found_error", None),
    ],
)
def test_errors_come_in_anthropics_envelope(
    client: TestClient, path: str, body: dict[str, Any], status: int, kind: str | None, says: str | None
) -> None:
    message = assert_anthropic_error(client.post(path, json=body), status, kind)
    if says is not None:
        assert says in message


def test_body_errors_and_wrong_methods_come_in_anthropics_envelope(client: TestClient) -> None:
    assert_anthropic_error(
        client.post(MESSAGES, content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert_anthropic_error(
        client.post(MESSAGES, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400
    )
    assert_anthropic_error(client.post(MESSAGES, content=b"{}", headers={"content-type": "text/plain"}), 415)
    assert_anthropic_error(client.get(MESSAGES), 405, "invalid_request_error")
    # Other routes keep OpenAI's envelope.
    assert_error(client.post(CHAT, json={"model": "nope", "messages": USER}), 404, code="model_not_found")


def test_a_stream_that_fails_after_its_headers_ends_with_an_error_event(client: TestClient) -> None:
    r = client.post(MESSAGES, json={"model": "crash-stream", "max_tokens": 64, "messages": USER, "stream": True})
    assert r.status_code == 200
    events = named_events(r.text)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "error",
    ]
    failed = message_from_stream(r.text)["error"]
    assert failed["error"]["type"] == "api_error" and failed["request_id"] == r.headers["x-request-id"]
    assert "CUDA" not in r.text  # the backend's own words stay in the log


def test_a_stream_rejected_before_its_headers_is_a_json_error(client: TestClient) -> None:
    r = client.post(MESSAGES, json={"model": "fake-chat", "max_tokens": 5000, "messages": USER, "stream": True})
    assert "context length" in assert_anthropic_error(r, 400, "invalid_request_error")


# -- keys ----------------------------------------------------------------------------------------------


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    config = make_config({"server": {"api_keys": ["sk-right"]}})
    with TestClient(create_app(config, plugins=[FakePlugin()], budgets=CPU_ONLY)) as c:
        yield c


@pytest.mark.parametrize("path", [MESSAGES, CHAT, "/v1/models"])
def test_x_api_key_is_accepted_wherever_a_key_is_checked(keyed: TestClient, path: str) -> None:
    body = {"model": "fake-chat", "max_tokens": 5, "messages": USER}
    right = keyed.request("GET" if path == "/v1/models" else "POST", path, json=body, headers={"x-api-key": "sk-right"})
    assert right.status_code == 200, right.text
    wrong = keyed.request("GET" if path == "/v1/models" else "POST", path, json=body, headers={"x-api-key": "sk-wrong"})
    if path == MESSAGES:
        assert "x-api-key" in assert_anthropic_error(wrong, 401, "authentication_error")
    else:
        assert_error(wrong, 401, code="invalid_api_key")


def test_a_wrong_bearer_token_is_not_saved_by_a_wrong_x_api_key_nor_the_reverse(keyed: TestClient) -> None:
    body = {"model": "fake-chat", "max_tokens": 5, "messages": USER}
    both_wrong = {"authorization": "Bearer sk-no", "x-api-key": "sk-nope"}
    assert keyed.post(MESSAGES, json=body, headers=both_wrong).status_code == 401
    one_right = {"authorization": "Bearer sk-no", "x-api-key": "sk-right"}
    assert keyed.post(MESSAGES, json=body, headers=one_right).status_code == 200


# -- the anthropic SDK against a live server -----------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    plugin = FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT),
            fake_spec("slow-load-chat", Task.CHAT, load_delay_s=1.5, capabilities=Capabilities(tools=True)),
        ]
    )
    config = make_config(
        {
            "server": {"api_keys": ["sk-live"], "stream_keepalive_s": 0.2},
            "scheduler": {"max_resident_per_task": 2, "min_residency_s": 0},
        }
    )
    with serve_in_thread(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(live: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=live, api_key="sk-live", max_retries=0, timeout=30) as c:
        yield c


def test_sdk_create_stream_and_count_tokens(sdk: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": "fake-chat", "max_tokens": 32, "messages": USER, "system": "be brief"}
    message = sdk.messages.create(**kwargs)
    assert message.content[0].type == "text" and message.content[0].text == "echo: hi there"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens == 6
    with sdk.messages.stream(**kwargs, stop_sequences=["there"]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == final.content[0].text == "echo: hi "
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "there")
    assert final.usage.input_tokens == 6 and final.usage.output_tokens == 3
    count = sdk.messages.count_tokens(model="fake-chat", messages=USER, system="be brief")
    assert count.input_tokens == message.usage.input_tokens


def test_sdk_stream_reads_through_the_keep_alives_of_a_loading_model(live: str, sdk: anthropic.Anthropic) -> None:
    raw = httpx.post(
        f"{live}{MESSAGES}",
        json={"model": "slow-load-chat", "max_tokens": 8, "messages": USER, "stream": True},
        headers={"x-api-key": "sk-live"},
        timeout=30,
    )
    assert raw.text.startswith(": ")  # comments while the model loads, before message_start
    httpx.post(f"{live}/v1/models/slow-load-chat/unload", headers={"x-api-key": "sk-live"}, timeout=30)
    with sdk.messages.stream(model="slow-load-chat", max_tokens=8, messages=USER) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "echo: hi there"


def test_sdk_errors_are_anthropics_exceptions(live: str, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="nope", max_tokens=8, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as unsupported:
        sdk.messages.create(model="fake-chat", max_tokens=8, messages=USER, tools=[WEATHER])
    assert unsupported.value.body["error"]["message"].startswith("tools: ")
    with (
        anthropic.Anthropic(base_url=live, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        wrong.messages.create(model="fake-chat", max_tokens=8, messages=USER)
    assert denied.value.body["error"]["type"] == "authentication_error"
    # Claude Code's auth token (ANTHROPIC_AUTH_TOKEN) arrives as a Bearer token.
    with anthropic.Anthropic(base_url=live, auth_token="sk-live", max_retries=0) as bearer:
        assert bearer.messages.create(model="fake-chat", max_tokens=8, messages=USER).stop_reason == "end_turn"
