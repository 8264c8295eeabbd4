"""``POST /v1/responses`` (OpenAI's Responses API): request, response and stream-event bodies.

Decoding checks shapes; :meth:`ResponsesRequest.to_domain` checks what a schema cannot say and
builds the same domain :class:`~host.contract.domain.ChatRequest` as Chat Completions, so tools,
``tool_choice`` and ``text.format`` get the same constrained decoding. Every 400 names the
Responses field (``input[2].content[0].type``, ``tools[1].type``, ``text.format.schema``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, SamplingParams, Tool, ToolCall, ToolChoice
from host.contract.errors import InvalidRequest
from host.protocol.common import WireRequest
from host.protocol.reasoning import ReasoningConfig, ReasoningItem, ReasoningText, Switch, effort_switch
from host.protocol.tools import (
    FunctionDefinition,
    FunctionName,
    JsonSchemaFormat,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ToolChoiceFunction,
    ToolChoiceWire,
    ToolDefinition,
    output_to_domain,
    tools_to_domain,
)

#: Text part types a message may carry (``output_text``/``refusal``: replayed assistant output).
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


# -- request -------------------------------------------------------------------------------------------


class InputPart(msgspec.Struct, kw_only=True):
    """A content part of an input message (only text parts are supported; a replayed ``refusal``
    part carries its text in ``refusal``)."""

    type: str
    text: str | None = None
    refusal: str | None = None


class InputItem(msgspec.Struct, kw_only=True):
    """An item of ``input``: a message (``type`` "message" or absent), a ``function_call`` the model
    made earlier, a ``function_call_output`` (its result), or a ``reasoning`` item replayed (its
    ``content`` reasoning text, else its ``summary``). One lenient shape for all, so that a wrong item
    is a 400 naming its field rather than a union mismatch."""

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None
    id: str | None = None
    status: str | None = None
    summary: list[InputPart] | None = None
    encrypted_content: str | None = None


class ResponsesTool(msgspec.Struct, kw_only=True):
    """An entry of ``tools``: a function (flat: ``name``, ``parameters`` at the top). Built-in tools
    (``web_search``, ``file_search``, ``computer_use_preview``, ...) decode too and are refused by name."""

    type: str
    name: FunctionName | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceObject(msgspec.Struct, kw_only=True):
    """``{"type": "function", "name": ...}``: call exactly this function."""

    type: str
    name: str | None = None


ResponsesToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject


class TextFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``text.format``: ``text``, ``json_object`` or ``json_schema`` (flat: ``name``, ``schema``)."""

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``text``: the output's format (``verbosity`` is accepted and ignored)."""

    format: TextFormat | None = None


class ResponsesRequest(WireRequest, kw_only=True):
    """The request body. Sampling fields as in Chat Completions (plus plughost's ``top_k`` and
    ``repetition_penalty``); ``reasoning.effort`` switches a thinking model's thinking and the
    ``thinking_budget`` extension caps it (as in Chat Completions); ``include``,
    ``truncation``, ``prompt_cache_key`` and other fields a text model has no use for are accepted
    and ignored."""

    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    seed: int | None = None
    stream_: bool | None = msgspec.field(default=False, name="stream")
    store_: bool | None = msgspec.field(default=True, name="store")
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    reasoning: ReasoningConfig | None = None
    thinking_budget: int | None = None

    @property
    def stream(self) -> bool:
        """Whether to answer with events over SSE (default false)."""
        return bool(self.stream_)

    @property
    def store(self) -> bool:
        """Whether to keep the response for ``GET`` and ``previous_response_id`` (OpenAI's default: true)."""
        return self.store_ is not False

    def thinking(self) -> Switch:
        """The thinking switch of ``reasoning.effort`` (``none``/``minimal``: off)."""
        return effort_switch(self.reasoning.effort if self.reasoning else None, "reasoning.effort")

    def to_domain(self, history: tuple[ChatMessage, ...] = ()) -> tuple[ChatRequest, tuple[ChatMessage, ...]]:
        """The domain request, and the conversation it continues (``history``, the previous
        response's, then this input; without ``instructions``, which are not carried over)."""
        if self.background:
            raise InvalidRequest("background responses are not supported.", param="background")
        if self.conversation is not None:
            raise InvalidRequest(
                "conversations are not supported; chain responses with previous_response_id.", param="conversation"
            )
        tools, tool_choice = _tools(self.tools, self.tool_choice, self.parallel_tool_calls)
        output = output_to_domain(_response_format(self.text))
        if tool_choice.mode in ("required", "function"):
            # The answer is a call: text.format applies to text, which a forced turn has none of
            # (the Agents SDK sends both on an agent's first turn, as OpenAI accepts).
            output = OutputFormat()
        conversation = history + input_messages(self.input)
        if not conversation:
            raise InvalidRequest("input is required.", param="input")
        system = (ChatMessage(role="system", content=self.instructions),) if self.instructions else ()
        request = ChatRequest(
            model=self.model,
            messages=system + conversation,
            sampling=SamplingParams(
                max_tokens=self.max_output_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=None if self.top_k in (None, -1, 0) else self.top_k,
                repetition_penalty=self.repetition_penalty,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                seed=self.seed,
            ),
            tools=tools,
            tool_choice=tool_choice,
            output=output,
            thinking=self.thinking().thinking,
            thinking_budget=self.thinking_budget,
        )
        return request, conversation


