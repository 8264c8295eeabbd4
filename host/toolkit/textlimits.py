"""Reject (or truncate) over-long text without tokenising all of it.

Tokenising a 5 MB string only to learn that it is over a 32k-token limit took seconds and
grew the server by a GiB. :func:`over_limit_prefix` tokenises growing windows from the start
of the text — ``(limit + MARGIN) * CHARS_PER_TOKEN`` characters, then 4x larger each time —
and stops as soon as one holds more than ``limit + MARGIN`` tokens. An over-long input thus
costs about the limit's worth of tokenisation; a text shorter than the first window costs
nothing here (the caller tokenises it as before).

The prefix's tokens equal the whole text's except for the last few (the cut may split a
word): ``MARGIN`` tokens past the limit make the verdict safe, and a truncating caller keeps
only the first ``limit`` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Characters per token assumed by the first window (real text averages 3 to 5).
CHARS_PER_TOKEN = 6
#: Tokens past the limit that prove a prefix (and so the text) is over it.
MARGIN = 16


def over_limit_prefix(text: str, limit: int, encode: Callable[[str], T], size: Callable[[T], int]) -> T | None:
    """The encoding of a prefix of ``text`` with more than ``limit + MARGIN`` tokens, or ``None``
    when no window proved the text over the limit (then tokenise it whole as usual)."""
    window = (limit + MARGIN) * CHARS_PER_TOKEN
    while window < len(text):
        encoded = encode(text[:window])
        if size(encoded) > limit + MARGIN:
            return encoded
        window *= 4
    return None
