"""The thinking switch of Qwen3-style models, and a sequence's think block as the engine sees it.

Which way a chat request goes, in this order (:func:`resolve`):

1. the request's own switch (:attr:`ChatRequest.thinking`: the wire's ``chat_template_kwargs.
   enable_thinking`` or ``reasoning_effort``, resolved before the backend sees it);
2. Qwen's soft switch: the last ``/think`` or ``/no_think`` in the last user message;
3. the model's configured default (``options.thinking: on | off``), for front-ends that send nothing;
4. the chat template's own default (Qwen3: on).

The answer is rendered into the chat template as ``enable_thinking``; Qwen3's template then ends an
"off" prompt with an empty think block. Models whose template knows no thinking ignore all of it.

While a sequence generates, :class:`ThinkBlock` follows its think block token by token (``<think>``
and ``</think>`` are single tokens of the Qwen vocabulary): it counts the reasoning tokens, ends the
block when a thinking budget is spent (by forcing Qwen's own closing words, the way Qwen3's thinking
budget was trained), and tells the engine when a grammar constraint (tools, ``response_format``)
applies: only after ``</think>`` and the blank line the template writes there, so that the model
thinks freely first and only the answer is constrained.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from host.sdk import ChatMessage, ChatRequest

OPEN = "<think>"
CLOSE = "</think>"
#: Qwen's soft switches; the last one in the last user message counts (``/think``, ``/no_think``). Not
#: inside a path or a word (``a/think``, ``/thinking``); right after Chinese text it counts ("你好/no_think").
SOFT_SWITCH = re.compile(r"(?<![A-Za-z0-9_/])/(no_think|think)(?![A-Za-z0-9_/])")
#: What ends a think block whose budget is spent: the stop-thinking words of the Qwen3 technical
#: report's thinking budget (sec. 4.3), then the block's close and the blank line before the answer.
BUDGET_CLOSE = (
    "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now."
    "\n</think>\n\n"
)
#: What follows ``</think>`` before the answer (the template writes exactly this).
AFTER_CLOSE = "\n\n"


def soft_switch(messages: Sequence[ChatMessage]) -> bool | None:
    """``True``/``False`` for the last ``/think`` / ``/no_think`` in the last user message, else ``None``."""
    last = next((m for m in reversed(messages) if m.role == "user"), None)
    if last is None:
        return None
    found = SOFT_SWITCH.findall(last.content)
    return found[-1] == "think" if found else None


def resolve(request: ChatRequest, default: str | bool | None) -> bool | None:
    """The thinking switch of a chat request (see the module docstring); ``None``: the template decides.

    ``default`` is the model's ``options.thinking`` (``"on"``/``True``, ``"off"``/``False`` or ``None``).
    """
    if request.thinking is not None:
        return request.thinking
    soft = soft_switch(request.messages)
    if soft is not None:
        return soft
    return default if default is None or isinstance(default, bool) else default == "on"


def template_thinks(template: Any) -> bool:
    """Whether a chat template writes think blocks (a thinking model's: Qwen3, QwQ)."""
    texts = template.values() if isinstance(template, dict) else [template]
    return any(isinstance(t, str) and OPEN in t for t in texts)


@dataclass(frozen=True)
class ThinkTokens:
    """The token ids a think block is made of, for one tokenizer."""

    open: int
    close: int
    after_close: tuple[int, ...]  # the blank line between the block and the answer
    budget_close: tuple[int, ...]  # :data:`BUDGET_CLOSE`

    @classmethod
    def of(cls, tokenizer: Any) -> ThinkTokens | None:
        """The ids of ``tokenizer``, or ``None`` when its tags are not single tokens."""
        ids = [tokenizer.convert_tokens_to_ids(t) for t in (OPEN, CLOSE)]
        if not all(isinstance(i, int) and i != tokenizer.unk_token_id for i in ids):
            return None

        def encode(text: str) -> tuple[int, ...]:
            return tuple(int(t) for t in tokenizer.encode(text, add_special_tokens=False))

        return cls(open=ids[0], close=ids[1], after_close=encode(AFTER_CLOSE), budget_close=encode(BUDGET_CLOSE))

    def opened_by(self, prompt_ids: Sequence[int]) -> bool:
        """Whether the prompt ends inside a think block (its last ``<think>`` is not closed)."""
        for token in reversed(prompt_ids):
            if token == self.close:
                return False
            if token == self.open:
                return True
        return False


@dataclass(frozen=True)
class ThinkPlan:
    """How a sequence may think: the tokens, whether the prompt opened the block, its budget."""

    tokens: ThinkTokens
    opened: bool = False
    budget: int | None = None


class ThinkBlock:
    """One sequence's think block, token by token (engine thread only).

    ``state``: ``"maybe"`` (the first token may open a block), ``"open"`` (inside it) or ``"done"``.
    """

    def __init__(self, plan: ThinkPlan, *, constrained: bool) -> None:
        self.tokens = plan.tokens
        self.budget = plan.budget
        self.constrained = constrained
        self.state = "open" if plan.opened else "maybe"
        self.reasoning_tokens = 0  # generated tokens of the block, its tags included
        self.forced: collections.deque[int] = collections.deque()

    def next_forced(self) -> int | None:
        """The token the engine must emit next instead of sampling, if any."""
        return self.forced.popleft() if self.forced else None

    @property
    def grammar_paused(self) -> bool:
        """Whether a grammar constraint must leave the next token alone (thinking, or a forced token)."""
        return self.state == "open" or bool(self.forced)

    @property
    def also_allowed(self) -> tuple[int, ...]:
        """Tokens allowed next besides the grammar's: ``<think>`` while a block may still open."""
        return (self.tokens.open,) if self.state == "maybe" and not self.forced else ()

    def grammar_takes(self, token: int) -> bool:
        """Whether ``token`` (about to be accepted) belongs to the constrained answer."""
        if self.grammar_paused:
            return False
        return not (self.state == "maybe" and token == self.tokens.open)

    def accept(self, token: int, *, forced: bool = False) -> None:
        """Follow the block past ``token`` (``forced``: it came from :attr:`forced`)."""
        if self.state == "maybe":
            if token == self.tokens.open:
                self.state = "open"
                self.reasoning_tokens = 1
            else:
                self.state = "done"
            return
        if self.state != "open":
            return
        self.reasoning_tokens += 1
        if token == self.tokens.close:
            self.state = "done"
            if self.constrained and not forced:
                self.forced.extend(self.tokens.after_close)  # the template's blank line, then the grammar
            return
        if self.budget is not None and self.reasoning_tokens >= self.budget and not self.forced:
            self.forced.extend(self.tokens.budget_close)