def input_messages(value: str | list[InputItem] | None) -> tuple[ChatMessage, ...]:
    """``input`` as domain messages: consecutive ``function_call`` items join the assistant turn
    before them (one turn with several calls), each ``function_call_output`` is a tool turn, and a
    ``reasoning`` item is the reasoning of the assistant turn its next item starts (dropped if no
    assistant item follows it)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (ChatMessage(role="user", content=value),)
    messages: list[ChatMessage] = []
    reasoning: str | None = None  # of a reasoning item, waiting for its assistant turn
    for i, item in enumerate(value):
        if item.type == "reasoning":
            reasoning = "\n\n".join(t for t in (reasoning, _reasoning(item)) if t) or None
        elif item.type == "message":
            message = _message(i, item)
            if message.role == "assistant":
                message, reasoning = msgspec.structs.replace(message, reasoning=reasoning), None
            messages.append(message)
        elif item.type == "function_call":
            call = _call(i, item)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and reasoning is None:
                calls = (*last.tool_calls, msgspec.structs.replace(call, index=len(last.tool_calls)))
                messages[-1] = msgspec.structs.replace(last, tool_calls=calls)
            else:
                messages.append(ChatMessage(role="assistant", content="", tool_calls=(call,), reasoning=reasoning))
                reasoning = None
        elif item.type == "function_call_output":
            if not item.call_id:
                raise InvalidRequest("a function_call_output needs its call's call_id.", param=f"input[{i}].call_id")
            if item.output is None:
                raise InvalidRequest("a function_call_output needs its output.", param=f"input[{i}].output")
            content = _text(item.output, f"input[{i}].output")
            messages.append(ChatMessage(role="tool", content=content, tool_call_id=item.call_id))
        else:
            raise InvalidRequest(
                f"input item type '{item.type}' is not supported; "
                "use message, function_call, function_call_output or reasoning.",
                param=f"input[{i}].type",
            )
    return tuple(messages)


def _reasoning(item: InputItem) -> str:
    """A replayed reasoning item's text: its reasoning text, else its summary (an item of OpenAI's
    own models carries only a summary and encrypted content, which no other model can read)."""
    content = item.content if isinstance(item.content, list) else []
    texts = [p.text for p in content if p.type == "reasoning_text" and p.text]
    if not texts:
        texts = [p.text for p in item.summary or () if p.type == "summary_text" and p.text]
    return "\n\n".join(texts)


def _message(i: int, item: InputItem) -> ChatMessage:
    if item.role is None:
        raise InvalidRequest("a message needs its role.", param=f"input[{i}].role")
    if item.content is None:
        raise InvalidRequest("message content is required.", param=f"input[{i}].content")
    role = "system" if item.role == "developer" else item.role
    return ChatMessage(role=role, content=_text(item.content, f"input[{i}].content"))


def _text(content: str | list[InputPart], param: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        text = part.refusal if part.type == "refusal" else part.text
        if part.type not in TEXT_PARTS or text is None:
            raise InvalidRequest(
                f"content part type '{part.type}' is not supported; only text parts (input_text, output_text).",
                param=f"{param}[{j}].type",
            )
        texts.append(text)
    return "".join(texts)


def _call(i: int, item: InputItem) -> ToolCall:
    for field in ("call_id", "name", "arguments"):
        if not getattr(item, field):
            raise InvalidRequest(f"a function_call needs its {field}.", param=f"input[{i}].{field}")
    assert item.call_id is not None and item.name is not None and item.arguments is not None
    try:
        json.loads(item.arguments)
    except ValueError:
        raise InvalidRequest("function_call arguments must be a JSON text.", param=f"input[{i}].arguments") from None
    return ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)


def _tools(
    tools: list[ResponsesTool] | None, choice: ResponsesToolChoice | None, parallel: bool | None
) -> tuple[tuple[Tool, ...], ToolChoice]:
    """Responses tools → the Chat Completions wire shapes → the one domain conversion (so both
    dialects constrain alike); the checks' field names are turned back into Responses ones."""
    definitions = []
    for i, tool in enumerate(tools or ()):
        if tool.type != "function":
            raise InvalidRequest(
                f"tool type '{tool.type}' is not supported: plughost runs no built-in tools; "
                "declare a function tool and run it yourself.",
                param=f"tools[{i}].type",
            )
        if tool.name is None:
            raise InvalidRequest("a function tool needs its name.", param=f"tools[{i}].name")
        function = FunctionDefinition(
            name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict
        )
        definitions.append(ToolDefinition(function=function))
    wire_choice: ToolChoiceWire | None
    if isinstance(choice, ToolChoiceObject):
        if choice.type != "function" or choice.name is None:
            raise InvalidRequest(
                f"tool_choice type '{choice.type}' is not supported; use auto, none, required or "
                '{"type": "function", "name": ...}.',
                param="tool_choice",
            )
        wire_choice = NamedToolChoice(function=ToolChoiceFunction(name=choice.name))
    else:
        wire_choice = choice
    try:
        return tools_to_domain(definitions or None, wire_choice, parallel)
    except InvalidRequest as exc:
        exc.param = responses_field(exc.param)
        raise


