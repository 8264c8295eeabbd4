"""The backend against the publisher's recipe, on the tiny random-weight Qwen3 embedding model (fp32, CPU)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import numpy as np
import pytest
import torch

from embed_qwen3.testing import CPU, DEFAULT_TASK, MODEL, TEXTS, Recipe, cosines, load_backend, mixed_texts
from host.contract.domain import EmbeddingRequest
from host.contract.errors import InvalidRequest
from host.contract.spec import Grant, PlacementKind


def request(**kwargs: Any) -> EmbeddingRequest:
    return EmbeddingRequest(model=MODEL, **kwargs)


async def embed(backend: Any, **kwargs: Any) -> tuple[np.ndarray, int]:
    result = await backend.embed(request(**kwargs))
    return np.asarray(result.vectors), result.prompt_tokens


class TokenizerSpy:
    """Records the texts the backend tokenises, then delegates to the real tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.texts: list[str] = []

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self.texts.extend([texts] if isinstance(texts, str) else texts)
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


async def test_documents_match_the_recipe(backend: Any, recipe: Recipe) -> None:
    vectors, tokens = await embed(backend, texts=tuple(TEXTS))
    expected = recipe.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape == (len(TEXTS), backend.hidden_size)
    assert cosines(vectors, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert tokens == sum(recipe.token_count(t) for t in TEXTS)  # exact usage, EOS included


async def test_queries_get_the_instruction_exactly(
    backend: Any, recipe: Recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = TokenizerSpy(backend.tokenizer)
    monkeypatch.setattr(backend, "tokenizer", spy)
    queries = ("What is the capital of China?", "Explain gravity")
    vectors, tokens = await embed(backend, texts=queries, input_type="query")
    formatted = [f"Instruct: {DEFAULT_TASK}\nQuery:{q}" for q in queries]
    assert spy.texts == formatted  # exactly what is fed: one newline, no space after "Query:"
    assert cosines(vectors, recipe.embed(formatted)).min() >= 0.9999
    assert tokens == sum(recipe.token_count(t) for t in formatted)
    # The format matters: near-miss renderings give other vectors.
    for wrong in ([f"Instruct: {DEFAULT_TASK}\nQuery: {q}" for q in queries], list(queries)):
        assert cosines(vectors, recipe.embed(wrong)).min() < 0.999

    spy.texts.clear()
    vectors, _ = await embed(backend, texts=queries[:1], input_type="query", instruction="Find the city")
    assert spy.texts == [f"Instruct: Find the city\nQuery:{queries[0]}"]
    assert cosines(vectors, recipe.embed(spy.texts)).min() >= 0.9999

    spy.texts.clear()
    await embed(backend, texts=queries[:1])  # documents get no instruction
    assert spy.texts == [queries[0]]


async def test_default_task_is_configurable(tiny_path: Any, recipe: Recipe) -> None:
    custom = load_backend(task="Retrieve semantically similar text")
    try:
        vectors, _ = await embed(custom, texts=("hello",), input_type="query")
        expected = recipe.embed(["Instruct: Retrieve semantically similar text\nQuery:hello"])
        assert cosines(vectors, expected).min() >= 0.9999
    finally:
        custom.unload()


async def test_instruction_on_documents_is_rejected(backend: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        await backend.embed(request(texts=("x",), input_type="document", instruction="task"))
    assert info.value.param == "instruction"


async def test_end_of_text_appended_once(backend: Any, recipe: Recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = recipe.tokenizer
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    text = "The capital of China is Beijing."
    published = tok(text)["input_ids"]
    assert published[-1] == eos and published[-2] != eos  # the tiny tokenizer's post-processor appends it
    assert backend.tokenizer_appends_eos
    fed: list[list[int]] = []
    run = backend.run

    def spy_run(batch: list[list[int]]) -> Any:
        fed.extend(list(ids) for ids in batch)
        return run(batch)

    monkeypatch.setattr(backend.batcher, "_run", spy_run)
    plain = tok(text, add_special_tokens=False)["input_ids"]
    from_text, n_text = await embed(backend, texts=(text,))
    from_ids, n_ids = await embed(backend, token_ids=(tuple(plain),))
    already, n_already = await embed(backend, token_ids=(tuple(published),))
    assert fed == [published, published, published]  # text, ids and ids-with-eos: one <|endoftext|> each
    assert n_text == n_ids == n_already == len(published)
    assert np.abs(from_text - from_ids).max() <= 1e-6 and np.abs(from_text - already).max() <= 1e-6


async def test_token_id_queries_get_the_instruction_as_ids(
    backend: Any, recipe: Recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = recipe.tokenizer
    fed: list[list[int]] = []
    run = backend.run
    monkeypatch.setattr(backend.batcher, "_run", lambda batch: (fed.extend(batch), run(batch))[1])
    ids = tok("Explain gravity", add_special_tokens=False)["input_ids"]
    _, tokens = await embed(backend, token_ids=(tuple(ids),), input_type="query")
    prefix = tok(f"Instruct: {DEFAULT_TASK}\nQuery:", add_special_tokens=False)["input_ids"]
    assert fed == [prefix + ids + [tok.convert_tokens_to_ids("<|endoftext|>")]]
    assert tokens == len(fed[0])


async def test_dimensions_truncate_then_renormalise(backend: Any, recipe: Recipe) -> None:
    full, _ = await embed(backend, texts=tuple(TEXTS[:4]))
    cut, _ = await embed(backend, texts=tuple(TEXTS[:4]), dimensions=32)
    expected = recipe.embed(TEXTS[:4])[:, :32]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert cut.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    assert cosines(cut, expected).min() >= 0.9999
    np.testing.assert_allclose(cut, full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True), atol=1e-6)
    same, _ = await embed(backend, texts=tuple(TEXTS[:4]), dimensions=backend.hidden_size)
    np.testing.assert_array_equal(same, full)
    for bad in (backend.hidden_size + 1, 31, 1):
        with pytest.raises(InvalidRequest) as info:
            await backend.embed(request(texts=("x",), dimensions=bad))
        assert info.value.param == "dimensions" and str(backend.hidden_size) in info.value.message


async def test_batch_invariance(backend: Any) -> None:
    target = "Gravity is a force that attracts two bodies towards each other."
    alone, _ = await embed(backend, texts=(target,))
    others = mixed_texts(64, seed=5)
    texts = tuple([*others[:20], target, *others[20:]])
    batches_before = backend.batcher.stats.batches
    mixed, _ = await embed(backend, texts=texts)
    assert backend.batcher.stats.batches == batches_before + 1  # all 65 in one padded batch
    lengths = [len(backend.tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) > lengths[20] > min(lengths)  # the target is padded, among longer and shorter rows
    assert np.abs(mixed[20] - alone[0]).max() <= 1e-5
    # and every other input is the same as when embedded alone
    for i in (0, 7, 40, 64):
        single, _ = await embed(backend, texts=(texts[i],))
        assert np.abs(mixed[i] - single[0]).max() <= 1e-5


async def test_concurrent_requests_share_batches(backend: Any) -> None:
    texts = mixed_texts(40, seed=9)
    singles = [(await embed(backend, texts=(t,)))[0][0] for t in texts[:5]]
    before = backend.batcher.stats.batches
    results = await asyncio.gather(*(embed(backend, texts=(t,)) for t in texts))
    assert backend.batcher.stats.batches - before < len(texts)  # requests were batched together
    for single, (vectors, _) in zip(singles, results):
        assert np.abs(vectors[0] - single).max() <= 1e-5


async def test_thousands_of_inputs_are_split(tiny_path: Any) -> None:
    small = load_backend(batch_tokens_cpu=512, max_batch_size=64)
    try:
        texts = tuple(mixed_texts(3000, seed=1))
        vectors, tokens = await embed(small, texts=texts)
        assert vectors.shape == (3000, small.hidden_size)
        assert small.batcher.stats.batches >= 3000 // 64 and small.batcher.stats.max_batch_rows <= 64
        for i in (0, 1234, 2999):
            single, _n = await embed(small, texts=(texts[i],))
            assert np.abs(vectors[i] - single[0]).max() <= 1e-5
        assert tokens == sum(len(small.tokenizer(t)["input_ids"]) for t in texts)
    finally:
        small.unload()


async def test_bad_token_ids_are_rejected(backend: Any) -> None:
    for bad in (backend.vocab_size, -1, 10**9):
        with pytest.raises(InvalidRequest) as info:
            await backend.embed(request(token_ids=((5, 6), (1, bad))))
        assert info.value.param == "input" and "input[1]" in info.value.message and str(bad) in info.value.message
    vectors, _ = await embed(backend, token_ids=((5, backend.vocab_size - 1),))  # the worker is fine
    assert vectors.shape == (1, backend.hidden_size)


async def test_empty_inputs_are_rejected(backend: Any) -> None:
    with pytest.raises(InvalidRequest, match=r"input\[1\]"):
        await backend.embed(request(texts=("fine", "")))
    with pytest.raises(InvalidRequest, match=r"input\[0\]"):
        await backend.embed(request(token_ids=((),)))


async def test_too_long_inputs_rejected_or_truncated(tiny_path: Any, recipe: Recipe) -> None:
    short = load_backend(max_length=16, token_ids="model")
    try:
        assert short.max_length == 16
        long_text = "The quick brown fox jumps over the lazy dog. " * 10
        with pytest.raises(InvalidRequest) as info:
            await short.embed(request(texts=("ok", long_text)))
        assert info.value.param == "input" and "input[1]" in info.value.message and "16" in info.value.message
        assert info.value.code == "context_length_exceeded"
        vectors, tokens = await embed(short, texts=(long_text,), truncate=True)
        assert tokens == 16
        tok = recipe.tokenizer
        ids = [*tok(long_text, add_special_tokens=False)["input_ids"][:15], tok.convert_tokens_to_ids("<|endoftext|>")]
        from_ids, _ = await embed(short, token_ids=(tuple(ids),))
        assert np.abs(vectors - from_ids).max() <= 1e-6  # cut to 15 tokens, the final <|endoftext|> kept
        # a query's instruction counts towards the limit
        with pytest.raises(InvalidRequest, match="instruction"):
            await short.embed(request(texts=("hi",), input_type="query"))
    finally:
        short.unload()
    truncating = load_backend(max_length=16, truncate=True)  # truncation enabled by option
    try:
        _, tokens = await embed(truncating, texts=("The quick brown fox jumps over the lazy dog. " * 10,))
        assert tokens == 16
        with pytest.raises(InvalidRequest):  # and a request can still ask for strictness
            await truncating.embed(
                request(texts=("The quick brown fox jumps over the lazy dog. " * 10,), truncate=False)
            )
    finally:
        truncating.unload()


def test_default_max_length_comes_from_the_model(backend: Any, tiny_path: Any) -> None:
    import json

    positions = json.loads((tiny_path / "config.json").read_text())["max_position_embeddings"]
    assert backend.max_length == min(8192, positions)


async def test_relocate_park_and_return(tiny_path: Any) -> None:
    moving = load_backend()
    try:
        before, _ = await embed(moving, texts=tuple(TEXTS))
        assert moving.model.dtype == torch.float32
        weights16 = sum(p.numel() for p in moving.model.parameters()) * 2
        moving.relocate(
            Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=weights16, parked=True)
        )
        assert moving.model.dtype == moving.checkpoint_dtype == torch.float16  # parked at 16 bits
        rotary = [b for n, b in moving.model.named_buffers() if n.endswith("inv_freq")]
        assert rotary and all(b.dtype == torch.float32 for b in rotary)  # buffers keep their precision
        moving.relocate(CPU)  # served on the CPU again: fp32
        assert moving.model.dtype == torch.float32
        after, _ = await embed(moving, texts=tuple(TEXTS))
        np.testing.assert_array_equal(after, before)  # the fp16 checkpoint survives the round trip
    finally:
        moving.unload()


async def test_unload_fails_nothing_silently(tiny_path: Any) -> None:
    gone = load_backend()
    gone.unload()
    from host.contract.errors import BackendError

    with pytest.raises(BackendError):
        await gone.embed(request(texts=("x",)))


def test_missing_weights_name_the_config_key(tmp_path: Any) -> None:
    from embed_qwen3.backend import Qwen3EmbeddingBackend
    from embed_qwen3.testing import tiny_spec
    from host.toolkit.weights import WeightsError

    backend = Qwen3EmbeddingBackend(msgspec.structs.replace(tiny_spec(), weights=str(tmp_path / "nowhere")))
    with pytest.raises(WeightsError, match=rf"models\.{MODEL}\.weights"):
        backend.load(CPU)
