"""Prefix caching for chat: KV blocks of prompt prefixes seen before, reused across requests.

RAG front-ends resend the same long system prompt and passages turn after turn. A prompt is cut
into blocks of ``block_tokens``; after a prefill, the KV states of each full block are kept, keyed
by the block's tokens *and* the block before it, so a block is found only behind the very same
prefix. A new prompt looks its blocks up in order and prefills only what follows the longest hit.

Exact by construction: keys are the token tuples themselves (dict lookups compare them, no hash
can collide), and a block's K/V depend only on the tokens up to it and their positions, which
start at 0 for every row. Bounded in tokens (``capacity_tokens``, declared in the model's
footprint), evicted least recently used; a hit touches a chain from its last block back to its
first, so parents are always more recent than their children and eviction takes leaves first.

Engine thread only (no locking).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Block:
    """One cached block: its id (the key of the block after it) and per-layer K/V."""

    id: int
    keys: list[torch.Tensor]  # per layer: [kv_heads, block_tokens, head_dim]
    values: list[torch.Tensor]


@dataclass(frozen=True)
class PrefixHit:
    """A lookup's answer: the cached tokens and their per-layer K/V, concatenated."""

    tokens: int
    keys: list[torch.Tensor]  # per layer: [kv_heads, tokens, head_dim]
    values: list[torch.Tensor]


class PrefixCache:
    """An LRU of KV blocks keyed by (previous block, block tokens); see the module docstring.

    :param block_tokens: tokens per block (prefixes are reused in whole blocks).
    :param capacity_tokens: cached tokens at most (0 disables the cache).
    """

    def __init__(self, block_tokens: int, capacity_tokens: int) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")
        self.block_tokens = block_tokens
        self.capacity_blocks = capacity_tokens // block_tokens
        self._blocks: collections.OrderedDict[tuple[int, tuple[int, ...]], _Block] = collections.OrderedDict()
        self._ids = itertools.count(1)  # 0 is the root: the "block" before a prompt's first
        self.hits = 0  # tokens served from the cache
        self.lookups = 0

    @property
    def enabled(self) -> bool:
        """Whether anything can be cached."""
        return self.capacity_blocks > 0

    @property
    def cached_tokens(self) -> int:
        """Tokens held now."""
        return len(self._blocks) * self.block_tokens

    def clear(self) -> None:
        """Drop every block (the model moved to another device, or was unloaded)."""
        self._blocks.clear()

    def _keys(self, ids: Sequence[int], limit: int) -> list[tuple[int, ...]]:
        b = self.block_tokens
        return [tuple(ids[i : i + b]) for i in range(0, (min(len(ids), limit) // b) * b, b)]

    def lookup(self, ids: Sequence[int], limit: int) -> PrefixHit | None:
        """The longest cached prefix of ``ids`` in whole blocks, at most ``limit`` tokens."""
        if not self.enabled:
            return None
        self.lookups += 1
        chain: list[tuple[int, tuple[int, ...]]] = []
        found: list[_Block] = []
        parent = 0
        for block_ids in self._keys(ids, limit):
            key = (parent, block_ids)
            block = self._blocks.get(key)
            if block is None:
                break
            chain.append(key)
            found.append(block)
            parent = block.id
        if not found:
            return None
        for key in reversed(chain):  # leaves first, so that parents end up the most recent
            self._blocks.move_to_end(key)
        layers = len(found[0].keys)
        tokens = len(found) * self.block_tokens
        self.hits += tokens
        return PrefixHit(
            tokens=tokens,
            keys=[torch.cat([blk.keys[layer] for blk in found], dim=1) for layer in range(layers)],
            values=[torch.cat([blk.values[layer] for blk in found], dim=1) for layer in range(layers)],
        )

    def store(self, ids: Sequence[int], keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Keep the full blocks of ``ids`` whose K/V are given (per layer ``[kv_heads, len(ids), dim]``).

        Blocks already cached are only touched; new ones are copied (the batch's cache tensors
        keep changing) and the least recently used blocks are evicted beyond the capacity.
        """
        if not self.enabled:
            return
        b = self.block_tokens
        parent = 0
        chain: list[tuple[int, tuple[int, ...]]] = []
        for n, block_ids in enumerate(self._keys(ids, len(ids))):
            key = (parent, block_ids)
            block = self._blocks.get(key)
            if block is None:
                if len(chain) >= self.capacity_blocks:
                    break  # a prefix longer than the whole cache: keep its head only
                cut = slice(n * b, (n + 1) * b)
                block = _Block(
                    id=next(self._ids),
                    keys=[k[:, cut].clone() for k in keys],
                    values=[v[:, cut].clone() for v in values],
                )
                self._blocks[key] = block
            chain.append(key)
            parent = block.id
        for key in reversed(chain):
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)


def fill_prefixes(pc: PrefixCache, rows: Sequence[Sequence[int]], longest: int, cache: Any) -> tuple[int, int]:
    """Fill a prefill's empty KV ``cache`` with cached K/V of the ``rows``' prompt prefixes.

    Rows are left-padded to ``longest``: row i's token j sits in column ``longest - len_i + j``.
    Prefilling resumes at the first column some row has no cached state for; each row takes as
    much of its hit as lies before that column (the rest is computed again). A row keeps at least
    its last token to prefill: its logits give the first generated token. Returns (the columns
    covered, the tokens reused).
    """
    if not pc.enabled:
        return 0, 0
    hits = [pc.lookup(ids, len(ids) - 1) for ids in rows]
    offsets = [longest - len(ids) for ids in rows]
    done = min(off + (hit.tokens if hit else 0) for off, hit in zip(offsets, hits))
    if done <= 0:
        return 0, 0
    first = next(hit for hit in hits if hit is not None)
    for layer, (k0, v0) in enumerate(zip(first.keys, first.values)):
        keys = k0.new_zeros(len(rows), k0.shape[0], done, k0.shape[2])
        values = v0.new_zeros(len(rows), v0.shape[0], done, v0.shape[2])
        for i, (off, hit) in enumerate(zip(offsets, hits)):
            if hit is not None and done > off:
                keys[i, :, off:done] = hit.keys[layer][:, : done - off]
                values[i, :, off:done] = hit.values[layer][:, : done - off]
        cache.update(keys, values, layer)
    return done, sum(max(0, done - off) for off in offsets)


def remember_prefixes(pc: PrefixCache, rows: Sequence[Sequence[int]], cache: Any) -> None:
    """Offer each prefilled row's prompt K/V (left-padded in ``cache``) to the prefix cache."""
    if not pc.enabled:
        return
    for i, ids in enumerate(rows):
        total = cache.layers[0].keys.shape[2]
        off = total - len(ids)
        pc.store(
            ids,
            [layer.keys[i, :, off:total] for layer in cache.layers],
            [layer.values[i, :, off:total] for layer in cache.layers],
        )
