"""The Responses dialect (``POST /v1/responses``) over the chat service.

One choice per request. The answer is a ``response`` object whose ``output`` holds the assistant
message (one ``output_text`` part) and a ``function_call`` item per call; a stream is OpenAI's
event sequence, each event named and numbered (``sequence_number``)::

    response.created, response.in_progress,
    reasoning:    output_item.added, content_part.added, reasoning_text.delta..., reasoning_text.done,
                  content_part.done, output_item.done (a thinking model's thinking, first)
    per message:  output_item.added, content_part.added, output_text.delta..., output_text.done,
                  content_part.done, output_item.done
    per call:     output_item.added, function_call_arguments.delta, function_call_arguments.done,
                  output_item.done
    response.completed | response.incomplete (max_output_tokens) | error + response.failed

With ``store`` (the default) the finished response is kept (:mod:`host.serving.response_store`)
for ``GET /v1/responses/{id}`` and for ``previous_response_id``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from host.contract.capabilities import Feature
from host.contract.domain import ChatMessage, ToolCall
from host.contract.errors import NotFound, PlughostError
from host.protocol.reasoning import (
    ReasoningConfig,
    ReasoningItem,
    ReasoningText,
    ReasoningTextDeltaEvent,
    ReasoningTextDoneEvent,
)
from host.protocol.responses import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    FunctionCallItem,
    FunctionTool,
    IncompleteDetails,
    LifecycleEvent,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    Response,
    ResponseError,
    ResponsesRequest,
    ResponseUsage,
    TextConfig,
    TextDeltaEvent,
    TextDoneEvent,
    TextFormat,
    responses_field,
)
from host.serving import sse
from host.serving.generation import Collected, Generation
from host.serving.response_store import ResponseStore

_encode = msgspec.json.Encoder().encode

_PARAMS = {
    Feature.TOOLS: "tools",
    Feature.OUTPUT_FORMAT: "text.format",
    Feature.LOGPROBS: "top_logprobs",
    Feature.RAW_PROMPT: "input",
    Feature.THINKING: "reasoning.effort",
}


class OpenAIResponses:
    """A decoded Responses request (:class:`~host.serving.service.Dialect`), bound to the store and
    to the key that made it. One per request: it numbers its stream's events."""

    def __init__(self, body: ResponsesRequest, store: ResponseStore, owner: str) -> None:
        self.body = body
        self._store = store
        self._owner = owner
        history: tuple[ChatMessage, ...] = ()
        if body.previous_response_id is not None:
            previous = store.get(body.previous_response_id, owner)
            if previous is None:
                raise NotFound(
                    f"Previous response with id '{body.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            history = previous.conversation
        request, self._conversation = body.to_domain(history)
        self.requests = [request]
        self.per_prompt = 1
        self.stream = body.stream
        self.id = f"resp_{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._sequence = 0
        self._started = False  # response.created was sent

    def param(self, feature: Feature) -> str:
        """The Responses field of ``feature``."""
        return _PARAMS[feature]

    def response(self, model: str, results: list[Collected], generation: Generation) -> Response:
        """The finished ``response`` object (stored when ``store`` is set)."""
        [result] = results
        output: list[OutputItem] = []
        incomplete = result.finish_reason == "length"
        if result.reasoning:
            cut = incomplete and not result.text and not result.calls  # cut off while thinking
            output.append(_reasoning_item(result.reasoning, "incomplete" if cut else "completed"))
        if result.text or not result.calls:
            output.append(_message(result.text, "incomplete" if incomplete else "completed"))
        output += [_call_item(call, "incomplete" if incomplete else "completed") for call in result.calls]
        return self._finish(model, output, result.finish_reason, generation)

    async def events(self, generation: Generation) -> AsyncIterator[bytes]:
        """The stream's events (see the module docstring)."""
        model = generation.model
        yield self._start(model)
        output: list[OutputItem] = []
        thinking: _OpenItem | None = None
        message: _OpenItem | None = None
        finish = "stop"
        async for _, delta in generation.deltas():
            if delta.reasoning:
                if thinking is None:
                    thinking = _OpenItem(f"rs_{uuid.uuid4().hex}", len(output))
                    yield self._open_reasoning(thinking)
                thinking.text += delta.reasoning
                yield self._event(
                    ReasoningTextDeltaEvent(
                        sequence_number=self._next(),
                        item_id=thinking.id,
                        output_index=thinking.index,
                        content_index=0,
                        delta=delta.reasoning,
                    )
                )
            if thinking is not None and (delta.text or delta.tool_calls or delta.finish_reason is not None):
                answered = bool(delta.text or delta.tool_calls)
                cut = delta.finish_reason == "length" and not answered
                yield self._close_reasoning(thinking, "incomplete" if cut else "completed", output)
                thinking = None
            if delta.text:
                if message is None:
                    message = _OpenItem(f"msg_{uuid.uuid4().hex}", len(output))
                    for event in self._open_message(message):
                        yield event
                message.text += delta.text
                yield self._event(
                    TextDeltaEvent(
                        type="response.output_text.delta",
                        sequence_number=self._next(),
                        item_id=message.id,
                        output_index=message.index,
                        content_index=0,
                        delta=delta.text,
                    )
                )
            if delta.finish_reason is not None:
                finish = delta.finish_reason
            status = "incomplete" if finish == "length" else "completed"
            if (delta.tool_calls or delta.finish_reason is not None) and message is not None:
                for event in self._close_message(message, status, output):
                    yield event
                message = None
            for call in delta.tool_calls:
                for event in self._call_events(call, len(output), status, output):
                    yield event
        if all(isinstance(item, ReasoningItem) for item in output):
            # an empty answer is still one (empty) message, as OpenAI answers it
            empty = _OpenItem(f"msg_{uuid.uuid4().hex}", len(output))
            status = "incomplete" if finish == "length" else "completed"
            for event in [*self._open_message(empty), *self._close_message(empty, status, output)]:
                yield event
        response = self._finish(model, output, finish, generation)
        kind = "response.incomplete" if response.status == "incomplete" else "response.completed"
        yield self._event(LifecycleEvent(type=kind, sequence_number=self._next(), response=response))

    def field(self, param: str | None) -> str | None:
        """The Responses name of a Chat Completions field (``max_tokens`` -> ``max_output_tokens``)."""
        return responses_field(param)

    def error_event(self, error: PlughostError) -> bytes:
        """``error`` then ``response.failed`` (after ``response.created`` if the stream had not begun)."""
        events = [] if self._started else [self._start(self.requests[0].model)]
        events.append(
            self._event(
                ErrorEvent(sequence_number=self._next(), code=error.code, message=error.message, param=error.param)
            )
        )
        failed = self._snapshot(self.requests[0].model, "failed", [])
        failed.error = ResponseError(code=_failure_code(error), message=error.message)
        failure = LifecycleEvent(type="response.failed", sequence_number=self._next(), response=failed)
        events.append(self._event(failure))
        return b"".join(events)

    def end(self) -> bytes:
        """Nothing: a Responses stream ends with its last lifecycle event."""
        return b""

    # -- pieces ----------------------------------------------------------------------------------------

    def _next(self) -> int:
        number = self._sequence
        self._sequence += 1
        return number

    @staticmethod
    def _event(event: Any) -> bytes:
        return sse.named(event.type, _encode(event))

    def _start(self, model: str) -> bytes:
        self._started = True
        snapshot = self._snapshot(model, "in_progress", [])
        return b"".join(
            self._event(LifecycleEvent(type=kind, sequence_number=self._next(), response=snapshot))
            for kind in ("response.created", "response.in_progress")
        )

    def _item_event(self, kind: str, index: int, item: OutputItem) -> bytes:
        """``response.output_item.{kind}`` (``added`` or ``done``)."""
        event = OutputItemEvent(
            type=f"response.output_item.{kind}", sequence_number=self._next(), output_index=index, item=item
        )
        return self._event(event)

    def _part_event(self, kind: str, item: _OpenItem, part: OutputText | ReasoningText) -> bytes:
        """``response.content_part.{kind}`` (``added`` or ``done``) of ``item``'s one content part."""
        event = ContentPartEvent(
            type=f"response.content_part.{kind}",
            sequence_number=self._next(),
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            part=part,
        )
        return self._event(event)

    def _open_reasoning(self, item: _OpenItem) -> bytes:
        added = self._item_event("added", item.index, ReasoningItem(id=item.id, status="in_progress", content=[]))
        return added + self._part_event("added", item, ReasoningText(text=""))

    def _close_reasoning(self, item: _OpenItem, status: str, output: list[OutputItem]) -> bytes:
        done = ReasoningTextDoneEvent(
            sequence_number=self._next(), item_id=item.id, output_index=item.index, content_index=0, text=item.text
        )
        events = self._event(done) + self._part_event("done", item, ReasoningText(text=item.text))
        whole = _reasoning_item(item.text, status, item.id)
        output.append(whole)
        return events + self._item_event("done", item.index, whole)

    def _open_message(self, message: _OpenItem) -> list[bytes]:
        added = self._item_event("added", message.index, OutputMessage(id=message.id, status="in_progress", content=[]))
        return [added, self._part_event("added", message, OutputText(text=""))]

    def _close_message(self, message: _OpenItem, status: str, output: list[OutputItem]) -> list[bytes]:
        done = TextDoneEvent(
            type="response.output_text.done",
            sequence_number=self._next(),
            item_id=message.id,
            output_index=message.index,
            content_index=0,
            text=message.text,
        )
        events = [self._event(done), self._part_event("done", message, OutputText(text=message.text))]
        item = _message(message.text, status, message.id)
        output.append(item)
        return [*events, self._item_event("done", message.index, item)]

    def _call_events(self, call: ToolCall, index: int, status: str, output: list[OutputItem]) -> list[bytes]:
        """A call arrives whole (the backend sends a call once its block is complete): its item, its
        arguments in one delta, and its done events."""
        item = _call_item(call, status)
        output.append(item)
        opening = msgspec.structs.replace(item, arguments="", status="in_progress")
        return [
            self._item_event("added", index, opening),
            self._event(
                ArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta",
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    delta=call.arguments,
                )
            ),
            self._event(
                ArgumentsDoneEvent(
                    type="response.function_call_arguments.done",
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    name=call.name,
                    arguments=call.arguments,
                )
            ),
            self._item_event("done", index, item),
        ]

    def _snapshot(self, model: str, status: Any, output: list[OutputItem]) -> Response:
        """The response object as the request describes it, with ``status`` and ``output``."""
        body = self.body
        request = self.requests[0]
        fmt = body.text.format if body.text is not None and body.text.format is not None else TextFormat(type="text")
        return Response(
            id=self.id,
            created_at=self._created,
            model=model,
            status=status,
            output=output,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            parallel_tool_calls=request.tool_choice.parallel,
            previous_response_id=body.previous_response_id,
            store=body.store,
            temperature=body.temperature,
            text=TextConfig(format=fmt),
            tool_choice=body.tool_choice if body.tool_choice is not None else ("auto" if request.tools else "none"),
            tools=[
                FunctionTool(name=t.name, description=t.description, parameters=t.parameters, strict=wire.strict)
                for t, wire in zip(request.tools, body.tools or ())
            ],
            top_p=body.top_p,
            user=body.user,
            metadata=body.metadata or {},
            reasoning=body.reasoning or ReasoningConfig(),
        )

    def _finish(self, model: str, output: list[OutputItem], finish: str, generation: Generation) -> Response:
        """The final response; stored when the request asked for it."""
        response = self._snapshot(model, "incomplete" if finish == "length" else "completed", output)
        if finish == "length":
            response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        u = generation.usage
        response.usage = ResponseUsage(
            input_tokens=u.prompt_tokens,
            output_tokens=u.completion_tokens,
            total_tokens=u.total_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=u.reasoning_tokens),
        )
        if self.body.store:
            self._store.put(self._owner, response, self._conversation + _as_messages(output))
        return response