def _response_format(text: TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormatJsonObject()
    if fmt.schema is None:
        raise InvalidRequest("a json_schema format needs its schema.", param="text.format.schema")
    schema = JsonSchemaFormat(
        name=fmt.name or "response", description=fmt.description, schema=fmt.schema, strict=fmt.strict
    )
    return ResponseFormatJsonSchema(json_schema=schema)


def responses_field(param: str | None) -> str | None:
    """A field name of the Chat Completions vocabulary that backends and shared checks use, as the
    Responses API names it (``max_tokens`` -> ``max_output_tokens``)."""
    if param is None:
        return None
    if param.startswith(("messages", "prompt")):
        return "input"  # its indexes count the rendered messages, not the input items
    for chat, responses in _FIELDS:
        if param == chat or param.startswith(chat + "."):
            return responses + param[len(chat) :].replace(".json_schema.", ".", 1)
    if param.startswith("tools["):
        return param.replace("].function.", "].", 1)
    return param


_FIELDS = (
    ("max_tokens", "max_output_tokens"),
    ("max_completion_tokens", "max_output_tokens"),
    ("response_format", "text.format"),
)


# -- response ------------------------------------------------------------------------------------------


class OutputText(msgspec.Struct, kw_only=True, tag_field="type", tag="output_text"):
    """A text part of an output message."""

    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class OutputMessage(msgspec.Struct, kw_only=True, tag_field="type", tag="message"):
    """The assistant's text."""

    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]
    role: Literal["assistant"] = "assistant"


class FunctionCallItem(msgspec.Struct, kw_only=True, tag_field="type", tag="function_call"):
    """A call of one of the request's function tools; ``arguments`` is a JSON text."""

    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = ReasoningItem | OutputMessage | FunctionCallItem


class InputTokensDetails(msgspec.Struct, kw_only=True):
    """Cached prompt tokens (not reported: always 0)."""

    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    """How many output tokens a thinking model's reasoning took."""

    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True):
    """Token accounting of a response."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)


class ResponseError(msgspec.Struct, kw_only=True):
    """Why a response failed (``status: "failed"``)."""

    code: str
    message: str


class IncompleteDetails(msgspec.Struct, kw_only=True):
    """Why a response is incomplete: ``max_output_tokens``."""

    reason: str


class FunctionTool(msgspec.Struct, kw_only=True, tag_field="type", tag="function"):
    """A function tool as the response echoes it."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Response(msgspec.Struct, kw_only=True):
    """The ``response`` object: the answer of ``POST``, ``GET /v1/responses/{id}`` and the stream's
    lifecycle events."""

    id: str
    created_at: int
    model: str
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    output: list[OutputItem]
    object: Literal["response"] = "response"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningConfig = msgspec.field(default_factory=ReasoningConfig)
    store: bool = True
    temperature: float | None = None
    text: TextConfig = msgspec.field(default_factory=lambda: TextConfig(format=TextFormat(type="text")))
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject = "auto"
    tools: list[FunctionTool] = msgspec.field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["disabled", "auto"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class DeletedResponse(msgspec.Struct, kw_only=True):
    """The answer of ``DELETE /v1/responses/{id}``."""

    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


# -- stream events (each carries its ``type`` and ``sequence_number``) ---------------------------------


class LifecycleEvent(msgspec.Struct, kw_only=True):
    """``response.created`` / ``in_progress`` / ``completed`` / ``incomplete`` / ``failed``."""

    type: str
    sequence_number: int
    response: Response


class OutputItemEvent(msgspec.Struct, kw_only=True):
    """``response.output_item.added`` / ``.done``."""

    type: str
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(msgspec.Struct, kw_only=True):
    """``response.content_part.added`` / ``.done`` (of a message's text or of a reasoning item)."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class TextDeltaEvent(msgspec.Struct, kw_only=True):
    """``response.output_text.delta``."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class TextDoneEvent(msgspec.Struct, kw_only=True):
    """``response.output_text.done``: the part's whole text."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class ArgumentsDeltaEvent(msgspec.Struct, kw_only=True):
    """``response.function_call_arguments.delta``."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(msgspec.Struct, kw_only=True):
    """``response.function_call_arguments.done``: the call's whole arguments."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(msgspec.Struct, kw_only=True):
    """``error``: the failure of a stream after its headers (``response.failed`` follows)."""

    sequence_number: int
    code: str | None
    message: str
    param: str | None
    type: Literal["error"] = "error"
