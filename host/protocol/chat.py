"""``POST /v1/chat/completions`` request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from host.domain import ChatMessage, ChatRequest, SamplingParams
from host.errors import InvalidRequest
from host.protocol.common import WireRequest


class TextPart(msgspec.Struct, kw_only=True):
    """A content part; only ``text`` parts are supported by text models."""

    type: str
    text: str | None = None


class WireMessage(msgspec.Struct, kw_only=True):
    """A message as OpenAI clients send it."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``: ``include_usage`` adds a final usage chunk (``null``: false)."""

    include_usage: bool | None = False


class ChatCompletionRequest(WireRequest, kw_only=True):
    """The request body, with OpenAI's fields plus the ``top_k``/``repetition_penalty`` extensions."""

    model: str
    messages: Annotated[list[WireMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    seed: int | None = None
    # Generated SDKs send ``null`` for every optional field they were not given: null means the default.
    n_: Annotated[int, Meta(ge=1, le=16)] | None = msgspec.field(default=1, name="n")
    stream_: bool | None = msgspec.field(default=False, name="stream")
    stream_options: StreamOptions | None = None
    user: str | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        """How many choices to generate (``n``; default 1)."""
        return 1 if self.n_ is None else self.n_

    @property
    def stream(self) -> bool:
        """Whether to answer over SSE (``stream``; default false)."""
        return bool(self.stream_)

    def to_domain(self) -> ChatRequest:
        """Validate what the schema cannot express and build the domain request."""
        if self.logprobs:
            raise InvalidRequest("logprobs are not supported.", param="logprobs")
        if self.tools:
            raise InvalidRequest("tools are not supported by this server.", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise InvalidRequest("Only response_format {'type': 'text'} is supported.", param="response_format")
        messages = tuple(_message(i, m) for i, m in enumerate(self.messages))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(s == "" for s in stop):
            raise InvalidRequest("stop sequences must not be empty.", param="stop")
        top_k = None if self.top_k in (None, -1, 0) else self.top_k
        return ChatRequest(
            model=self.model,
            messages=messages,
            sampling=SamplingParams(
                max_tokens=self.max_completion_tokens or self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=top_k,
                repetition_penalty=self.repetition_penalty,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                stop=stop,
                seed=self.seed,
            ),
        )


def _message(index: int, m: WireMessage) -> ChatMessage:
    role = "system" if m.role == "developer" else m.role
    if role == "tool":
        raise InvalidRequest("tool messages are not supported.", param=f"messages[{index}].role")
    if isinstance(m.content, list):
        texts = []
        for j, part in enumerate(m.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"content part type '{part.type}' is not supported; only 'text'.",
                    param=f"messages[{index}].content[{j}].type",
                )
            texts.append(part.text)
        return ChatMessage(role=role, content="".join(texts))
    if m.content is None:
        raise InvalidRequest("message content is required.", param=f"messages[{index}].content")
    return ChatMessage(role=role, content=m.content)


class AssistantMessage(msgspec.Struct):
    """The generated message."""

    role: str
    content: str


class Choice(msgspec.Struct):
    """One completion choice."""

    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatUsage(msgspec.Struct):
    """Token accounting of a chat response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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
    """The incremental message of a stream chunk."""

    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    """One choice of a stream chunk."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct):
    """One SSE ``data:`` payload of a streamed response."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: ChatUsage | None = None
    system_fingerprint: str | None = None
