"""Wire bodies of tools, tool calls, ``response_format`` and logprobs (chat and legacy completions).

Decoding into these Structs checks shapes; :func:`tools_to_domain` and friends check what a schema
cannot say (a named tool that is not among the tools, arguments that are not JSON) and build the
domain values. Every error is a 400 that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from host.contract.domain import OutputFormat, TokenLogprob, Tool, ToolCall, ToolChoice
from host.contract.errors import InvalidRequest

#: OpenAI's rule for function names.
FunctionName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
#: The error code of a named ``tool_choice`` whose function is not among ``tools``.
UNKNOWN_TOOL_CHOICE = "unknown_tool_choice"
#: OpenAI's upper bound of ``top_logprobs``.
MAX_TOP_LOGPROBS = 20


#: A function's ``parameters``: a JSON schema of an object (its ``type``, if given, is "object").
ParametersSchema = Annotated[dict[str, Any], Meta(extra_json_schema={"properties": {"type": {"const": "object"}}})]


class FunctionDefinition(msgspec.Struct, kw_only=True):
    """A function the model may call; ``parameters`` is a JSON schema of its arguments object."""

    name: FunctionName
    description: str | None = None
    parameters: ParametersSchema | None = None
    strict: bool | None = None


class ToolDefinition(msgspec.Struct, kw_only=True):
    """An entry of ``tools``: only ``function`` tools exist."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(msgspec.Struct, kw_only=True):
    """``{"name": ...}`` of a named tool choice."""

    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``: call exactly this function."""

    type: Literal["function"] = "function"
    function: ToolChoiceFunction


ToolChoiceWire = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(msgspec.Struct, kw_only=True):
    """A call's function: its name and its arguments as a JSON text."""

    name: str
    arguments: str


class WireToolCall(msgspec.Struct, kw_only=True):
    """A tool call in a response, or replayed in an assistant message of the history."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class FunctionCallChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A streamed piece of a call's function: the name once, then fragments of the arguments."""

    name: str | None = None
    arguments: str | None = None


class ToolCallChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``delta.tool_calls[]``: clients concatenate ``function.arguments`` per ``index``."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallChunk | None = None


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    """``response_format.json_schema``: the output must be JSON valid against ``schema``."""

    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] = "response"
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormatText(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    """``{"type": "text"}``: free text (the default)."""


class ResponseFormatJsonObject(msgspec.Struct, kw_only=True, tag_field="type", tag="json_object"):
    """``{"type": "json_object"}``: any JSON object."""


class ResponseFormatJsonSchema(msgspec.Struct, kw_only=True, tag_field="type", tag="json_schema"):
    """``{"type": "json_schema", "json_schema": {...}}``: JSON valid against a schema."""

    json_schema: JsonSchemaFormat


ResponseFormat = ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema


class TopLogprobWire(msgspec.Struct, kw_only=True):
    """An alternative token at a position."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobWire(msgspec.Struct, kw_only=True):
    """A generated token with its log probability and the best alternatives (most likely first)."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobWire]


class ChoiceLogprobs(msgspec.Struct, kw_only=True):
    """``choices[].logprobs``: one entry per generated content token."""

    content: list[TokenLogprobWire] | None
    refusal: list[TokenLogprobWire] | None = None


def logprobs_wire(items: list[TokenLogprob]) -> list[TokenLogprobWire]:
    """Domain token logprobs → wire entries."""
    return [
        TokenLogprobWire(
            token=t.token,
            logprob=t.logprob,
            bytes=t.bytes,
            top_logprobs=[TopLogprobWire(token=c.token, logprob=c.logprob, bytes=c.bytes) for c in t.top],
        )
        for t in items
    ]


def tools_to_domain(
    tools: list[ToolDefinition] | None, choice: ToolChoiceWire | None, parallel: bool | None
) -> tuple[tuple[Tool, ...], ToolChoice]:
    """``tools``/``tool_choice``/``parallel_tool_calls`` → domain values (400s name the field)."""
    defs = tuple(
        Tool(
            name=t.function.name,
            description=t.function.description,
            parameters=t.function.parameters,
            strict=bool(t.function.strict),
        )
        for t in tools or ()
    )
    names = [t.name for t in defs]
    for i, t in enumerate(defs):
        if t.parameters is not None and t.parameters.get("type", "object") != "object":
            raise InvalidRequest(
                "function parameters must be an object schema.", param=f"tools[{i}].function.parameters"
            )
    if choice is None:
        choice = "auto" if defs else "none"
    allow_parallel = parallel is not False
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            # The one rule of the body that its JSON schema cannot state (a value naming another value).
            raise InvalidRequest(
                f"tool_choice names function '{choice.function.name}', which is not in tools.",
                param="tool_choice",
                code=UNKNOWN_TOOL_CHOICE,
            )
        return defs, ToolChoice(mode="function", name=choice.function.name, parallel=False)
    if choice == "required" and not defs:
        raise InvalidRequest("tool_choice 'required' needs at least one tool in tools.", param="tool_choice")
    return defs, ToolChoice(mode=choice if defs else "none", parallel=allow_parallel)


def output_to_domain(fmt: ResponseFormat | None) -> OutputFormat:
    """``response_format`` → the domain's output format."""
    if fmt is None or isinstance(fmt, ResponseFormatText):
        return OutputFormat()
    if isinstance(fmt, ResponseFormatJsonObject):
        return OutputFormat(kind="json_object")
    schema = fmt.json_schema.schema
    if schema is None:
        return OutputFormat(kind="json_object")
    return OutputFormat(kind="json_schema", schema=schema, strict=bool(fmt.json_schema.strict))


def history_calls(calls: list[WireToolCall] | None) -> tuple[ToolCall, ...]:
    """Replayed ``tool_calls`` of an assistant message (``arguments`` as sent: normally a JSON text;
    a model's template shows any other text as it is)."""
    return tuple(
        ToolCall(index=j, id=call.id, name=call.function.name, arguments=call.function.arguments)
        for j, call in enumerate(calls or ())
    )


def check_logprobs(logprobs: bool | None, top: int | None) -> int | None:
    """The number of alternatives to return per token, or ``None`` for no logprobs."""
    if top is not None and not logprobs:
        raise InvalidRequest("top_logprobs requires logprobs: true.", param="top_logprobs")
    return (top or 0) if logprobs else None
