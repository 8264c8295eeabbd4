"""The scoring path on the tiny Qwen3 reranker: recipe agreement, exact prompt, batch invariance,
truncation, token counts, threads, relocation and unloading."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch

from host.contract.domain import RerankRequest
from host.contract.errors import InvalidRequest
from host.toolkit.batcher import BatcherClosed
from rerank_qwen3.testing import CPU, DOCS, QUERY, load_backend, mixed_documents

EXPECTED_PROMPT = (
    "<|im_start|>system\n"
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
    "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: What is the capital of China?\n"
    "<Document>: The capital of China is Beijing.<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<think>\n\n</think>\n\n"
)


def request(query: str, docs: list[str], instruction: str | None = None) -> RerankRequest:
    return RerankRequest(model="Qwen3-Reranker-0.6B", query=query, documents=tuple(docs), instruction=instruction)


async def test_matches_publisher_recipe(backend: Any, recipe: Any) -> None:
    ours = (await backend.rerank(request(QUERY, DOCS))).scores
    reference = recipe.scores(QUERY, DOCS)
    assert len(ours) == len(DOCS)
    assert max(abs(a - b) for a, b in zip(ours, reference)) <= 1e-4
    # The tiny model is built so that scores spread: a comparison of near-constant scores proves little.
    assert max(reference) - min(reference) > 0.2


async def test_instruction_override_matches_recipe(backend: Any, recipe: Any) -> None:
    instruction = "Given a question, find the passage that states the answer"
    ours = (await backend.rerank(request(QUERY, DOCS, instruction))).scores
    reference = recipe.scores(QUERY, DOCS, instruction)
    assert max(abs(a - b) for a, b in zip(ours, reference)) <= 1e-4
    default = (await backend.rerank(request(QUERY, DOCS))).scores
    assert max(abs(a - b) for a, b in zip(ours, default)) > 1e-3  # the instruction reaches the model


async def test_default_instruction_is_an_option(recipe: Any) -> None:
    instruction = "Retrieve passages written in Chinese"
    custom = load_backend(instruction=instruction)
    try:
        ours = (await custom.rerank(request(QUERY, DOCS))).scores
    finally:
        custom.unload()
    assert max(abs(a - b) for a, b in zip(ours, recipe.scores(QUERY, DOCS, instruction))) <= 1e-4


def test_exact_prompt_text(backend: Any) -> None:
    pair = backend.encoder.encode(backend.instruction, QUERY, "The capital of China is Beijing.")
    assert backend.encoder.tokenizer.decode(pair.ids) == EXPECTED_PROMPT
    assert not pair.truncated
    # Same ids as tokenising the whole text at once: splitting prefix/body/suffix changes nothing.
    assert pair.ids == backend.encoder.tokenizer.encode(EXPECTED_PROMPT, add_special_tokens=False)


def test_yes_no_rows_come_from_the_tokenizer(backend: Any, tiny_path: Any) -> None:
    from transformers import AutoModelForCausalLM

    tok = backend.encoder.tokenizer
    assert backend.yes_id == tok.convert_tokens_to_ids("yes") != backend.no_id == tok.convert_tokens_to_ids("no")
    full = AutoModelForCausalLM.from_pretrained(str(tiny_path), dtype=torch.float32)
    weight = full.get_output_embeddings().weight
    assert torch.equal(backend.head, weight[[backend.no_id, backend.yes_id]].float())
    # Only the decoder is kept: no module can project onto the vocabulary.
    assert type(backend.base).__name__ == "Qwen3Model"
    assert backend.head.shape == (2, full.config.hidden_size)


async def test_prompt_tokens_are_exact(backend: Any) -> None:
    result = await backend.rerank(request(QUERY, DOCS))
    tok = backend.encoder.tokenizer
    from rerank_qwen3.prompt import DEFAULT_INSTRUCTION, render

    expected = sum(len(tok.encode(render(DEFAULT_INSTRUCTION, QUERY, d), add_special_tokens=False)) for d in DOCS)
    assert result.prompt_tokens == expected


async def test_score_is_batch_invariant(backend: Any) -> None:
    from rerank_qwen3.backend import probability, score_batch

    target = DOCS[0]
    alone = (await backend.rerank(request(QUERY, [target]))).scores[0]
    others = mixed_documents(49, seed=1)
    # Through the batcher, among 50 documents of mixed lengths, in several positions.
    for position in (0, 17, 49):
        docs = [*others[:position], target, *others[position:]]
        scores = (await backend.rerank(request(QUERY, docs))).scores
        assert abs(scores[position] - alone) <= 1e-5
    # One forced batch of all 50 rows: the target is left-padded to the longest of them.
    rows = [backend.encoder.encode(backend.instruction, QUERY, d).ids for d in [target, *others]]
    assert len(rows[0]) < max(len(r) for r in rows) // 2
    batch = [probability(m) for m in score_batch(backend.base, backend.head, rows, backend.pad_id, backend.device)]
    assert abs(batch[0] - alone) <= 1e-5
    singles = [
        probability(score_batch(backend.base, backend.head, [r], backend.pad_id, backend.device)[0]) for r in rows[1:8]
    ]
    assert max(abs(a - b) for a, b in zip(batch[1:8], singles)) <= 1e-5


async def test_concurrent_requests_share_batches_without_changing_scores(backend: Any) -> None:
    queries = [QUERY, "Explain gravity", "中国的首都是哪里？", "hello"]
    docs = mixed_documents(30, seed=2)
    sequential = [(await backend.rerank(request(q, docs))).scores for q in queries]
    before = backend.batcher.stats.max_batch_rows
    concurrent = await asyncio.gather(*(backend.rerank(request(q, docs)) for q in queries * 2))
    for i, result in enumerate(concurrent):
        expected = sequential[i % len(queries)]
        assert max(abs(a - b) for a, b in zip(result.scores, expected)) <= 1e-5
    assert backend.batcher.stats.max_batch_rows >= before


async def test_long_document_is_truncated_to_the_model_limit(backend: Any, recipe: Any) -> None:
    long_doc = "Gravity is a force that attracts two bodies towards each other. " * 300
    max_length = backend.encoder.max_length
    assert max_length == 2048  # the tiny model's max_position_embeddings
    pair = backend.encoder.encode(backend.instruction, QUERY, long_doc)
    assert pair.truncated and len(pair.ids) == max_length
    assert pair.ids[-len(backend.encoder.suffix_ids) :] == backend.encoder.suffix_ids
    assert pair.ids[: len(backend.encoder.prefix_ids)] == backend.encoder.prefix_ids
    result = await backend.rerank(request(QUERY, [long_doc, DOCS[0]]))
    assert result.prompt_tokens == max_length + len(backend.encoder.encode(backend.instruction, QUERY, DOCS[0]).ids)
    reference = recipe.scores(QUERY, [long_doc], max_length=max_length)
    assert abs(result.scores[0] - reference[0]) <= 1e-4


async def test_truncation_keeps_query_and_template(recipe: Any) -> None:
    short = load_backend(max_length=160)
    try:
        doc = "机器学习是人工智能的一个分支，研究如何让计算机从数据中学习规律并做出预测。" * 20
        pair = short.encoder.encode(short.instruction, QUERY, doc)
        assert len(pair.ids) == 160 and pair.truncated
        text = short.encoder.tokenizer.decode(pair.ids)
        assert f"<Query>: {QUERY}\n<Document>: 机器学习" in text
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
        score = (await short.rerank(request(QUERY, [doc]))).scores[0]
        assert abs(score - recipe.scores(QUERY, [doc], max_length=160)[0]) <= 1e-4
        # A query that leaves no room for the document is the client's error, and the worker survives it.
        with pytest.raises(InvalidRequest) as err:
            await short.rerank(request("capital " * 200, ["doc"]))
        assert err.value.param == "query" and "160" in err.value.message
        again = (await short.rerank(request(QUERY, [doc]))).scores[0]
        assert again == pytest.approx(score, abs=1e-6)
    finally:
        short.unload()


async def test_invalid_unicode_is_a_client_error(backend: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        await backend.rerank(request(QUERY, ["fine", "lone \udc00 surrogate"]))
    assert err.value.param == "documents"
    assert len((await backend.rerank(request(QUERY, ["fine", "a\x00b"]))).scores) == 2


async def test_empty_document_gets_a_score(backend: Any, recipe: Any) -> None:
    result = await backend.rerank(request(QUERY, ["", "   "]))
    assert all(0.0 <= s <= 1.0 for s in result.scores)
    assert max(abs(a - b) for a, b in zip(result.scores, recipe.scores(QUERY, ["", "   "]))) <= 1e-4


async def test_tokenising_and_forward_passes_stay_off_the_event_loop(backend: Any) -> None:
    seen: dict[str, set[str]] = {"encode": set(), "forward": set()}
    encode = backend.encoder.encode

    def spy_encode(*args: Any) -> Any:
        seen["encode"].add(threading.current_thread().name)
        return encode(*args)

    hook = backend.base.register_forward_pre_hook(lambda *_: seen["forward"].add(threading.current_thread().name))
    backend.encoder.encode = spy_encode
    try:
        await backend.rerank(request(QUERY, DOCS))
    finally:
        hook.remove()
        del backend.encoder.encode
    loop_thread = threading.current_thread().name
    assert seen["encode"] and loop_thread not in seen["encode"]
    assert seen["forward"] and loop_thread not in seen["forward"]
    assert seen["encode"] != seen["forward"]  # tokenising overlaps forward passes


async def test_relocate_cpu_to_cpu_and_back_from_half_precision() -> None:
    from rerank_qwen3.backend import cast_parameters

    moved = load_backend()
    try:
        before = (await moved.rerank(request(QUERY, DOCS))).scores
        moved.relocate(CPU)
        assert (await moved.rerank(request(QUERY, DOCS))).scores == pytest.approx(before, abs=1e-6)
        # Parked in fp16 (as it comes back from a GPU): served on the CPU it is widened to fp32 again.
        cast_parameters(moved.base, torch.float16)
        moved.relocate(CPU)
        after = (await moved.rerank(request(QUERY, DOCS))).scores
        assert moved.base.dtype == torch.float32
        assert moved.base.rotary_emb.inv_freq.dtype == torch.float32
        # The tiny checkpoint is stored in fp16, so fp32 -> fp16 -> fp32 loses nothing.
        assert after == pytest.approx(before, abs=1e-6)
    finally:
        moved.unload()


async def test_unload_fails_waiting_requests_instead_of_hanging() -> None:
    doomed = load_backend(batch_tokens_cpu=512)
    task = asyncio.ensure_future(doomed.rerank(request(QUERY, mixed_documents(400, seed=3))))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(doomed.unload)
    try:
        result = await asyncio.wait_for(task, timeout=30)
        assert len(result.scores) == 400  # it finished first: fine too
    except BatcherClosed:
        pass
    with pytest.raises(RuntimeError):
        await doomed.rerank(request(QUERY, DOCS))
    doomed.load(CPU)  # and it can be loaded again
    try:
        assert len((await doomed.rerank(request(QUERY, DOCS))).scores) == len(DOCS)
    finally:
        doomed.unload()
