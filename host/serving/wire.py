"""Domain deltas → chat wire pieces: a collected choice, and the stream chunks of one delta.

Kept apart from the route so that the shapes of tool calls and logprobs have one owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host.contract.domain import ChatDelta, TokenLogprob, ToolCall
from host.protocol.chat import AssistantMessage, Choice, Delta
from host.protocol.tools import (
    ChoiceLogprobs,
    FunctionCall,
    FunctionCallChunk,
    ToolCallChunk,
    WireToolCall,
    logprobs_wire,
)


@dataclass
class Collected:
    """Everything one generation produced (non-streamed answers)."""

    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None

    def add(self, delta: ChatDelta) -> None:
        """Fold one delta in."""
        self.text += delta.text
        self.calls.extend(delta.tool_calls)
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            self.prompt_tokens, self.completion_tokens = delta.prompt_tokens, delta.completion_tokens

    def choice(self, index: int) -> Choice:
        """The wire choice: ``content`` is ``null`` when the answer is only tool calls."""
        calls = [WireToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in self.calls]
        message = AssistantMessage(
            role="assistant", content=self.text if self.text or not calls else None, tool_calls=calls or None
        )
        logprobs = ChoiceLogprobs(content=logprobs_wire(self.logprobs)) if self.logprobs is not None else None
        return Choice(index=index, message=message, finish_reason=self.finish_reason, logprobs=logprobs)


def chunk_parts(delta: ChatDelta) -> list[tuple[Delta, ChoiceLogprobs | None]]:
    """The stream chunks of one delta: its text (with its logprobs), then each call in two fragments
    (id and name first, then the arguments) as OpenAI streams them."""
    parts: list[tuple[Delta, ChoiceLogprobs | None]] = []
    logprobs = ChoiceLogprobs(content=logprobs_wire(delta.logprobs)) if delta.logprobs else None
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
