"""Fair admission for the engine: short requests are not starved by a flood of long ones.

Waiting sequences are admitted by *aged remaining budget*: the tokens a sequence may still
generate (``max_tokens`` minus what it generated), minus :data:`AGING_TOKENS_PER_S` for every
second it has waited. A ``max_tokens: 1`` request therefore goes before a queue of requests
that may each generate thousands of tokens, and a long request that has waited long enough
goes before fresh short ones (no starvation either way).

When every row of the batch is busy, a waiting sequence whose budget is much smaller than that
of a running one preempts it (:func:`victim`): the long sequence goes back to the waiting line
with what it generated so far and is prefilled again later — its stream just pauses.

The waiting line is bounded by what waits *ahead* of a newcomer (:func:`line_full`): a new
request is refused (429) when ``cap`` waiting sequences would be admitted before it, so a
short request still gets in while the line is full of long ones; a hard bound of twice the cap
holds in any case.

Pure functions on ``(remaining, waited)`` numbers, tested from tables.
"""

from __future__ import annotations

from collections.abc import Sequence

#: How many tokens of budget one second of waiting is worth.
AGING_TOKENS_PER_S = 64.0
#: A waiting sequence preempts a running one only when the running one may still generate at
#: least ``PREEMPT_FACTOR`` times as many tokens, plus ``PREEMPT_MARGIN`` (no thrashing among
#: requests of similar size).
PREEMPT_FACTOR = 4
PREEMPT_MARGIN = 16


def priority(remaining: int, waited_s: float) -> float:
    """The admission key (smaller goes first)."""
    return remaining - AGING_TOKENS_PER_S * max(0.0, waited_s)


def admission_order(keys: Sequence[float]) -> list[int]:
    """Indices of waiting sequences in admission order (stable: equal keys keep arrival order)."""
    return sorted(range(len(keys)), key=lambda i: keys[i])


def victim(head_remaining: int, running_remaining: Sequence[int]) -> int | None:
    """The running row to preempt for the first waiting sequence, or ``None``.

    The row with the most remaining budget, if it is far larger than the waiting one's own
    (not aged: waiting long orders the line but never makes a long request preempt others).
    """
    if not running_remaining:
        return None
    index = max(range(len(running_remaining)), key=lambda i: running_remaining[i])
    if running_remaining[index] >= PREEMPT_FACTOR * head_remaining + PREEMPT_MARGIN:
        return index
    return None


def line_full(waiting_keys: Sequence[float], new_key: float, cap: int) -> bool:
    """Whether a newcomer with ``new_key`` must be refused: ``cap`` sequences would go before it
    (equal keys go first: they came first), or the line holds ``2 * cap`` already."""
    if len(waiting_keys) >= 2 * cap:
        return True
    return sum(1 for k in waiting_keys if k <= new_key) >= cap
