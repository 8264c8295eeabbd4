"""Anthropic's Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` bodies, the
stream's events, and Anthropic's error envelope.

Decoding checks shapes; :meth:`PromptBody.to_domain` maps the rest into the domain request the chat
template already renders: ``system`` (a string or text blocks) becomes the first system message,
``tool_use`` blocks of an assistant turn become its tool calls, ``tool_result`` blocks of a user
turn become ``tool`` messages, ``thinking`` blocks a client replays become the turn's reasoning (the
chat template of a thinking model decides where it is shown again), and ``thinking`` switches a
thinking model's thinking (``enabled`` with its ``budget_tokens``, ``disabled``, ``adaptive``: the
model's default). What clients such as Claude Code send besides (``cache_control``, ``metadata``,
``context_management``, ``output_config.effort``, beta headers) is accepted and ignored.
Every 400 names the Messages field (``messages[1].content[0].tool_use_id``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, SamplingParams, Tool, ToolCall, ToolChoice
from host.contract.errors import InvalidRequest, PlughostError
from host.protocol.common import WireRequest

#: Anthropic's rule for custom tool names.
ToolName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
#: The most stop sequences a request may give (each is checked after every token).
MAX_STOP_SEQUENCES = 64


# -- request content blocks ---------------------------------------------------------------------------


class TextBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    """``{"type": "text", "text": ...}`` (``cache_control`` and ``citations`` are ignored)."""

    text: str


class ImageBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="image"):
    """An image: accepted by the schema, refused by text models with a 400 naming the block."""

    source: dict[str, Any] | None = None


class DocumentBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="document"):
    """A document (PDF, text source): refused with a 400 naming the block."""

    source: dict[str, Any] | None = None


class ToolUseBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="tool_use"):
    """A call the assistant made, replayed in the history; ``input`` is its arguments object."""

    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="tool_result"):
    """The result of the call ``tool_use_id``, sent in a user turn."""

    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="thinking"):
    """A thinking block a client replays in an assistant turn: the turn's reasoning (its signature is
    not checked)."""

    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, kw_only=True, tag_field="type", tag="redacted_thinking"):
    """An encrypted thinking block a client replays (dropped: no model here can read it)."""

    data: str = ""


ContentBlock = (
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)


class InputMessage(msgspec.Struct, kw_only=True):
    """One turn. ``system`` turns inside the conversation are Claude Code's (a beta it always asks for)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


# -- tools ---------------------------------------------------------------------------------------------


class ToolDefinition(msgspec.Struct, kw_only=True):
    """An entry of ``tools``: a custom tool (``input_schema``). Anthropic's server tools (``type``
    ``web_search_20250305``, ``bash_20250124``, ...) are a 400 naming the tool."""

    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoiceAuto(msgspec.Struct, kw_only=True, tag_field="type", tag="auto"):
    """The model decides (the default with tools)."""

    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(msgspec.Struct, kw_only=True, tag_field="type", tag="any"):
    """The model calls at least one tool, any of them."""

    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(msgspec.Struct, kw_only=True, tag_field="type", tag="tool"):
    """The model calls the tool ``name``."""

    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(msgspec.Struct, kw_only=True, tag_field="type", tag="none"):
    """The model calls no tool (the tools are not shown to it)."""


ToolChoiceWire = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class ThinkingConfig(msgspec.Struct, kw_only=True):
    """``thinking``: ``enabled`` (think first, at most ``budget_tokens`` tokens), ``disabled`` (answer at
    once) or ``adaptive`` (the model's own default, as a request without the field)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None

    @property
    def switch(self) -> bool | None:
        """The domain's thinking switch."""
        return {"enabled": True, "disabled": False}.get(self.type)


class OutputFormatWire(msgspec.Struct, kw_only=True):
    """``output_config.format``: ``{"type": "json_schema", "schema": {...}}`` (structured outputs)."""

    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, kw_only=True):
    """``output_config``: ``format`` is enforced by constrained decoding; ``effort`` is ignored."""

    format: OutputFormatWire | None = None
    effort: str | None = None


