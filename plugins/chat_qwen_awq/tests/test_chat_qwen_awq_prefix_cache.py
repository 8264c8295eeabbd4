"""Prefix caching: the block LRU on its own, and the engine's outputs with and without it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from chat_qwen_awq.prefix_cache import PrefixCache
from chat_qwen_awq.testing import cpu_grant, engine_ids, tiny_config
from host.contract.domain import ChatMessage, ChatRequest, SamplingParams


def kv(ids: list[int], layers: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer K/V whose values encode (layer, token, position): a lookup can be checked exactly."""
    t = torch.tensor(ids, dtype=torch.float32)
    pos = torch.arange(len(ids), dtype=torch.float32)
    keys = [torch.stack([t + 1000 * pos + layer, t - layer]).unsqueeze(-1) for layer in range(layers)]
    return keys, [k * -1 for k in keys]


def test_a_stored_prefix_is_found_in_whole_blocks_exactly() -> None:
    cache = PrefixCache(block_tokens=4, capacity_tokens=64)
    ids = list(range(10, 21))  # 11 tokens: 2 whole blocks
    cache.store(ids, *kv(ids))
    hit = cache.lookup([*ids[:9], 99, 98], limit=10)
    assert hit is not None and hit.tokens == 8
    keys, values = kv(ids)
    for layer in range(2):
        assert torch.equal(hit.keys[layer], keys[layer][:, :8])
        assert torch.equal(hit.values[layer], values[layer][:, :8])
    assert cache.lookup(ids, limit=7).tokens == 4  # the limit keeps a prompt's last token to prefill


def test_a_block_is_found_only_behind_the_same_prefix() -> None:
    cache = PrefixCache(block_tokens=4, capacity_tokens=64)
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    cache.store(ids, *kv(ids))
    assert cache.lookup([9, 2, 3, 4, 5, 6, 7, 8, 0], limit=8) is None  # same second block, other first
    assert cache.lookup([1, 2, 3, 4, 9, 6, 7, 8, 0], limit=8).tokens == 4


def test_capacity_evicts_the_least_recent_leaves_first() -> None:
    cache = PrefixCache(block_tokens=2, capacity_tokens=6)  # three blocks
    a, b = [1, 1, 2, 2], [3, 3, 4, 4]
    cache.store(a, *kv(a))
    cache.store(b, *kv(b))  # four blocks offered: a's leaf goes first
    assert cache.cached_tokens == 6
    assert cache.lookup([*a, 0], limit=4).tokens == 2
    assert cache.lookup([*b, 0], limit=4).tokens == 4
    cache.store([5, 5], *kv([5, 5]))  # now a's first block is the least recent
    assert cache.lookup([*a, 0], limit=4) is None
    assert cache.lookup([*b, 0], limit=4).tokens == 4


def test_a_prefix_longer_than_the_cache_keeps_its_head() -> None:
    cache = PrefixCache(block_tokens=2, capacity_tokens=4)
    ids = list(range(10))
    cache.store(ids, *kv(ids))
    assert cache.cached_tokens == 4 and cache.lookup(ids, limit=9).tokens == 4


def test_capacity_zero_disables_the_cache() -> None:
    cache = PrefixCache(block_tokens=4, capacity_tokens=0)
    cache.store(list(range(8)), *kv(list(range(8))))
    assert not cache.enabled and cache.lookup(list(range(9)), limit=8) is None


SYSTEM = (
    "You are a careful assistant for a search engine. Answer only from the passages below. "
    "Passage 1: The Great Wall of China is a series of fortifications built across the historical "
    "northern borders of ancient Chinese states. Passage 2: Shanghai is the largest city in China by "
    "population, and Beijing is the political and cultural center of the country. Passage 3: Water "
    "boils at one hundred degrees Celsius at sea level. Ice melts at zero degrees. "
) * 3
QUESTIONS = ("What is the capital?", "How long is the wall, and who built it?", "水的沸点是多少？", "Hi")


def ask(question: str, system: str = SYSTEM, tokens: int = 12) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=(ChatMessage("system", system), ChatMessage("user", question)),
        sampling=SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.0),
    )


@pytest.fixture(scope="module")
def uncached(awq_folder: Any) -> Iterator[Any]:
    """The same tiny model without a prefix cache."""
    from chat_qwen_awq import model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend

    b = QwenAwqChatBackend(model_spec(tiny_config(cpu_head_dtype="float32", prefix_cache_tokens=0)))
    b.load(cpu_grant())
    yield b
    b.unload()


