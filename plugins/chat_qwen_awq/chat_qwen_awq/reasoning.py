"""A thinking model's ``<think>…</think>`` block in generated text → reasoning and answer, incrementally.

Qwen3 writes its thinking first, ``<think>\\n…\\n</think>\\n\\n``, then the answer. :class:`ReasoningParser`
takes the text deltas of a generation and splits them into ``reasoning`` (the block's text, its tags
dropped) and ``text`` (the answer), as they stream:

- a block opens only at the very start of the output (after whitespace), or is already open when
  the prompt opened it (templates that write ``<think>`` into the generation prompt); a ``<think>``
  later in the answer is ordinary text, and so is everything after the first ``</think>``;
- the newlines the template puts around the reasoning and before the answer are dropped, as the
  chat template itself drops them when it renders the turn again (reasoning ``strip("\\n")``,
  answer ``lstrip("\\n")``);
- text that may be the start of a tag (``<thi`` at a delta's end) is held back until the next delta
  decides, so tags split across deltas are found;
- an output without a block is all answer; a block cut off (``max_tokens``, EOS) is all reasoning.

Pure functions of the text: no tokenizer, no torch. Tool calls are parsed afterwards from the
answer only (:mod:`chat_qwen_awq.tools`), so a ``<tool_call>`` inside the thinking is never a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from chat_qwen_awq.tools import tag_prefix
from host.sdk import ChatDelta

OPEN = "<think>"
CLOSE = "</think>"


@dataclass
class Split:
    """What one :meth:`ReasoningParser.feed` released."""

    reasoning: str = ""
    text: str = ""


class ReasoningParser:
    """Incremental splitter of generated text into reasoning and answer (see the module docstring).

    :param open_block: the prompt already opened the think block (the output starts inside it).
    """

    def __init__(self, *, open_block: bool = False) -> None:
        # start: a block may still open; think: inside it; after: between </think> and the answer;
        # answer: everything else is text
        self._state = "think" if open_block else "start"
        self._buffer = ""  # text not yet released
        self._newlines = ""  # trailing newlines of reasoning, released only if reasoning follows
        self._reasoning_sent = False

    def feed(self, text: str) -> Split:
        """Add a text delta; returns what can be released now."""
        self._buffer += text
        out = Split()
        while self._buffer:
            if self._state == "start":
                head = self._buffer.lstrip()
                if head.startswith(OPEN):
                    self._buffer, self._state = head[len(OPEN) :], "think"
                elif OPEN.startswith(head):  # empty or a proper prefix of the tag: wait
                    return out
                else:
                    self._state = "answer"
            elif self._state == "think":
                end = self._buffer.find(CLOSE)
                if end >= 0:
                    self._reasoning(out, self._buffer[:end])
                    self._buffer, self._state, self._newlines = self._buffer[end + len(CLOSE) :], "after", ""
                    continue
                keep = tag_prefix(self._buffer, CLOSE)
                self._reasoning(out, self._buffer[: len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return out
            elif self._state == "after":
                self._buffer = self._buffer.lstrip("\n")
                if self._buffer:
                    self._state = "answer"
            else:
                out.text += self._buffer
                self._buffer = ""
        return out

    def flush(self) -> Split:
        """The generation ended: held text goes where its state says (a cut-off block's is reasoning)."""
        out = Split()
        rest, self._buffer = self._buffer, ""
        if self._state == "think":
            self._reasoning(out, rest)
        elif self._state != "after":
            out.text += rest
        self._newlines = ""  # trailing newlines of the reasoning are the template's
        return out

    def _reasoning(self, out: Split, text: str) -> None:
        if not self._reasoning_sent:
            text = text.lstrip("\n")  # the newline after <think>
        pending = self._newlines + text
        body = pending.rstrip("\n")
        self._newlines = pending[len(body) :]
        if body:
            out.reasoning += body
            self._reasoning_sent = True


async def with_reasoning(deltas: AsyncIterator[ChatDelta], *, open_block: bool = False) -> AsyncIterator[ChatDelta]:
    """Run a generation's deltas through a :class:`ReasoningParser`: each delta's ``text`` becomes
    its ``reasoning`` and answer ``text`` (everything else passes unchanged)."""
    parser = ReasoningParser(open_block=open_block)
    async for delta in deltas:
        split = parser.feed(delta.text)
        if delta.finish_reason is not None:
            rest = parser.flush()
            split.reasoning += rest.reasoning
            split.text += rest.text
        yield msgspec.structs.replace(delta, text=split.text, reasoning=delta.reasoning + split.reasoning)
        if delta.finish_reason is not None:
            return
