"""Checks of Anthropic Messages answers for tests: the error envelope and the stream's grammar.

:func:`message_from_stream` reads a raw SSE body event by event and fails on anything Anthropic's
clients would trip on (an event before ``message_start``, a delta of a block that is not open, a
delta of the wrong kind for its block, a thinking block without exactly one ``signature_delta``
just before its stop, a stream that does not end with ``message_stop``), then returns the message
the events build, to compare with a plain answer.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})
ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)


def assert_anthropic_error(response: httpx.Response, status: int, kind: str | None = None) -> str:
    """Check Anthropic's envelope ``{"type": "error", "error": {"type", "message"}, "request_id"}``
    (and the error type when given); returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return check_error_body(response.json(), kind)


def check_error_body(body: dict[str, Any], kind: str | None = None) -> str:
    """Check one error envelope (a JSON answer's or an ``error`` event's); returns the message."""
    assert body["type"] == "error" and set(body) <= {"type", "error", "request_id"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] in ERROR_TYPES, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return str(body["error"]["message"])


def named_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each event of an SSE body (comments skipped); the name must be the
    data's ``type``, as Anthropic sends them."""
    events = []
    for block in body.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) == {"event", "data"}, block
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"], block
        events.append((fields["event"], data))
    return events


def check_message(message: dict[str, Any]) -> None:
    """Check a whole ``message`` object's shape."""
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["stop_reason"] in STOP_REASONS
    assert (message["stop_sequence"] is not None) == (message["stop_reason"] == "stop_sequence")
    usage = message["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] >= 0
    for i, block in enumerate(message["content"]):
        assert block["type"] in ("thinking", "text", "tool_use"), block
        if block["type"] == "thinking":  # first, signed (clients replay it; strict ones refuse "")
            assert i == 0 and isinstance(block["thinking"], str) and block["signature"], block
        if block["type"] == "tool_use":
            assert block["id"] and block["name"] and isinstance(block["input"], dict)
    if message["stop_reason"] == "tool_use":
        assert any(b["type"] == "tool_use" for b in message["content"])


def message_from_stream(body: str) -> dict[str, Any]:
    """The message a valid Messages stream builds (see the module docstring); an ``error`` event
    must be the last event and is returned as ``{"error": envelope}``."""
    events = named_events(body)
    assert events, "empty stream"
    if events[-1][0] == "error":
        check_error_body(events[-1][1])
        assert all(name != "error" for name, _ in events[:-1])
        return {"error": events[-1][1]}
    assert events[0][0] == "message_start", events[0]
    message = events[0][1]["message"]
    assert message["content"] == [] and message["stop_reason"] is None
    assert [name for name, _ in events[-2:]] == ["message_delta", "message_stop"], events[-2:]
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    signed: set[int] = set()
    open_index: int | None = None
    for name, data in events[1:-2]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(blocks), data
            open_index = data["index"]
            blocks.append(dict(data["content_block"]))
            partial[open_index] = ""
        elif name == "content_block_delta":
            assert data["index"] == open_index, data
            block, delta = blocks[data["index"]], data["delta"]
            assert data["index"] not in signed, f"a delta after the signature: {data}"
            if block["type"] == "thinking":
                assert delta["type"] in ("thinking_delta", "signature_delta"), data
                if delta["type"] == "signature_delta":
                    block["signature"] = delta["signature"]
                    signed.add(data["index"])
                else:
                    block["thinking"] += delta["thinking"]
            elif block["type"] == "text":
                assert delta["type"] == "text_delta", data
                block["text"] += delta["text"]
            else:
                assert block["type"] == "tool_use" and delta["type"] == "input_json_delta", data
                partial[data["index"]] += delta["partial_json"]
        elif name == "content_block_stop":
            assert open_index is not None and data["index"] == open_index, data
            if blocks[open_index]["type"] == "thinking":
                assert open_index in signed, f"a thinking block stopped without its signature_delta: {data}"
            if blocks[open_index]["type"] == "tool_use":
                blocks[open_index]["input"] = json.loads(partial[open_index] or "{}")
            open_index = None
        else:
            raise AssertionError(f"unexpected event {name}: {data}")
    assert open_index is None, "a block was never stopped"
    delta = events[-2][1]
    message = {
        **message,
        "content": blocks,
        "stop_reason": delta["delta"]["stop_reason"],
        "stop_sequence": delta["delta"].get("stop_sequence"),
        "usage": delta["usage"],
    }
    check_message(message)
    return message
