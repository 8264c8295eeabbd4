"""``POST /v1/chat/completions`` request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
    """A content part; only ``text`` parts are supported by text models."""

    type: str
    text: str | None = None


class WireMessage(msgspec.Struct, kw_only=True):
    """A message as OpenAI clients send it; an assistant message may replay its reasoning as
    ``reasoning_content`` or ``reasoning`` (the OpenAI-compatible servers' fields)."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatCompletionRequest(GenerationRequest, kw_only=True):
    """The request body: the shared sampling fields plus messages, tools and output format, and the
    thinking switches of a reasoning model, first to last: ``chat_template_kwargs.enable_thinking``
    (vLLM, SGLang), ``enable_thinking`` (Qwen's own API), ``reasoning_effort`` (OpenAI); and the
    ``thinking_budget`` extension (Qwen's API: the think block's most tokens)."""

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
    thinking_budget: int | None = None

    def thinking(self) -> Switch:
        """The request's thinking switch (see the class docstring) and the field that set it."""
        return first_switch(
            template_switch(self.chat_template_kwargs),
            Switch(self.enable_thinking),
            effort_switch(self.reasoning_effort, "reasoning_effort"),
        )

    def to_domain(self) -> ChatRequest:
        """Validate what the schema cannot express and build the domain request."""
        tools, tool_choice = tools_to_domain(self.tools, self.tool_choice, self.parallel_tool_calls)
        output = output_to_domain(self.response_format)
        if output.kind != "text" and tool_choice.mode in ("required", "function"):
            raise InvalidRequest(
                "response_format cannot be combined with a tool_choice that forces a call.", param="response_format"
            )
        messages = tuple(_message(i, m) for i, m in enumerate(self.messages))
        return ChatRequest(
            model=self.model,
            messages=messages,
            sampling=self.sampling(self.max_completion_tokens or self.max_tokens),
            tools=tools,
            tool_choice=tool_choice,
            output=output,
            top_logprobs=check_logprobs(self.logprobs, self.top_logprobs),
            thinking=self.thinking().thinking,
            thinking_budget=self.thinking_budget,
        )


def _message(index: int, m: WireMessage) -> ChatMessage:
    role = "system" if m.role == "developer" else m.role
    if role == "tool" and not m.tool_call_id:
        raise InvalidRequest("a tool message needs its call's tool_call_id.", param=f"messages[{index}].tool_call_id")
    if m.tool_calls and role != "assistant":
        raise InvalidRequest("only assistant messages carry tool_calls.", param=f"messages[{index}].tool_calls")
    calls = history_calls(index, m.tool_calls)
    # Replayed reasoning belongs to assistant turns (which may hold nothing else: an answer cut off
    # while thinking); elsewhere it means nothing and is ignored.
    reasoning = (m.reasoning_content or m.reasoning or None) if role == "assistant" else None
    if isinstance(m.content, list):
        texts = []
        for j, part in enumerate(m.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"content part type '{part.type}' is not supported; only 'text'.",
                    param=f"messages[{index}].content[{j}].type",
                )
            texts.append(part.text)
        content = "".join(texts)
    elif m.content is None and not calls and reasoning is None:
        raise InvalidRequest("message content is required.", param=f"messages[{index}].content")
    else:
        content = m.content or ""
    return ChatMessage(role, content, tool_calls=calls, tool_call_id=m.tool_call_id, reasoning=reasoning)


def message_to_domain(index: int, m: WireMessage) -> ChatMessage:
    """The domain message of ``messages[index]`` (400s name the field), for routes that take chat
    messages without generating (``/tokenize``)."""
    return _message(index, m)


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