async def _all(backend: Any, requests: list[ChatRequest]) -> list[list[int]]:
    results = await asyncio.gather(*(engine_ids(backend, r) for r in requests))
    return [ids for ids, _ in results]


def test_outputs_are_identical_with_and_without_the_cache(backend: Any, uncached: Any) -> None:
    assert backend.engine.prefix_cache.enabled and not uncached.engine.prefix_cache.enabled
    backend.engine.prefix_cache.clear()
    reused = backend.engine.stats.prefix_tokens_reused
    expected = [asyncio.run(_all(uncached, [ask(q)]))[0] for q in QUESTIONS]
    # One after another: every request after the first reuses the system prompt's blocks.
    assert [asyncio.run(_all(backend, [ask(q)]))[0] for q in QUESTIONS] == expected
    after_serial = backend.engine.stats.prefix_tokens_reused
    assert after_serial - reused >= 3 * 200, after_serial - reused
    # All at once, with prompts the cache has never seen among them: rows with different hits and
    # different left padding share one prefill. The medium stranger (a third of the others' length,
    # no hit) makes the cached rows take only part of their hits.
    strangers = [ask("Who are you?", system="Another system prompt entirely."), ask("Why?", system=SYSTEM[::-3])]
    together = asyncio.run(_all(backend, [ask(q) for q in QUESTIONS] + strangers))
    assert together == [*expected, *(asyncio.run(_all(uncached, [s]))[0] for s in strangers)]
    assert backend.engine.stats.prefix_tokens_reused > after_serial


def test_a_relocation_drops_the_cached_blocks(awq_folder: Any) -> None:
    from chat_qwen_awq import model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend

    b = QwenAwqChatBackend(model_spec(tiny_config(cpu_head_dtype="float32")))
    b.load(cpu_grant())
    try:
        asyncio.run(_all(b, [ask(QUESTIONS[0])]))
        assert b.engine.prefix_cache.cached_tokens > 0
        b.relocate(cpu_grant())
        assert b.engine.prefix_cache.cached_tokens == 0
    finally:
        b.unload()


def _prefilled_cache(backend: Any, requests: list[ChatRequest], prefix_cache: PrefixCache | None) -> Any:
    """Run the engine's own admission and prefill (on this thread, no engine thread) for ``requests``;
    the batch it builds (rows, KV cache, mask)."""
    from chat_qwen_awq.engine import Engine
    from chat_qwen_awq.sequence import Sequence

    e = backend.engine
    engine = Engine(e.model, e.device, e.tokenizer, list(e.eos_ids), e.limits, prefix_cache=prefix_cache)
    loop = asyncio.new_event_loop()
    try:
        for r in requests:
            engine._waiting.append(Sequence(backend.prepare(r), e.tokenizer, loop))
        with torch.inference_mode():
            engine._start_prefill()
            while engine._prefill is not None:
                engine._prefill_chunk()
        return engine._batch
    finally:
        loop.close()


def test_reused_states_equal_computed_ones(backend: Any) -> None:
    """The K/V a prefill ends with are the same whether its prefixes came from the cache or were
    computed, also where rows use part of a hit. Within rounding: attention over a cached prefix sums
    in another order, and rounding the next layer's activations to bf16 (both int4 kernels take
    bf16) turns a last-bit difference into ~1e-4 of the value now and then; the first layer's K/V,
    before any attention, are bitwise equal."""
    warm = PrefixCache(block_tokens=32, capacity_tokens=4096)
    _prefilled_cache(backend, [ask(QUESTIONS[0])], warm)
    group = [ask(q) for q in QUESTIONS] + [ask("Why?", system=SYSTEM[::-3])]
    cached = _prefilled_cache(backend, group, warm)
    computed = _prefilled_cache(backend, group, None)
    assert warm.hits > 0
    assert torch.equal(cached.mask, computed.mask)
    real = cached.mask.bool()[:, None, :, None]
    first = cached.cache.layers[0], computed.cache.layers[0]
    assert torch.equal(first[0].keys * real, first[1].keys * real)
    assert torch.equal(first[0].values * real, first[1].values * real)
    for a, b in zip(cached.cache.layers, computed.cache.layers):
        torch.testing.assert_close(a.keys * real, b.keys * real, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(a.values * real, b.values * real, atol=1e-4, rtol=1e-3)
