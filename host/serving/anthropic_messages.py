"""The Anthropic Messages dialect (``POST /v1/messages``) over the chat service.

One choice per request. The answer's ``content`` is a thinking block (a thinking model's
reasoning), a text block (when the model wrote text) and a ``tool_use`` block per call;
``stop_reason`` is ``end_turn``, ``stop_sequence`` (with the sequence), ``max_tokens`` or
``tool_use``. Streamed, it is Anthropic's named events: ``message_start``, ``ping``, then per block
``content_block_start`` / ``content_block_delta`` (``thinking_delta`` then one ``signature_delta``,
``text_delta``, ``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (stop
reason, usage) and
``message_stop``; a failure after the headers is an ``error`` event in Anthropic's envelope.
Keep-alives while the model loads stay SSE comments rather than ``ping`` events: Anthropic's
documented order has nothing before ``message_start`` (older SDKs raised on it), and every SSE
client skips comments; the ``anthropic`` SDK and Claude Code read through them (tested).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from host.contract import request_id
from host.contract.capabilities import Feature
from host.contract.domain import ChatDelta, ToolCall
from host.contract.errors import PlughostError
from host.protocol.anthropic import (
    SIGNATURE,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessagesRequest,
    MessageStart,
    MessageStop,
    Ping,
    SignatureDelta,
    StopInfo,
    StopReason,
    StreamEvent,
    TextContent,
    TextDelta,
    TextStart,
    ThinkingContent,
    ThinkingDelta,
    ThinkingStart,
    ToolUseContent,
    ToolUseStart,
    Usage,
    anthropic_error,
)
from host.serving import sse
from host.serving.generation import Collected, Generation

_encode = msgspec.json.Encoder().encode

_PARAMS = {
    Feature.TOOLS: "tools",
    Feature.OUTPUT_FORMAT: "output_config.format",
    Feature.LOGPROBS: "logprobs",  # never asked for: the Messages API has no logprobs
    Feature.RAW_PROMPT: "messages",
    Feature.THINKING: "thinking",  # enabled, asked of a model that cannot think: refused, as Anthropic does
}


class AnthropicMessages:
    """A decoded Messages request (:class:`~host.serving.service.Dialect`)."""

    per_prompt = 1

    def __init__(self, body: MessagesRequest) -> None:
        self.body = body
        self.requests = [body.to_request()]
        self.stream = bool(body.stream)

    def param(self, feature: Feature) -> str:
        """The Messages field of ``feature``."""
        return param(feature)

    def field(self, param: str | None) -> str | None:
        """Messages names a structured output ``output_config.format`` and a thinking budget
        ``thinking.budget_tokens``; its other fields keep the Chat Completions names (``max_tokens``,
        ``messages``, ``tools``)."""
        return field(param)

    def response(self, model: str, results: list[Collected], generation: Generation) -> Message:
        """The ``message`` object."""
        [c] = results
        content: list[ThinkingContent | TextContent | ToolUseContent] = []
        if c.reasoning:
            content.append(ThinkingContent(thinking=c.reasoning, signature=SIGNATURE))
        if c.text:
            content.append(TextContent(text=c.text))
        content += [ToolUseContent(id=t.id, name=t.name, input=_input(t)) for t in c.calls]
        reason, sequence = stop_reason(c.finish_reason, c.stop_sequence, bool(c.calls))
        usage = Usage(input_tokens=c.prompt_tokens, output_tokens=c.completion_tokens)
        return Message(
            id=new_message_id(), model=model, content=content, stop_reason=reason, stop_sequence=sequence, usage=usage
        )

    async def events(self, generation: Generation) -> AsyncIterator[bytes]:
        """Anthropic's events (see the module docstring), a block opened as its first piece arrives."""
        blocks = _Blocks()
        started = False
        async for _, delta in generation.deltas():
            if not started:
                started = True
                usage = Usage(input_tokens=delta.prompt_tokens, output_tokens=0)
                start = Message(
                    id=new_message_id(),
                    model=generation.model,
                    content=[],
                    stop_reason=None,
                    stop_sequence=None,
                    usage=usage,
                )
                yield event(MessageStart(message=start))
                yield event(Ping())
            for e in blocks.add(delta):
                yield event(e)
            if delta.finish_reason is not None:
                for e in blocks.close():
                    yield event(e)
                reason, sequence = stop_reason(delta.finish_reason, delta.stop_sequence, blocks.calls > 0)
                usage = Usage(input_tokens=delta.prompt_tokens, output_tokens=delta.completion_tokens)
                yield event(MessageDelta(delta=StopInfo(stop_reason=reason, stop_sequence=sequence), usage=usage))
                yield event(MessageStop())

    def error_event(self, error: PlughostError) -> bytes:
        """The error in Anthropic's envelope, as an ``error`` event."""
        return sse.named("error", _encode(anthropic_error(error, request_id.current.get())))

    def end(self) -> bytes:
        """Nothing: ``message_stop`` ends an Anthropic stream."""
        return b""


