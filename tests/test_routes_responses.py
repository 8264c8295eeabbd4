"""``/v1/responses`` against the fake backends: the response object, the stream's event sequence,
the field names of its 400s, the stored responses (owner, follow-ups, GET and DELETE)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from host.contract.domain import ChatRequest
from host.contract.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import assert_error, post_and_leave

RESPONSES = "/v1/responses"
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}


def text_part(text: str) -> dict[str, str]:
    return {"type": "input_text", "text": text}


def create(client: TestClient, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return client.post(RESPONSES, json={"model": "fake-chat", "input": "hi there", **body}, headers=headers)


def named_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of a named-event SSE body; the name must equal the data's ``type``."""
    events = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            data = json.loads(lines["data"])
            assert lines["event"] == data["type"]
            events.append((lines["event"], data))
    return events


def test_a_response_object_with_one_message_and_usage(client: TestClient) -> None:
    r = create(client, instructions="be brief", max_output_tokens=50, metadata={"k": "v"}, temperature=0.5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert (body["status"], body["incomplete_details"], body["error"]) == ("completed", None, None)
    assert (body["instructions"], body["max_output_tokens"], body["metadata"]) == ("be brief", 50, {"k": "v"})
    assert (body["temperature"], body["tool_choice"], body["tools"], body["store"]) == (0.5, "none", [], True)
    [message] = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert (message["role"], message["status"]) == ("assistant", "completed")
    assert message["content"] == [{"type": "output_text", "text": "echo: hi there", "annotations": [], "logprobs": []}]
    usage = body["usage"]
    assert usage["output_tokens"] == 3
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}


def test_input_items_become_the_domain_conversation(client: TestClient, plugin: FakePlugin) -> None:
    items = [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [text_part("weather "), text_part("in Oslo?")]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [text_part("noon")]},
        {
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Sunny"}, {"type": "refusal", "refusal": "."}],
        },
        {"role": "user", "content": "thanks"},
    ]
    r = create(client, input=items, instructions="sys", max_output_tokens=9, top_p=0.5, seed=3)
    assert r.status_code == 200, r.text
    request: ChatRequest = plugin.calls.of("generate", "fake-chat")[0]
    assert [(m.role, m.content, m.tool_call_id) for m in request.messages] == [
        ("system", "sys", None),
        ("system", "be brief", None),
        ("user", "weather in Oslo?", None),
        ("assistant", "", None),
        ("tool", "sunny", "call_1"),
        ("tool", "noon", "call_2"),
        ("assistant", "Sunny.", None),
        ("user", "thanks", None),
    ]
    calls = request.messages[3].tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (0, "call_1", "get_weather", '{"city": "Oslo"}'),
        (1, "call_2", "get_time", "{}"),
    ]
    s = request.sampling
    assert (s.max_tokens, s.top_p, s.seed) == (9, 0.5, 3)
    assert r.json()["output"][0]["content"][0]["text"] == "echo: thanks"


def test_a_stream_is_the_documented_event_sequence(client: TestClient) -> None:
    r = create(client, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    events = named_events(r)
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    item_id = events[2][1]["item"]["id"]
    assert all(data["item_id"] == item_id for _, data in events[3:9])
    assert "".join(data["delta"] for name, data in events if name.endswith(".delta")) == "echo: hi there"
    assert events[7][1]["text"] == "echo: hi there"
    assert events[9][1]["item"] == completed["output"][0]
    assert completed["usage"]["output_tokens"] == 3
    plain = create(client).json()
    assert plain["output"][0]["content"] == completed["output"][0]["content"]


def test_max_output_tokens_makes_an_incomplete_response(client: TestClient) -> None:
    plain = create(client, input="one two three four", max_output_tokens=2).json()
    assert (plain["status"], plain["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert plain["output"][0]["status"] == "incomplete"
    events = named_events(create(client, input="one two three four", max_output_tokens=2, stream=True))
    assert events[-1][0] == "response.incomplete"
    final = events[-1][1]["response"]
    assert (final["status"], final["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert final["output"][0]["content"][0]["text"] == "echo: one"


def test_a_failure_mid_stream_is_an_error_event_then_response_failed(client: TestClient) -> None:
    events = named_events(create(client, model="bad-stream", stream=True))
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-2:] == ["error", "response.failed"]
    error, failed = events[-2][1], events[-1][1]["response"]
    # The backend named the Chat Completions field; the client is told the Responses one.
    assert (error["code"], error["param"]) == ("invalid_value", "input")
    assert failed["status"] == "failed" and failed["id"] == events[0][1]["response"]["id"]
    assert failed["error"] == {"code": "invalid_prompt", "message": error["message"]}
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert_error(create(client, model="bad-stream"), 400, param="input")
    crashed = named_events(create(client, model="crash-stream", stream=True))
    assert crashed[-1][1]["response"]["error"]["code"] == "server_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type"),
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tools": [{**TOOL, "parameters": {"type": "array"}}]}, "tools[0].parameters"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": [{"role": "user", "content": [IMAGE]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"content": "no role"}]}, "input[0].role"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": []}, "input"),
        ({"input": None}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
    ],
)
def test_bad_requests_name_the_responses_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    for stream in (False, True):
        error = assert_error(create(client, stream=stream, **body), 400, param=param)
        if param.startswith("tools[") and param.endswith(".type"):
            assert body["tools"][int(param[6])]["type"] in error["message"]  # names the built-in tool


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}, "text.format"),
    ],
)
def test_capabilities_the_model_lacks_are_400s_naming_the_responses_field(
    client: TestClient, plugin: FakePlugin, body: dict[str, Any], param: str
) -> None:
    for stream in (False, True):
        assert_error(create(client, stream=stream, **body), 400, param=param)
    assert not plugin.calls.of("generate", "fake-chat")  # refused before the backend saw it
    assert create(client, tools=[TOOL], tool_choice="none").status_code == 200  # tools not offered: fine


