"""Prefix sharing (``share_prefix``): the tokens before the document run once per request, and the
scores stay those of whole pairs, batch-invariant, across concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from host.contract.domain import RerankRequest
from rerank_qwen3.testing import DOCS, QUERY, load_backend, mixed_documents

#: Documents whose first characters BPE may merge with the space after "<Document>:".
EDGE_DOCS = [
    ",comma first",
    " leading space",
    "  two spaces",
    "\nnewline first",
    "中国的首都是北京。",
    "，全角逗号",
    "!",
    "",
    " ",
    "'quoted'",
    "(parenthesis)",
    "123 numbers",
    "\tTab",
    "-dash",
    "é accent",
    "The end.",
]


def request(query: str, docs: list[str], instruction: str | None = None) -> RerankRequest:
    return RerankRequest(model="Qwen3-Reranker-0.6B", query=query, documents=tuple(docs), instruction=instruction)


def fifty() -> list[str]:
    return EDGE_DOCS + DOCS + mixed_documents(50 - len(EDGE_DOCS) - len(DOCS), seed=5)


@pytest.fixture(scope="module")
def whole() -> Iterator[Any]:
    """The backend with prefix sharing off: every pair runs whole."""
    loaded = load_backend(share_prefix=False)
    yield loaded
    loaded.unload()


def test_option_is_declared_and_on_by_default(backend: Any, whole: Any) -> None:
    import rerank_qwen3

    assert rerank_qwen3.RerankOptions().share_prefix is True
    assert backend.spec.options.share_prefix is True
    assert backend.share_prefix and not whole.share_prefix


def test_shared_length_is_the_document_independent_prefix(backend: Any) -> None:
    encoder = backend.encoder
    pairs = [encoder.encode_shared(backend.instruction, QUERY, d) for d in fifty()]
    shared = {p.shared for p in pairs}
    assert len(shared) == 1  # the same prefix for every document of the request, whatever it starts with
    n = shared.pop()
    assert n > len(encoder.prefix_ids)  # instruction and query are in it
    assert f"<Query>: {QUERY}\n" in encoder.tokenizer.decode(pairs[0].ids[:n])
    for pair in pairs:
        assert pair.ids[:n] == pairs[0].ids[:n] and len(pair.ids) > n
        assert backend.length(pair) == len(pair.ids) - n
    # The same pair, whatever its neighbours: shared depends on the pair alone.
    assert encoder.encode_shared(backend.instruction, QUERY, EDGE_DOCS[0]) == pairs[0]


async def test_scores_equal_those_of_whole_pairs(backend: Any, whole: Any) -> None:
    docs = fifty()
    for query, instruction in ((QUERY, None), ("中国的首都是哪里？", "Find the passage in Chinese")):
        shared = (await backend.rerank(request(query, docs, instruction))).scores
        full = (await whole.rerank(request(query, docs, instruction))).scores
        assert max(abs(a - b) for a, b in zip(shared, full)) <= 1e-5
        assert max(full) - min(full) > 0.1
        # prompt_tokens still counts every pair's whole prompt
        assert (await backend.rerank(request(query, docs, instruction))).prompt_tokens == (
            await whole.rerank(request(query, docs, instruction))
        ).prompt_tokens


async def test_score_alone_equals_score_among_fifty(backend: Any) -> None:
    from rerank_qwen3.backend import PrefixCache, probability, score_shared

    docs = fifty()
    alone = [(await backend.rerank(request(QUERY, [d]))).scores[0] for d in docs[:20]]
    among = (await backend.rerank(request(QUERY, docs))).scores
    assert max(abs(a - b) for a, b in zip(alone, among)) <= 1e-5
    # One forced batch of all 50 rows plus rows of another query (a longer prefix), fresh cache.
    other = [backend.encoder.encode_shared(backend.instruction, "a much longer query " * 5, d) for d in docs[:5]]
    rows = [backend.encoder.encode_shared(backend.instruction, QUERY, d) for d in docs] + other
    assert len({p.shared for p in rows}) == 2
    margins = score_shared(
        backend.base, backend.head, [(p.ids, p.shared) for p in rows], backend.pad_id, backend.device, PrefixCache(0)
    )
    batch = [probability(m) for m in margins]
    assert max(abs(a - b) for a, b in zip(batch[:20], alone)) <= 1e-5
    singles = [
        probability(
            score_shared(
                backend.base, backend.head, [(p.ids, p.shared)], backend.pad_id, backend.device, PrefixCache(0)
            )[0]
        )
        for p in other
    ]
    assert max(abs(a - b) for a, b in zip(batch[50:], singles)) <= 1e-5


async def test_concurrent_requests_with_different_queries_share_batches(backend: Any, whole: Any) -> None:
    queries = [QUERY, "Explain gravity", "中国的首都是哪里？"]
    docs = fifty()
    expected = [(await whole.rerank(request(q, docs))).scores for q in queries]
    mixed_batches = []
    run = backend.run

    def spy(batch: list[Any]) -> Any:
        mixed_batches.append(len({tuple(p.ids[: p.shared]) for p in batch}))
        return run(batch)

    backend.batcher._run = spy
    try:
        results = await asyncio.gather(*(backend.rerank(request(q, docs)) for q in queries * 2))
    finally:
        backend.batcher._run = run
    for i, result in enumerate(results):
        assert max(abs(a - b) for a, b in zip(result.scores, expected[i % len(queries)])) <= 1e-5
    assert max(mixed_batches) >= 2  # rows of different queries (prefixes) ran in one batch


async def test_a_request_spanning_batches_computes_its_prefix_once() -> None:
    small = load_backend(batch_tokens_cpu=256)
    try:
        small.prefix_cache.clear()
        misses = small.prefix_cache.misses
        docs = mixed_documents(40, seed=9)
        before = small.batcher.stats.batches
        await small.rerank(request(QUERY, docs))
        assert small.batcher.stats.batches - before > 3
        assert small.prefix_cache.misses - misses == 1
        assert len(small.prefix_cache) == 1
    finally:
        small.unload()
    assert len(small.prefix_cache) == 0


async def test_a_long_query_over_many_short_documents_keeps_the_kv_cache_in_budget(
    whole: Any, monkeypatch: Any
) -> None:
    """The batcher budgets what pairs compute (the documents); the cache also holds every row's
    prefix. Passes are cut so that rows x (longest prefix + longest rest) + the distinct prefixes'
    own states stay within the budget."""
    from rerank_qwen3 import backend as module

    small = load_backend(batch_tokens_cpu=512)
    shapes: list[tuple[int, int, int]] = []
    score_shared = module.score_shared

    def spy(base: Any, head: Any, rows: Any, *args: Any) -> Any:
        distinct = sum(len(key) for key in {tuple(ids[:n]) for ids, n in rows})
        shapes.append((len(rows), max(n for _, n in rows) + max(len(ids) - n for ids, n in rows), distinct))
        return score_shared(base, head, rows, *args)

    monkeypatch.setattr(module, "score_shared", spy)
    try:
        query = "Which of these short notes mention the Great Wall of China and its history? " * 6
        docs = [f"note {i}: the wall" if i % 3 else f"note {i}" for i in range(40)]
        scores = (await small.rerank(request(query, docs))).scores
        assert len(shapes) > 1 and all(rows * width + distinct <= 512 for rows, width, distinct in shapes)
        assert max(width for _, width, _ in shapes) > 100  # the prefix is most of every row
        expected = (await whole.rerank(request(query, docs))).scores
        assert max(abs(a - b) for a, b in zip(scores, expected)) <= 1e-5
    finally:
        small.unload()


def test_the_prefix_cache_is_bounded_in_tokens(backend: Any) -> None:
    from rerank_qwen3.backend import PrefixCache

    cache = PrefixCache(entries=8, max_tokens=100)
    keys = [tuple(range(10 * i, 10 * i + 40)) for i in range(3)]  # 40 tokens each
    for key in keys:
        states = cache.get(backend.base, key, backend.device)
        assert states.shape[3] == 40  # [2, layers, kv_heads, tokens, head_dim]
    assert len(cache) == 2  # the third pushed the total to 120 > 100: the oldest went
    cache.get(backend.base, keys[1], backend.device)
    assert cache.hits == 1
    long = tuple(range(150))
    cache.get(backend.base, long, backend.device)
    assert len(cache) == 2 and long not in cache._items  # used once, never kept