class _OpenItem:
    """The item (reasoning or message) a stream is writing."""

    def __init__(self, item_id: str, index: int) -> None:
        self.id = item_id
        self.index = index
        self.text = ""


def _reasoning_item(text: str, status: Any, item_id: str | None = None) -> ReasoningItem:
    return ReasoningItem(id=item_id or f"rs_{uuid.uuid4().hex}", status=status, content=[ReasoningText(text=text)])


def _message(text: str, status: Any, item_id: str | None = None) -> OutputMessage:
    return OutputMessage(id=item_id or f"msg_{uuid.uuid4().hex}", status=status, content=[OutputText(text=text)])


def _call_item(call: ToolCall, status: Any) -> FunctionCallItem:
    return FunctionCallItem(
        id=f"fc_{uuid.uuid4().hex}", call_id=call.id, name=call.name, arguments=call.arguments, status=status
    )


def _as_messages(output: list[OutputItem]) -> tuple[ChatMessage, ...]:
    """The output as the assistant turn a follow-up replays (its reasoning included)."""
    text = "".join(p.text for item in output if isinstance(item, OutputMessage) for p in item.content)
    reasoning = "".join(p.text for item in output if isinstance(item, ReasoningItem) for p in item.content)
    calls = tuple(
        ToolCall(index=i, id=item.call_id, name=item.name, arguments=item.arguments)
        for i, item in enumerate(i for i in output if isinstance(i, FunctionCallItem))
    )
    return (ChatMessage(role="assistant", content=text, tool_calls=calls, reasoning=reasoning or None),)


def _failure_code(error: PlughostError) -> str:
    """``response.error.code``: OpenAI's codes are few; a failure of ours is a server error unless
    it was the client's (rate limits aside)."""
    if error.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= error.status < 500 else "server_error"
