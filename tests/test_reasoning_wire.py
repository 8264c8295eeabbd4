"""Reasoning on every chat dialect against a scripted thinking fake: the switches each API spells,
replayed reasoning, the answer's reasoning fields and stream events, reasoning tokens, and what a
model that cannot think does with a request to think.

The same through the ``openai`` and ``anthropic`` SDKs and LangChain on the real tiny Qwen3: the
plugin's ``test_chat_qwen_awq_reasoning_http.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.capabilities import Capabilities
from host.contract.domain import ChatDelta, ChatMessage, ChatRequest, ToolCall
from host.contract.spec import Task
from host.protocol.chat import ChatCompletionRequest
from host.protocol.responses import ResponsesRequest
from host.serving.anthropic_messages import field as messages_field
from host.testing.anthropic import assert_anthropic_error, check_message, message_from_stream, named_events
from host.testing.fakes import FakeBackend, FakePlugin, fake_spec
from host.testing.http import assert_error, sse_events
from host.testing.pytest_plugin import CPU_ONLY, make_config

USER = [{"role": "user", "content": "hi"}]
REASONING, ANSWER = ["Let me", " think.", " Done."], ["The", " answer."]


class Thinker(FakeBackend):
    """Thinks ``REASONING`` (the last piece in the same delta as the answer's first, as a parser
    releases them at the block's end), then answers ``ANSWER``; with thinking off it only answers.
    A ``max_tokens`` under 3 cuts it off while thinking. Records every request."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        self.calls.add("generate", self.spec.id, request)
        limit = request.sampling.max_tokens or 64
        thinks = request.thinking is not False
        if thinks and limit < len(REASONING):
            for piece in REASONING[:limit]:
                yield ChatDelta(reasoning=piece)
            yield ChatDelta(finish_reason="length", prompt_tokens=3, completion_tokens=limit, reasoning_tokens=limit)
            return
        if thinks:
            yield ChatDelta(reasoning=REASONING[0])
            yield ChatDelta(reasoning=REASONING[1])
            yield ChatDelta(reasoning=REASONING[2], text=ANSWER[0])
        else:
            yield ChatDelta(text=ANSWER[0])
        yield ChatDelta(text=ANSWER[1])
        spent = len(REASONING) + 2 if thinks else 0  # its tags count too
        yield ChatDelta(finish_reason="stop", prompt_tokens=3, completion_tokens=spent + 2, reasoning_tokens=spent)


@pytest.fixture(scope="module")
def plugin() -> FakePlugin:
    thinker = fake_spec("thinker", Task.CHAT, capabilities=Capabilities(thinking=True, context_length=4096))
    return FakePlugin(
        [msgspec.structs.replace(thinker, backend=f"{__name__}:Thinker"), fake_spec("fake-chat", Task.CHAT)]
    )


@pytest.fixture(scope="module")
def client(plugin: FakePlugin) -> Iterator[TestClient]:
    config = make_config({"scheduler": {"max_resident_per_task": 2, "min_residency_s": 0}})
    with TestClient(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as c:
        yield c


def last_request(plugin: FakePlugin, model: str = "thinker") -> ChatRequest:
    request: ChatRequest = plugin.calls.of("generate", model)[-1]
    return request


def chat(client: TestClient, model: str = "thinker", **body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": USER, **body})


def responses(client: TestClient, model: str = "thinker", **body: Any) -> httpx.Response:
    return client.post("/v1/responses", json={"model": model, "input": "hi", **body})


def messages(client: TestClient, model: str = "thinker", **body: Any) -> httpx.Response:
    return client.post("/v1/messages", json={"model": model, "max_tokens": 64, "messages": USER, **body})


# -- the switches -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "thinking"),
    [
        ({}, None),
        ({"chat_template_kwargs": {"enable_thinking": False}}, False),
        ({"chat_template_kwargs": {"enable_thinking": True}}, True),
        ({"chat_template_kwargs": {"enable_thinking": None, "other": 1}}, None),
        ({"enable_thinking": False}, False),  # Qwen's own API (DashScope)
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, False),
        ({"reasoning_effort": "low"}, True),
        ({"reasoning_effort": "xhigh"}, True),
        # first to last: chat_template_kwargs, enable_thinking, reasoning_effort
        ({"chat_template_kwargs": {"enable_thinking": True}, "enable_thinking": False}, True),
        ({"enable_thinking": True, "reasoning_effort": "none"}, True),
        ({"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "high"}, False),
    ],
)
def test_chat_completions_switches_resolve_first_to_last(body: dict[str, Any], thinking: bool | None) -> None:
    wire = msgspec.convert({"model": "m", "messages": USER, **body}, ChatCompletionRequest)
    assert wire.to_domain().thinking is thinking


def test_the_thinking_budget_and_the_responses_effort_reach_the_domain_request() -> None:
    wire = msgspec.convert({"model": "m", "messages": USER, "thinking_budget": 7}, ChatCompletionRequest)
    assert wire.to_domain().thinking_budget == 7
    for effort, thinking in (("none", False), ("minimal", False), ("medium", True), (None, None)):
        body = msgspec.convert({"model": "m", "input": "hi", "reasoning": {"effort": effort}}, ResponsesRequest)
        assert body.to_domain()[0].thinking is thinking


def test_anthropic_thinking_maps_to_the_switch_and_its_budget(client: TestClient, plugin: FakePlugin) -> None:
    for thinking, switch, budget in (
        ({"type": "enabled", "budget_tokens": 1024}, True, 1024),
        ({"type": "disabled"}, False, None),
        ({"type": "adaptive"}, None, None),  # Claude Code's default: the model's own
    ):
        assert messages(client, thinking=thinking).status_code == 200
        request = last_request(plugin)
        assert (request.thinking, request.thinking_budget) == (switch, budget)
    assert messages_field("thinking_budget") == "thinking.budget_tokens"  # the backend's 400 for a negative budget


def test_bad_switches_are_400s_naming_the_field(client: TestClient) -> None:
    assert_error(
        chat(client, chat_template_kwargs={"enable_thinking": "no"}), 400, param="chat_template_kwargs.enable_thinking"
    )
    assert_error(chat(client, reasoning_effort="max"), 400, param="reasoning_effort")
    assert_error(responses(client, reasoning={"effort": "max"}), 400, param="reasoning.effort")
    assert "thinking.type" in assert_anthropic_error(messages(client, thinking={"type": "sometimes"}), 400)


# -- a model that cannot think ----------------------------------------------------------------------------


def test_a_model_that_cannot_think_refuses_where_its_api_refuses(client: TestClient, plugin: FakePlugin) -> None:
    """OpenAI refuses ``reasoning_effort`` and Anthropic ``thinking`` for a model that cannot reason;
    vLLM passes ``chat_template_kwargs`` to a template that ignores them. Off is never refused."""
    error = assert_error(chat(client, "fake-chat", reasoning_effort="high"), 400, param="reasoning_effort")
    assert "does not support thinking" in error["message"]
    assert_error(responses(client, "fake-chat", reasoning={"effort": "low"}), 400, param="reasoning.effort")
    refused = messages(client, "fake-chat", thinking={"type": "enabled", "budget_tokens": 2048})
    assert assert_anthropic_error(refused, 400, "invalid_request_error").startswith("thinking: ")
    count = {"model": "fake-chat", "messages": USER, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert_anthropic_error(client.post("/v1/messages/count_tokens", json=count), 400)
    generated = plugin.calls.count("generate", "fake-chat")
    for ok in (
        chat(client, "fake-chat", reasoning_effort="none"),
        chat(client, "fake-chat", chat_template_kwargs={"enable_thinking": True}),
        chat(client, "fake-chat", enable_thinking=True, thinking_budget=5),
        responses(client, "fake-chat", reasoning={"effort": "minimal", "summary": "auto"}),
        responses(client, "fake-chat", reasoning={"summary": "auto"}),  # the Codex CLI's
        messages(client, "fake-chat", thinking={"type": "disabled"}),
        messages(client, "fake-chat", thinking={"type": "adaptive"}),
    ):
        assert ok.status_code == 200, ok.text
    assert plugin.calls.count("generate", "fake-chat") == generated + 7
    body = chat(client, "fake-chat").json()
    assert set(body["choices"][0]["message"]) == {"role", "content"}  # no reasoning fields without reasoning
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


# -- replayed reasoning -----------------------------------------------------------------------------------


def test_chat_history_replays_reasoning_on_assistant_messages() -> None:
    history = [
        {"role": "user", "content": "a", "reasoning_content": "ignored on a user message"},
        {"role": "assistant", "content": "b", "reasoning_content": "first thoughts"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": None, "reasoning": "cut off while thinking"},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": "e", "reasoning_content": "both", "reasoning": "both sent"},
        {"role": "user", "content": "f"},
    ]
    wire = msgspec.convert({"model": "m", "messages": history}, ChatCompletionRequest)
    assert [m.reasoning for m in wire.to_domain().messages] == [
        None,
        "first thoughts",
        None,
        "cut off while thinking",
        None,
        "both",
        None,
    ]


def test_responses_input_replays_reasoning_items_on_the_assistant_turn_that_follows() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    items = [
        {"role": "user", "content": "a"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "I need f."}],
        },
        call,
        {**call, "call_id": "c2"},
        {"type": "function_call_output", "call_id": "c1", "output": "1"},
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Summed up."}]},
        {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": "opaque"},  # nothing to read
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
        {"type": "reasoning", "id": "rs_4", "summary": [{"type": "summary_text", "text": "dropped"}]},
        {"role": "user", "content": "b"},
    ]
    body = msgspec.convert({"model": "m", "input": items}, ResponsesRequest)
    turns = body.to_domain()[0].messages
    assert [(m.role, m.reasoning) for m in turns] == [
        ("user", None),
        ("assistant", "I need f."),
        ("tool", None),
        ("assistant", "Summed up."),
        ("user", None),
    ]
    assert [c.id for c in turns[1].tool_calls] == ["c1", "c2"]  # both calls in the turn the reasoning opened


def test_a_stored_response_replays_its_reasoning_to_a_follow_up(client: TestClient, plugin: FakePlugin) -> None:
    first = responses(client).json()
    responses(client, input="and now?", previous_response_id=first["id"])
    turns = last_request(plugin).messages
    assert turns[1] == ChatMessage("assistant", "The answer.", reasoning="Let me think. Done.")
    assert turns[2] == ChatMessage("user", "and now?")


# -- answers: Chat Completions ----------------------------------------------------------------------------


def test_chat_answers_reasoning_in_both_fields_and_counts_its_tokens(client: TestClient) -> None:
    body = chat(client).json()
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "The answer.",
        "reasoning_content": "Let me think. Done.",
        "reasoning": "Let me think. Done.",
    }
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    off = chat(client, reasoning_effort="none").json()
    assert set(off["choices"][0]["message"]) == {"role", "content"}
    assert off["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_chat_streams_reasoning_in_chunks_of_its_own(client: TestClient) -> None:
    r = chat(client, stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(e) for e in sse_events(r) if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert all(not ("content" in d and ("reasoning_content" in d or "reasoning" in d)) for d in deltas[1:])
    thinking = [d for d in deltas if "reasoning_content" in d]
    assert all(d["reasoning_content"] == d["reasoning"] for d in thinking)
    assert [d["reasoning"] for d in thinking] == REASONING
    assert "".join(d.get("content") or "" for d in deltas) == "The answer."
    first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert first_text > max(i for i, d in enumerate(deltas) if "reasoning" in d)  # reasoning comes first
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}


def test_legacy_completions_have_no_reasoning_fields(client: TestClient) -> None:
    body = client.post("/v1/completions", json={"model": "fake-chat", "prompt": "<think>x</think> y"}).json()
    assert body["choices"][0]["text"].startswith("echo: <think>x</think>")  # passed through unparsed
    assert "completion_tokens_details" not in body["usage"]


# -- answers: Responses -------------------------------------------------------------------------------------


def _reasoning_item(text: str, status: str) -> dict[str, Any]:
    return {"type": "reasoning", "status": status, "content": [{"type": "reasoning_text", "text": text}], "summary": []}


def test_responses_answer_a_reasoning_item_before_the_message(client: TestClient) -> None:
    body = responses(client, reasoning={"effort": "high", "summary": "auto"}).json()
    reasoning, message = body["output"]
    assert reasoning["id"].startswith("rs_") and {**reasoning, "id": None} == {
        **_reasoning_item("Let me think. Done.", "completed"),
        "id": None,
    }
    assert message["type"] == "message" and message["content"][0]["text"] == "The answer."
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 5}
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}  # echoed; no summary is written
    off = responses(client, reasoning={"effort": "none"}).json()
    assert [i["type"] for i in off["output"]] == ["message"] and off["reasoning"]["effort"] == "none"


def test_responses_stream_reasoning_text_events_then_the_message(client: TestClient) -> None:
    r = responses(client, stream=True)
    events = named_events(r.text)
    names = [name for name, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * 3,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 2,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    data = [d for _, d in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    added, part = data[2], data[3]
    item_id = added["item"]["id"]
    assert added["item"] == {"type": "reasoning", "id": item_id, "status": "in_progress", "content": [], "summary": []}
    assert part["part"] == {"type": "reasoning_text", "text": ""} and part["item_id"] == item_id
    assert all(d["item_id"] == item_id and d["output_index"] == 0 for d in data[4:8])
    assert "".join(d["delta"] for d in data[4:7]) == data[7]["text"] == "Let me think. Done."
    assert data[9]["item"] == {**_reasoning_item("Let me think. Done.", "completed"), "id": item_id}
    assert data[10]["output_index"] == 1
    final = data[-1]["response"]
    assert final["output"][0] == data[9]["item"] and final["usage"]["output_tokens_details"]["reasoning_tokens"] == 5


def test_responses_cut_off_while_thinking_agree_plain_and_streamed(client: TestClient) -> None:
    plain = responses(client, max_output_tokens=2).json()
    streamed = named_events(responses(client, max_output_tokens=2, stream=True).text)[-1][1]["response"]
    for body in (plain, streamed):
        assert body["status"] == "incomplete"
        assert [(i["type"], i["status"]) for i in body["output"]] == [
            ("reasoning", "incomplete"),
            ("message", "incomplete"),  # an empty answer is still one (empty) message
        ]
        assert body["output"][0]["content"][0]["text"] == "Let me think."


# -- answers: Messages ---------------------------------------------------------------------------------------


def test_messages_answer_a_signed_thinking_block_plain_and_streamed(client: TestClient) -> None:
    plain = messages(client).json()
    check_message(plain)
    thinking, text = plain["content"]
    assert thinking == {"type": "thinking", "thinking": "Let me think. Done.", "signature": thinking["signature"]}
    assert text == {"type": "text", "text": "The answer."}
    streamed = message_from_stream(messages(client, stream=True).text)
    assert streamed["content"] == plain["content"] and streamed["usage"] == plain["usage"]
    events = named_events(messages(client, stream=True).text)
    starts = [d["content_block"] for name, d in events if name == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    off = messages(client, thinking={"type": "disabled"}).json()
    assert [b["type"] for b in off["content"]] == ["text"]


def test_messages_cut_off_while_thinking_is_a_thinking_block_only(client: TestClient) -> None:
    plain = messages(client, max_tokens=2).json()
    assert plain["stop_reason"] == "max_tokens" and [b["type"] for b in plain["content"]] == ["thinking"]
    assert message_from_stream(messages(client, max_tokens=2, stream=True).text)["content"] == plain["content"]


def test_reasoning_replayed_in_a_messages_tool_loop(client: TestClient, plugin: FakePlugin) -> None:
    turns = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "thinking", "thinking": "I need the tool.", "signature": "plughost"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    assert messages(client, messages=turns).status_code == 200
    assistant = last_request(plugin).messages[1]
    assert assistant.reasoning == "I need the tool." and assistant.tool_calls == (
        ToolCall(index=0, id="t1", name="get_weather", arguments="{}"),
    )
