"""The Chat Completions dialect (``POST /v1/chat/completions``) over the chat service."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import msgspec

from host.contract.capabilities import Feature
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import PlughostError
from host.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatUsage,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
)
from host.protocol.tools import (
    ChoiceLogprobs,
    FunctionCall,
    FunctionCallChunk,
    ToolCallChunk,
    WireToolCall,
    logprobs_wire,
)
from host.serving import sse
from host.serving.generation import Collected, Generation, Usage

_encode = msgspec.json.Encoder().encode

#: The request field of each capability in OpenAI's chat-like APIs (a 400's ``param``).
OPENAI_PARAMS = {
    Feature.TOOLS: "tools",
    Feature.OUTPUT_FORMAT: "response_format",
    Feature.LOGPROBS: "logprobs",
    Feature.RAW_PROMPT: "messages",
    Feature.THINKING: "reasoning_effort",
}


def nth_choice(request: ChatRequest, i: int) -> ChatRequest:
    """The i-th of ``n`` choices: distinct seeds keep seeded choices reproducible yet different."""
    if i == 0 or request.sampling.seed is None:
        return request
    sampling = msgspec.structs.replace(request.sampling, seed=request.sampling.seed + i)
    return msgspec.structs.replace(request, sampling=sampling)


def openai_error_event(error: PlughostError) -> bytes:
    """An error in OpenAI's envelope as an SSE event (both OpenAI dialects)."""
    return sse.data(_encode(error.envelope()))


class OpenAIChat:
    """A decoded Chat Completions request (:class:`~host.serving.service.Dialect`)."""

    def __init__(self, body: ChatCompletionRequest) -> None:
        self.body = body
        domain = body.to_domain()
        self.requests = [nth_choice(domain, i) for i in range(body.n)]
        self.per_prompt = body.n
        self.stream = body.stream

    def param(self, feature: Feature) -> str | None:
        """The Chat Completions field of ``feature``: thinking asked of a model that cannot think is
        refused when ``reasoning_effort`` asked (as OpenAI refuses it), ignored when a chat template
        switch did (as vLLM's templates ignore kwargs they do not know)."""
        if feature == Feature.THINKING:
            return self.body.thinking().field
        return OPENAI_PARAMS[feature]

    def field(self, param: str | None) -> str | None:
        """Chat Completions names are the backends' own."""
        return param

    def response(self, model: str, results: list[Collected], generation: Generation) -> ChatCompletion:
        """The ``chat.completion`` object."""
        usage = generation.usage
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[_choice(i, c) for i, c in enumerate(results)],
            usage=chat_usage(usage),
        )

    async def events(self, generation: Generation) -> AsyncIterator[bytes]:
        """``chat.completion.chunk`` events: a role chunk per choice, the deltas, a finish chunk per
        choice, then the usage chunk when ``stream_options.include_usage`` asks for it."""
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), generation.model

        def chunk(
            index: int | None,
            delta: Delta | None = None,
            finish: str | None = None,
            usage: ChatUsage | None = None,
            logprobs: ChoiceLogprobs | None = None,
        ) -> bytes:
            choices = (
                []
                if index is None or delta is None
                else [ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)]
            )
            return sse.data(
                _encode(ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage))
            )

        for index in range(generation.choices):
            yield chunk(index, Delta(role="assistant", content=""))
        async for index, delta in generation.deltas():
            for part, logprobs in chunk_parts(delta):
                yield chunk(index, part, logprobs=logprobs)
            if delta.finish_reason is not None:
                yield chunk(index, Delta(), delta.finish_reason)
        options = self.body.stream_options
        if options is not None and options.include_usage:
            yield chunk(None, usage=chat_usage(generation.usage))

    def error_event(self, error: PlughostError) -> bytes:
        """The error in OpenAI's envelope."""
        return openai_error_event(error)

    def end(self) -> bytes:
        """``data: [DONE]``."""
        return sse.DONE


def chat_usage(u: Usage) -> ChatUsage:
    """``usage`` of a chat answer, its reasoning tokens in ``completion_tokens_details``."""
    details = CompletionTokensDetails(reasoning_tokens=u.reasoning_tokens)
    return ChatUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens, completion_tokens_details=details)


def _choice(index: int, c: Collected) -> Choice:
    """The wire choice: ``content`` is ``null`` when the answer is only tool calls; reasoning (if
    any) in both of its fields."""
    calls = [WireToolCall(id=t.id, function=FunctionCall(name=t.name, arguments=t.arguments)) for t in c.calls]
    reasoning = c.reasoning or None
    message = AssistantMessage(
        role="assistant",
        content=c.text if c.text or not calls else None,
        reasoning_content=reasoning,
        reasoning=reasoning,
        tool_calls=calls or None,
    )
    logprobs = ChoiceLogprobs(content=logprobs_wire(c.logprobs)) if c.logprobs is not None else None
    return Choice(index=index, message=message, finish_reason=c.finish_reason, logprobs=logprobs)


def chunk_parts(delta: ChatDelta) -> list[tuple[Delta, ChoiceLogprobs | None]]:
    """The stream chunks of one delta: its reasoning (in both fields), its text (the logprobs go with
    the last of the two), then each call in two fragments (id and name first, then the arguments) as
    OpenAI streams them. Reasoning and text never share a chunk: clients take a chunk for one or the
    other."""
    parts: list[tuple[Delta, ChoiceLogprobs | None]] = []
    logprobs = ChoiceLogprobs(content=logprobs_wire(delta.logprobs)) if delta.logprobs else None
    if delta.reasoning:
        last = not delta.text
        parts.append((Delta(reasoning_content=delta.reasoning, reasoning=delta.reasoning), logprobs if last else None))
        if last:
            logprobs = None
    if delta.text or logprobs is not None:
        parts.append((Delta(content=delta.text), logprobs))
    for call in delta.tool_calls:
        head = ToolCallChunk(
            index=call.index, id=call.id, type="function", function=FunctionCallChunk(name=call.name, arguments="")
        )
        parts.append((Delta(tool_calls=[head]), None))
        body = ToolCallChunk(index=call.index, function=FunctionCallChunk(arguments=call.arguments))
        parts.append((Delta(tool_calls=[body]), None))
    return parts