def param(feature: Feature) -> str:
    """The Messages field that asks for ``feature`` (named by a capability 400)."""
    return _PARAMS[feature]


def field(param: str | None) -> str | None:
    """A field of the Chat Completions vocabulary backends use, as Messages names it."""
    if param is None:
        return None
    if param.startswith("response_format"):
        return "output_config.format" + param[len("response_format") :].replace(".json_schema.", ".", 1)
    return "thinking.budget_tokens" if param == "thinking_budget" else param


def new_message_id() -> str:
    """An Anthropic-style message id."""
    return f"msg_{uuid.uuid4().hex}"


def event(e: StreamEvent) -> bytes:
    """One named SSE event: the name is the payload's ``type``."""
    return sse.named(e.__struct_config__.tag, _encode(e))  # type: ignore[arg-type]  # every event has a str tag


def stop_reason(finish_reason: str, sequence: str | None, called: bool) -> tuple[StopReason, str | None]:
    """Anthropic's ``stop_reason`` (and ``stop_sequence``) of a domain finish reason."""
    if finish_reason == "length":
        return "max_tokens", None
    if called or finish_reason == "tool_calls":
        return "tool_use", None
    if sequence is not None:
        return "stop_sequence", sequence
    return "end_turn", None


def _input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the ``input`` object (``{}`` for arguments cut short by ``max_tokens``)."""
    try:
        value = json.loads(call.arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Blocks:
    """The content blocks of a stream: their indexes, and the thinking or text block that is open."""

    def __init__(self) -> None:
        self.next = 0
        self.thinking_open: int | None = None
        self.text_open: int | None = None
        self.calls = 0

    def add(self, delta: ChatDelta) -> list[StreamEvent]:
        """The events of one delta: its reasoning into the open thinking block (opened if need be),
        its text into the open text block (the thinking block closed first), then each call as a
        whole tool_use block (it arrives complete)."""
        out: list[StreamEvent] = []
        if delta.reasoning:
            if self.thinking_open is None:
                self.thinking_open = self._open()
                out.append(ContentBlockStart(index=self.thinking_open, content_block=ThinkingStart()))
            out.append(ContentBlockDelta(index=self.thinking_open, delta=ThinkingDelta(thinking=delta.reasoning)))
        if delta.text:
            out += self._close_thinking()
            if self.text_open is None:
                self.text_open = self._open()
                out.append(ContentBlockStart(index=self.text_open, content_block=TextStart()))
            out.append(ContentBlockDelta(index=self.text_open, delta=TextDelta(text=delta.text)))
        for call in delta.tool_calls:
            out += self.close()
            index = self._open()
            self.calls += 1
            out.append(ContentBlockStart(index=index, content_block=ToolUseStart(id=call.id, name=call.name)))
            out.append(ContentBlockDelta(index=index, delta=InputJsonDelta(partial_json=call.arguments)))
            out.append(ContentBlockStop(index=index))
        return out

    def close(self) -> list[StreamEvent]:
        """Close the open thinking or text block, if any."""
        if self.text_open is None:
            return self._close_thinking()
        index, self.text_open = self.text_open, None
        return [ContentBlockStop(index=index)]

    def _close_thinking(self) -> list[StreamEvent]:
        """The open thinking block's signature and its end."""
        if self.thinking_open is None:
            return []
        index, self.thinking_open = self.thinking_open, None
        return [
            ContentBlockDelta(index=index, delta=SignatureDelta(signature=SIGNATURE)),
            ContentBlockStop(index=index),
        ]

    def _open(self) -> int:
        index, self.next = self.next, self.next + 1
        return index