class Metadata(msgspec.Struct, kw_only=True):
    """``metadata``: accepted, ignored."""

    user_id: str | None = None


# -- requests ------------------------------------------------------------------------------------------


class PromptBody(WireRequest, kw_only=True):
    """What ``/v1/messages`` and its ``count_tokens`` share: the model, the conversation and the tools."""

    model: str
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoiceWire | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None

    def to_domain(self, sampling: SamplingParams | None = None) -> ChatRequest:
        """The domain request (one choice); 400s name the Messages field."""
        tools, choice = _tools(self.tools, self.tool_choice)
        output = OutputFormat()
        if self.output_config is not None and self.output_config.format is not None:
            output = OutputFormat(kind="json_schema", schema=self.output_config.format.schema)
            if choice.mode in ("required", "function"):
                raise InvalidRequest(
                    "output_config.format cannot be combined with a tool_choice that forces a call.",
                    param="output_config.format",
                )
        messages = [ChatMessage(role="system", content=_system(self.system))] if self.system else []
        for i, m in enumerate(self.messages):
            messages.extend(_turn(i, m))
        if self.messages[-1].role == "assistant":
            raise InvalidRequest(
                "a final assistant message (a prefill to continue) is not supported; end with a user message.",
                param=f"messages[{len(self.messages) - 1}].role",
            )
        thinking = self.thinking
        return ChatRequest(
            model=self.model,
            messages=tuple(messages),
            sampling=sampling or SamplingParams(),
            tools=tools,
            tool_choice=choice,
            output=output,
            thinking=thinking.switch if thinking else None,
            thinking_budget=thinking.budget_tokens if thinking and thinking.type == "enabled" else None,
        )


