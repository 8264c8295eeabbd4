"""Log probabilities of generated tokens and their best alternatives.

They are taken from the scores the sampler chose from (after the penalties and the grammar mask,
before temperature and top-k/top-p), so greedy decoding always picks the first alternative and a
constrained sequence never lists a token it could not emit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from host.sdk import TokenLogprob, TopLogprob


class TokenTexts:
    """Text and UTF-8 bytes of single tokens, cached (engine thread only).

    :param raw_bytes: a token id → its raw bytes (a byte-level BPE token may be part of a character).
    """

    def __init__(self, raw_bytes: Callable[[int], bytes]) -> None:
        self._raw = raw_bytes
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token)
        if hit is None:
            data = self._raw(token)
            hit = (data.decode("utf-8", errors="replace"), list(data))
            self._cache[token] = hit
        return hit


def token_logprob(scores: torch.Tensor, token: int, top: int, texts: TokenTexts) -> TokenLogprob:
    """The log probability of ``token`` under ``scores`` ([vocab] fp32) and the ``top`` best tokens."""
    logp = scores.log_softmax(-1)
    candidates: list[TopLogprob] = []
    if top > 0:
        values, ids = logp.topk(min(top, logp.shape[0]))
        for value, tid in zip(values.tolist(), ids.tolist()):
            if value == float("-inf"):  # masked by a grammar: not a candidate
                break
            text, data = texts(tid)
            candidates.append(TopLogprob(token=text, bytes=data, logprob=value))
    text, data = texts(token)
    return TokenLogprob(token=text, bytes=data, logprob=float(logp[token]), top=candidates)
