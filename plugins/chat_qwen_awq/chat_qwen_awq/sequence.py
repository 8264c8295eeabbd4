"""One generation of the engine: the validated request (:class:`Prepared`) and its running state
(:class:`Sequence`: tokens, sampler, text stream, think block, and the queue its consumer reads)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from chat_qwen_awq.grammar import Constraint
from chat_qwen_awq.sampling import Resolved, Sampler
from chat_qwen_awq.text import Decoder, TextStream
from chat_qwen_awq.thinking import ThinkBlock, ThinkPlan
from host.sdk import ChatDelta, TokenLogprob


@dataclass(frozen=True)
class Prepared:
    """A validated request: prompt ids, the completion budget, sampling settings, stop strings,
    an optional grammar constraint, how many alternatives per token to report (``None``: no
    logprobs), whether the model's tool-call blocks are parsed into calls and its think block into
    reasoning, and how it may think (``None``: the engine follows no think block)."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: Resolved
    stops: tuple[str, ...] = ()
    constraint: Constraint | None = None
    top_logprobs: int | None = None
    parse_tool_calls: bool = False
    parse_reasoning: bool = False
    think: ThinkPlan | None = None


class Sequence:
    """One generation: its tokens, sampler, text stream, and the queue its consumer reads."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, prepared: Prepared, tokenizer: Decoder, loop: asyncio.AbstractEventLoop) -> None:
        self.id = next(Sequence._ids)
        self.prompt_ids = prepared.prompt_ids
        self.max_tokens = prepared.max_tokens
        self.sampler = Sampler(prepared.sampling, prepared.prompt_ids)
        self.text = TextStream(tokenizer, prepared.stops)
        self.generated: list[int] = []
        self.constraint = prepared.constraint
        self.think = ThinkBlock(prepared.think, constrained=prepared.constraint is not None) if prepared.think else None
        self.top_logprobs = prepared.top_logprobs
        self.logprobs: list[TokenLogprob] = []  # not yet delivered
        self.loop = loop
        self.queue: asyncio.Queue[ChatDelta | BaseException] = asyncio.Queue()
        self.cancelled = False  # set by the consumer (any thread); read by the engine
        self.finished = False  # engine thread only
        self.enqueued = time.monotonic()  # admission ages from arrival

    @property
    def remaining(self) -> int:
        """Tokens this sequence may still generate."""
        return self.max_tokens - len(self.generated)

    @property
    def grammar_paused(self) -> bool:
        """Whether the constraint (if any) leaves the next token alone (the sequence thinks)."""
        return self.think is not None and self.think.grammar_paused

    @property
    def also_allowed(self) -> tuple[int, ...]:
        """Tokens allowed next besides the constraint's (``<think>`` before a block may open)."""
        return self.think.also_allowed if self.think is not None else ()

    @property
    def prefill_ids(self) -> list[int]:
        """What a (re-)prefill reads: the prompt and anything generated before a preemption."""
        return self.prompt_ids + self.generated
