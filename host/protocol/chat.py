"""``POST /v1/chat/completions`` request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from host.contract.domain import ChatMessage, ChatRequest
from host.contract.errors import InvalidRequest
from host.protocol.common import GenerationRequest
from host.protocol.reasoning import Effort, Switch, effort_switch, first_switch, template_switch
from host.protocol.tools import (
    MAX_TOP_LOGPROBS,
    ChoiceLogprobs,
    ResponseFormat,
    ToolCallChunk,
    ToolChoiceWire,
    ToolDefinition,
    WireToolCall,
    check_logprobs,
    history_calls,
    output_to_domain,
    tools_to_domain,
)


class TextPart(msgspec.Struct, kw_only=True):
    """A content part; text models take ``text`` parts only."""

    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class _Message(msgspec.Struct, kw_only=True, tag_field="role"):
    """A message as OpenAI clients send it, told apart by ``role``."""

    name: str | None = None

    def to_domain(self) -> ChatMessage:
        """The domain message."""
        raise NotImplementedError


class _TextMessage(_Message, kw_only=True):
    content: Content
    tool_calls: None = None  # only assistant messages carry calls

    def to_domain(self) -> ChatMessage:
        role = str(self.__struct_config__.tag)
        return ChatMessage(role="system" if role == "developer" else role, content=_text(self.content))


class SystemMessage(_TextMessage, tag="system"):
    """``{"role": "system", "content": ...}``."""


class DeveloperMessage(_TextMessage, tag="developer"):
    """``{"role": "developer", "content": ...}``: OpenAI's newer name of a system message."""


class UserMessage(_TextMessage, tag="user"):
    """``{"role": "user", "content": ...}``."""


class AssistantTurn(_Message, tag="assistant"):
    """An assistant turn of the history: text, tool calls, replayed reasoning (``reasoning_content``
    or ``reasoning``, the OpenAI-compatible servers' fields), any of them (none: an empty turn)."""

    content: Content | None = None
    tool_calls: list[WireToolCall] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None

    def to_domain(self) -> ChatMessage:
        content = "" if self.content is None else _text(self.content)
        return ChatMessage(
            role="assistant",
            content=content,
            tool_calls=history_calls(self.tool_calls),
            reasoning=self.reasoning_content or self.reasoning or None,
        )


class ToolMessage(_Message, tag="tool"):
    """A tool's result: ``tool_call_id`` names the call it answers."""

    content: Content
    tool_call_id: Annotated[str, Meta(min_length=1)]
    tool_calls: None = None

    def to_domain(self) -> ChatMessage:
        return ChatMessage(role="tool", content=_text(self.content), tool_call_id=self.tool_call_id)


WireMessage = SystemMessage | DeveloperMessage | UserMessage | AssistantTurn | ToolMessage


def _text(content: Content) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def message_to_domain(index: int, m: WireMessage) -> ChatMessage:
    """The domain message of ``messages[index]``, for routes that take chat messages without
    generating (``/tokenize``); decoding checked its fields."""
    return m.to_domain()


#: Cross-field rules of :meth:`ChatCompletionRequest.to_domain`, stated in its JSON schema.
#: (One more that JSON schema cannot state: a named ``tool_choice`` must name one of ``tools``.)
CHAT_SCHEMA_RULES: dict[str, Any] = {
    "allOf": [
        # top_logprobs needs logprobs: true
        {
            "if": {"properties": {"top_logprobs": {"type": "integer"}}, "required": ["top_logprobs"]},
            "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
        },
        # a forced call (tool_choice "required" or a named function) needs tools
        # and excludes a JSON response_format
        {
            "if": {
                "properties": {"tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]}},
                "required": ["tool_choice"],
            },
            "then": {
                "properties": {
                    "tools": {"type": "array", "minItems": 1},
                    "response_format": {
                        "anyOf": [{"type": "null"}, {"type": "object", "properties": {"type": {"const": "text"}}}]
                    },
                },
                "required": ["tools"],
            },
        },
    ]
}


class ChatCompletionRequest(GenerationRequest, kw_only=True):
    """The request body: the shared sampling fields plus messages, tools and output format, and the
    thinking switches of a reasoning model, first to last: ``chat_template_kwargs.enable_thinking``
    (vLLM, SGLang), ``enable_thinking`` (Qwen's own API), ``reasoning_effort`` (OpenAI); and the
    ``thinking_budget`` extension (Qwen's API: the think block's most tokens).

    A named ``tool_choice`` must name one of ``tools`` (400 ``unknown_tool_choice``: the one rule
    of this body that its JSON schema cannot state).
    """

    schema_rules: ClassVar[dict[str, Any]] = CHAT_SCHEMA_RULES

    messages: Annotated[list[WireMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoiceWire | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: bool | None = None
    reasoning_effort: Effort | None = None
    thinking_budget: Annotated[int, Meta(ge=0)] | None = None

    def thinking(self) -> Switch:
        """The request's thinking switch (see the class docstring) and the field that set it."""
        return first_switch(
            template_switch(self.chat_template_kwargs),
            Switch(self.enable_thinking),
            effort_switch(self.reasoning_effort, "reasoning_effort"),
        )

    def to_domain(self) -> ChatRequest:
        """Validate what the schema states as cross-field rules and build the domain request."""
        tools, tool_choice = tools_to_domain(self.tools, self.tool_choice, self.parallel_tool_calls)
        output = output_to_domain(self.response_format)
        if output.kind != "text" and tool_choice.mode in ("required", "function"):
            raise InvalidRequest(
                "response_format cannot be combined with a tool_choice that forces a call.", param="response_format"
            )
        return ChatRequest(
            model=self.model,
            messages=tuple(m.to_domain() for m in self.messages),
            sampling=self.sampling(self.max_completion_tokens or self.max_tokens),
            tools=tools,
            tool_choice=tool_choice,
            output=output,
            top_logprobs=check_logprobs(self.logprobs, self.top_logprobs),
            thinking=self.thinking().thinking,
            thinking_budget=self.thinking_budget,
            choices=self.n,
        )


class AssistantMessage(msgspec.Struct, omit_defaults=True):
    """The generated message: text, or ``null`` content with ``tool_calls``. A thinking model's
    reasoning is sent twice, as ``reasoning_content`` and as ``reasoning`` (vLLM renamed the first to
    the second, and clients read one or the other); both are left out when there is none."""

    role: str
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[WireToolCall] | None = None


class Choice(msgspec.Struct):
    """One completion choice."""

    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class CompletionTokensDetails(msgspec.Struct):
    """``usage.completion_tokens_details``: how many completion tokens the think blocks took."""

    reasoning_tokens: int = 0


class ChatUsage(msgspec.Struct, omit_defaults=True):
    """Token accounting of a chat response (``completion_tokens_details``: chat only)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(msgspec.Struct):
    """The non-streamed response."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage
    object: str = "chat.completion"
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    """The incremental message of a stream chunk (reasoning in both fields, as in the message)."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class ChunkChoice(msgspec.Struct):
    """One choice of a stream chunk."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct):
    """One SSE ``data:`` payload of a streamed response."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: ChatUsage | None = None
    system_fingerprint: str | None = None