# -- stored responses ------------------------------------------------------------------------------------


def test_a_stored_response_is_retrieved_continued_and_deleted(client: TestClient, plugin: FakePlugin) -> None:
    first = create(client, instructions="only for the first", input="first question").json()
    assert client.get(f"{RESPONSES}/{first['id']}").json() == first
    second = create(client, previous_response_id=first["id"], input="second question").json()
    assert second["previous_response_id"] == first["id"]
    assert second["output"][0]["content"][0]["text"] == "echo: second question"
    request: ChatRequest = plugin.calls.of("generate", "fake-chat")[1]
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "first question"),  # instructions are not carried over, as with OpenAI
        ("assistant", "echo: first question"),
        ("user", "second question"),
    ]
    third = create(client, previous_response_id=second["id"], input="third", stream=True)
    final = named_events(third)[-1][1]["response"]
    request = plugin.calls.of("generate", "fake-chat")[2]
    assert [m.content for m in request.messages][-3:] == ["second question", "echo: second question", "third"]
    assert client.get(f"{RESPONSES}/{final['id']}").json() == final  # a streamed response is stored too
    deleted = client.delete(f"{RESPONSES}/{first['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": first["id"], "object": "response.deleted", "deleted": True}
    assert_error(client.get(f"{RESPONSES}/{first['id']}"), 404, param="response_id")
    assert_error(client.delete(f"{RESPONSES}/{first['id']}"), 404, param="response_id")
    assert_error(create(client, previous_response_id=first["id"]), 404, param="previous_response_id")
    assert client.get(f"{RESPONSES}/{second['id']}").status_code == 200  # its own conversation is kept


def test_store_false_keeps_nothing(client: TestClient) -> None:
    body = create(client, store=False).json()
    assert body["store"] is False
    assert_error(client.get(f"{RESPONSES}/{body['id']}"), 404)
    assert_error(create(client, previous_response_id=body["id"]), 404, param="previous_response_id")


def test_a_stored_response_is_visible_only_to_the_key_that_made_it(client: TestClient) -> None:
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    made = create(client, headers=alice).json()
    assert client.get(f"{RESPONSES}/{made['id']}", headers=alice).status_code == 200
    assert client.get(f"{RESPONSES}/{made['id']}", headers={"x-api-key": "alice"}).status_code == 200
    for other in (bob, {}, {"Authorization": "Bearer alice2"}):
        assert_error(client.get(f"{RESPONSES}/{made['id']}", headers=other), 404)
        assert_error(client.delete(f"{RESPONSES}/{made['id']}", headers=other), 404)
        assert_error(create(client, headers=other, previous_response_id=made["id"]), 404)
    assert create(client, headers=alice, previous_response_id=made["id"]).status_code == 200


# -- hostile clients ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"model": "fake-chat", "input": "\xff\xfe"}', "invalid_json"),
        (b'{"model": "fake-chat", "input": ' + b"[" * 1900 + b"]" * 1900 + b"}", "invalid_value"),
        (b'{"model": "fake-chat", "reasoning": ' + b"[" * 1900 + b"]" * 1900 + b"}", None),
        (b'{"model": "fake-chat", "metadata": ' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}", "invalid_value"),
        (b'{"model": "fake-chat", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}', "invalid_value"),
        (b"[]", "invalid_value"),
        (b"", "invalid_json"),
    ],
)
def test_malformed_bodies_are_400s(client: TestClient, raw: bytes, code: str | None) -> None:
    r = client.post(RESPONSES, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, code=code)
    assert create(client).status_code == 200  # nothing broke


def test_a_body_over_the_limit_is_413_and_unknown_ids_are_404(client: TestClient) -> None:
    items = [{"role": "user", "content": "x" * 100}] * 100  # over the route tests' 4 KiB body limit
    assert_error(create(client, input=items), 413)
    assert_error(client.get(f"{RESPONSES}/{'r' * 5000}"), 404)
    assert_error(client.get(f"{RESPONSES}/resp_%00%ff"), 404)
    assert_error(client.post(f"{RESPONSES}/resp_1"), 405)


def test_a_client_that_leaves_mid_stream_stops_it_and_nothing_is_stored(plughost_app: Any) -> None:
    app = plughost_app(plugins=[FakePlugin([fake_spec("slow", Task.CHAT, token_delay_s=0.02)])])
    body = json.dumps({"model": "slow", "stream": True, "input": " ".join(["word"] * 200)}).encode()
    with TestClient(app) as client:
        chunks = client.blocking_portal.call(lambda: post_and_leave(app, RESPONSES, body, after=4))
        created = json.loads(b"".join(chunks).split(b"data: ", 1)[1].split(b"\n", 1)[0])
        deadline = time.monotonic() + 5
        while client.get("/v1/models/slow").json()["status"]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/v1/models/slow").json()["status"]["in_flight"] == 0
        assert_error(client.get(f"{RESPONSES}/{created['response']['id']}"), 404)  # never finished: not stored
        assert create(client, model="slow", input="again").status_code == 200
