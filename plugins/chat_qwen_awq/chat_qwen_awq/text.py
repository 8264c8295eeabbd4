"""Token ids → text deltas: incremental detokenisation and stop strings.

Byte-level BPE splits a multi-byte character (most Chinese characters are 3 bytes) over
several tokens; decoding a prefix of them yields U+FFFD. :class:`TextStream` holds such a tail
back until the character is complete, and also holds back any text that could be the start
of a stop string, so that a stop string split across tokens is caught and never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """What :class:`TextStream` needs from a tokenizer."""

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str: ...


class TextStream:
    """Turns generated token ids, one at a time, into safe text deltas.

    :param tokenizer: decodes ids (special tokens are skipped).
    :param stops: stop strings; the text before the first one is the end of the completion.
    """

    def __init__(self, tokenizer: Decoder, stops: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stops = tuple(s for s in stops if s)
        self._ids: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] decode to text already taken
        self._read = 0
        self._held = ""  # text decoded but not sent: it may begin a stop string
        self.text = ""  # everything sent so far
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _new_text(self) -> str:
        """Text of ids not yet taken; '' while it ends in an incomplete character."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        if len(full) <= len(prefix_text) or full.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return full[len(prefix_text) :]

    def push(self, token_id: int) -> str:
        """Add one generated token; returns the text that may be sent now (possibly '').

        After a stop string is found, :attr:`stopped` is true and later pushes return ''.
        """
        if self.stopped:
            return ""
        self._ids.append(token_id)
        return self._release(self._held + self._new_text(), final=False)

    def flush(self) -> str:
        """The generation ended (EOS or length): everything still held, incomplete bytes included."""
        if self.stopped:
            return ""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        tail = self._decode(self._ids[self._prefix :])[len(prefix_text) :]
        self._prefix = self._read = len(self._ids)
        return self._release(self._held + tail, final=True)

    def _release(self, pending: str, *, final: bool) -> str:
        cut = -1
        for stop in self._stops:
            at = pending.find(stop)
            if at >= 0 and (cut < 0 or at < cut):
                cut, self.matched = at, stop
        if cut >= 0:
            self.stopped = True
            self._held = ""
            out = pending[:cut]
        elif final:
            self._held = ""
            out = pending
        else:
            keep = self._stop_prefix_length(pending)
            self._held = pending[len(pending) - keep :] if keep else ""
            out = pending[: len(pending) - keep]
        self.text += out
        return out

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