class MessagesRequest(PromptBody, kw_only=True):
    """``POST /v1/messages``: ``max_tokens`` is required, as Anthropic requires it."""

    max_tokens: Annotated[int, Meta(ge=1)]
    stop_sequences: Annotated[list[str], Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool | None = False
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: Metadata | None = None

    def to_request(self) -> ChatRequest:
        """The domain request with the sampling fields."""
        stop = tuple(self.stop_sequences or ())
        for i, s in enumerate(stop):
            if not s:
                raise InvalidRequest("stop sequences must not be empty.", param=f"stop_sequences[{i}]")
        return self.to_domain(
            SamplingParams(
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k or None,
                stop=stop,
            )
        )


class CountTokensRequest(PromptBody, kw_only=True):
    """``POST /v1/messages/count_tokens``: the prompt of a Messages request, counted, not answered."""


class CountTokensResponse(msgspec.Struct, kw_only=True):
    """Tokens the prompt takes: the conversation and the tools as the model's chat template renders them."""

    input_tokens: int


def _system(system: str | list[TextBlock] | None) -> str:
    if isinstance(system, list):
        return "\n".join(b.text for b in system)
    return system or ""


def _turn(index: int, m: InputMessage) -> list[ChatMessage]:
    """The domain messages of one turn: a user turn's tool results become ``tool`` messages (in
    their place among its text), an assistant turn's ``tool_use`` blocks its calls and its
    ``thinking`` blocks its reasoning."""
    if isinstance(m.content, str):
        return [ChatMessage(role=m.role, content=m.content)]
    out: list[ChatMessage] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    thoughts: list[str] = []
    for j, block in enumerate(m.content):
        where = f"messages[{index}].content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            if m.role != "assistant":
                raise InvalidRequest("tool_use blocks belong in assistant messages.", param=f"{where}.type")
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(ToolCall(index=len(calls), id=block.id, name=block.name, arguments=arguments))
        elif isinstance(block, ToolResultBlock):
            if m.role != "user":
                raise InvalidRequest("tool_result blocks belong in user messages.", param=f"{where}.type")
            if texts:
                out.append(ChatMessage(role=m.role, content="".join(texts)))
                texts = []
            out.append(ChatMessage(role="tool", content=_result_text(where, block), tool_call_id=block.tool_use_id))
        elif isinstance(block, ImageBlock | DocumentBlock):
            raise InvalidRequest(
                f"{_KIND[type(block)]} content is not supported by text models.", param=f"{where}.type"
            )
        elif isinstance(block, ThinkingBlock) and m.role == "assistant" and block.thinking:
            thoughts.append(block.thinking)
        # redacted_thinking blocks, and thinking outside assistant turns: dropped
    reasoning = "\n\n".join(thoughts) or None
    if calls or texts or reasoning or not out:
        out.append(ChatMessage(m.role, "".join(texts), tool_calls=tuple(calls), reasoning=reasoning))
    return out


_KIND: dict[type, str] = {ImageBlock: "image", DocumentBlock: "document"}


def _result_text(where: str, block: ToolResultBlock) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    texts = []
    for k, part in enumerate(block.content):
        if not isinstance(part, TextBlock):
            raise InvalidRequest(
                f"{_KIND[type(part)]} content is not supported by text models.", param=f"{where}.content[{k}].type"
            )
        texts.append(part.text)
    return "".join(texts)


def _tools(defs: list[ToolDefinition] | None, choice: ToolChoiceWire | None) -> tuple[tuple[Tool, ...], ToolChoice]:
    """``tools`` and ``tool_choice`` → the domain's (auto → auto, any → required, tool → a named
    function, none → none; ``disable_parallel_tool_use`` → one call at most)."""
    tools: list[Tool] = []
    for i, t in enumerate(defs or ()):
        if t.type not in (None, "custom"):
            raise InvalidRequest(
                f"tool '{t.name}' of type '{t.type}' is not supported; only custom tools (with input_schema).",
                param=f"tools[{i}].type",
            )
        if t.input_schema is None:
            raise InvalidRequest("a custom tool needs its input_schema.", param=f"tools[{i}].input_schema")
        if t.input_schema.get("type", "object") != "object":
            raise InvalidRequest("input_schema must be an object schema.", param=f"tools[{i}].input_schema")
        if any(t.name == other.name for other in tools):
            raise InvalidRequest(f"tool name '{t.name}' is given twice.", param=f"tools[{i}].name")
        tools.append(Tool(name=t.name, description=t.description, parameters=t.input_schema))
    if choice is None:
        choice = ToolChoiceAuto() if tools else ToolChoiceNone()
    if isinstance(choice, ToolChoiceNone) or (not tools and isinstance(choice, ToolChoiceAuto)):
        return tuple(tools), ToolChoice(mode="none")
    if not tools:
        raise InvalidRequest(f"tool_choice '{choice.__struct_config__.tag}' needs tools.", param="tool_choice")
    parallel = not choice.disable_parallel_tool_use
    if isinstance(choice, ToolChoiceTool):
        if all(t.name != choice.name for t in tools):
            raise InvalidRequest(
                f"tool_choice names tool '{choice.name}', which is not in tools.", param="tool_choice.name"
            )
        return tuple(tools), ToolChoice(mode="function", name=choice.name, parallel=False)
    mode = "required" if isinstance(choice, ToolChoiceAny) else "auto"
    return tuple(tools), ToolChoice(mode=mode, parallel=parallel)


# -- responses -----------------------------------------------------------------------------------------


class TextContent(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    """Generated text."""

    text: str


class ThinkingContent(msgspec.Struct, kw_only=True, tag_field="type", tag="thinking"):
    """A thinking model's thinking, before its answer; ``signature`` is :data:`SIGNATURE`."""

    thinking: str
    signature: str


#: The ``signature`` of every thinking block: Anthropic's SDK types require one and strict clients
#: refuse an empty one, but nothing here verifies it (replayed thinking is taken as it comes).
SIGNATURE = "plughost"


class ToolUseContent(msgspec.Struct, kw_only=True, tag_field="type", tag="tool_use"):
    """A call the model made: ``input`` is its arguments object."""

    id: str
    name: str
    input: dict[str, Any]


class Usage(msgspec.Struct, kw_only=True):
    """Token counts (no prompt caching is reported: its fields are 0)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Message(msgspec.Struct, kw_only=True):
    """The answer (``type: "message"``); in a stream, ``message_start`` carries it without content."""

    id: str
    model: str
    content: list[ThinkingContent | TextContent | ToolUseContent]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"


class MessageStart(msgspec.Struct, kw_only=True, tag_field="type", tag="message_start"):
    """The stream's first event."""

    message: Message


class Ping(msgspec.Struct, kw_only=True, tag_field="type", tag="ping"):
    """Sent after ``message_start``, as Anthropic does."""


class TextStart(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    """A text block as it opens (empty)."""

    text: str = ""


class ThinkingStart(msgspec.Struct, kw_only=True, tag_field="type", tag="thinking"):
    """A thinking block as it opens (empty; its signature follows in a ``signature_delta``)."""

    thinking: str = ""
    signature: str = ""


class ToolUseStart(msgspec.Struct, kw_only=True, tag_field="type", tag="tool_use"):
    """A tool_use block as it opens: id and name, ``input`` empty (its JSON follows in deltas)."""

    id: str
    name: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class ContentBlockStart(msgspec.Struct, kw_only=True, tag_field="type", tag="content_block_start"):
    """A content block opens at ``index``."""

    index: int
    content_block: ThinkingStart | TextStart | ToolUseStart


class TextDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="text_delta"):
    """More text of a text block."""

    text: str


class ThinkingDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="thinking_delta"):
    """More text of a thinking block."""

    thinking: str


class SignatureDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="signature_delta"):
    """A thinking block's signature, just before the block stops."""

    signature: str


class InputJsonDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="input_json_delta"):
    """More of a tool_use block's input JSON (clients concatenate the pieces)."""

    partial_json: str


class ContentBlockDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="content_block_delta"):
    """A piece of the block at ``index``."""

    index: int
    delta: ThinkingDelta | SignatureDelta | TextDelta | InputJsonDelta


class ContentBlockStop(msgspec.Struct, kw_only=True, tag_field="type", tag="content_block_stop"):
    """The block at ``index`` is complete."""

    index: int


class StopInfo(msgspec.Struct, kw_only=True):
    """``message_delta.delta``: why the message ended."""

    stop_reason: StopReason
    stop_sequence: str | None = None


class MessageDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="message_delta"):
    """The message's end: its stop reason and the final usage (input tokens included)."""

    delta: StopInfo
    usage: Usage


class MessageStop(msgspec.Struct, kw_only=True, tag_field="type", tag="message_stop"):
    """The stream's last event."""


StreamEvent = (
    MessageStart | Ping | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
)


# -- errors --------------------------------------------------------------------------------------------


class AnthropicErrorBody(msgspec.Struct, kw_only=True):
    """``error`` of the envelope: one of Anthropic's error types and a message."""

    type: str
    message: str


class AnthropicErrorEnvelope(msgspec.Struct, kw_only=True):
    """``{"type": "error", "error": {...}, "request_id": ...}``: every failed Messages request's body
    (and its streamed ``error`` event)."""

    error: AnthropicErrorBody
    type: Literal["error"] = "error"
    request_id: str | None = None


#: Anthropic's error type for each HTTP status (its API documents one per status).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(error: PlughostError, request_id: str | None = None) -> AnthropicErrorEnvelope:
    """``error`` (already as a client may see it) in Anthropic's envelope. The status stays the
    error's own; the field a 400 is about leads the message, as in Anthropic's own messages."""
    kind = _ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    message = error.message
    if error.param and not message.startswith(error.param) and f"'{error.param}'" not in message:
        message = f"{error.param}: {message}"
    return AnthropicErrorEnvelope(error=AnthropicErrorBody(type=kind, message=message), request_id=request_id)
