"""Qwen2.5's tool-call blocks in generated text → structured calls, incrementally.

The model answers a call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
(the format of its chat template; several blocks for parallel calls, possibly after some text).
:class:`ToolCallParser` takes the text deltas of a generation and splits them into content and
calls. A block is emitted whole when its closing tag arrives, so a malformed block (not JSON,
no name) is given back as ordinary text, never as half a call. A block cut off by the token limit
(``finish_reason`` "length") is a call with the arguments written so far, as OpenAI returns it,
once its name is complete; before that it is dropped: template markup never reaches content.
Text that may be the start of a tag is held back until the next delta decides. Whitespace
between content and a call, or between calls, is dropped (the template's own separators).

Pure functions of the text: no tokenizer, no torch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from host.sdk import ChatDelta, ToolCall

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def new_call_id() -> str:
    """An OpenAI-style call id: ``call_`` and 24 hex digits."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_block(body: str) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` of a block's body, or ``None`` when it is not a valid call.

    ``arguments`` may be an object (re-serialised) or a string that holds JSON (kept as is).
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            json.loads(args)
        except ValueError:
            return None
        return data["name"], args
    if not isinstance(args, dict):
        return None
    return data["name"], json.dumps(args, ensure_ascii=False)


#: The start of a call block's JSON: its complete name, then the arguments so far (if begun).
_PARTIAL = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*(?:,\s*"(?:arguments|parameters)"\s*:\s*(.*))?', re.S)


def partial_call(body: str) -> tuple[str, str] | None:
    """``(name, arguments text so far)`` of a block the token limit cut, or ``None`` before its name
    is complete. A body that is already a whole call gives the call (see :func:`parse_block`)."""
    whole = parse_block(body)
    if whole is not None:
        return whole
    match = _PARTIAL.match(body)
    if match is None:
        return None
    name = json.loads(match.group(1))
    return (name, match.group(2) or "") if name else None


def tag_prefix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass
class Parsed:
    """What one :meth:`ToolCallParser.feed` released: content text and completed calls."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


class ToolCallParser:
    """Incremental splitter of generated text into content and tool calls (see the module docstring)."""

    def __init__(self) -> None:
        self._buffer = ""  # text not yet released
        self._in_block = False
        self._spaces = ""  # trailing whitespace of content, released only if content follows
        self.calls = 0  # calls emitted so far (the next call's index)
        self.content_sent = False

    def feed(self, text: str) -> Parsed:
        """Add a text delta; returns what can be released now."""
        self._buffer += text
        out = Parsed()
        while True:
            if self._in_block:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return out
                body, raw = self._buffer[:end], OPEN + self._buffer[: end + len(CLOSE)]
                self._buffer = self._buffer[end + len(CLOSE) :]
                self._in_block = False
                parsed = parse_block(body.strip())
                if parsed is None:
                    self._content(out, raw)
                else:
                    self._spaces = ""  # whitespace before a call is the template's separator
                    out.calls.append(ToolCall(index=self.calls, id=new_call_id(), name=parsed[0], arguments=parsed[1]))
                    self.calls += 1
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                self._content(out, self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_block = True
                continue
            keep = tag_prefix(self._buffer, OPEN)
            self._content(out, self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return out

    def flush(self, truncated: bool = False) -> Parsed:
        """The generation ended: held text is content. An unterminated block is content too, unless
        the token limit cut it (``truncated``) while it looked like a call: then it is a call with
        the arguments written so far, or nothing before the call's name is complete."""
        out = Parsed()
        body = self._buffer.strip()
        if self._in_block and truncated and (not body or body.startswith("{")):
            self._buffer, self._in_block, self._spaces = "", False, ""
            cut = partial_call(body)
            if cut is not None:
                out.calls.append(ToolCall(index=self.calls, id=new_call_id(), name=cut[0], arguments=cut[1]))
                self.calls += 1
        rest = (OPEN if self._in_block else "") + self._buffer
        self._buffer, self._in_block = "", False
        self._content(out, rest)
        if self.calls == 0 and self._spaces:
            out.text += self._spaces
            self.content_sent = True
        self._spaces = ""
        return out

    def _content(self, out: Parsed, text: str) -> None:
        pending = self._spaces + text
        body = pending.rstrip()
        self._spaces = pending[len(body) :]
        if not body:
            return
        if self.calls and not self.content_sent:
            body = body.lstrip()  # the separator after a call
        out.text += body
        self.content_sent = True


async def with_tool_calls(deltas: AsyncIterator[ChatDelta]) -> AsyncIterator[ChatDelta]:
    """Run a generation's deltas through a :class:`ToolCallParser`: content and calls, and
    ``finish_reason`` "tool_calls" when the model stopped after making calls ("length", with the
    cut call among the calls, when the token limit ended it inside one)."""
    parser = ToolCallParser()
    async for delta in deltas:
        parsed = parser.feed(delta.text)
        if delta.finish_reason is None:
            yield msgspec.structs.replace(delta, text=parsed.text, tool_calls=parsed.calls)
            continue
        rest = parser.flush(truncated=delta.finish_reason == "length")
        reason = "tool_calls" if parser.calls and delta.finish_reason == "stop" else delta.finish_reason
        yield msgspec.structs.replace(
            delta, text=parsed.text + rest.text, tool_calls=parsed.calls + rest.calls, finish_reason=reason
        )
        return
