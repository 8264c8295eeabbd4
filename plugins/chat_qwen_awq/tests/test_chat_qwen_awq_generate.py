"""Generation on the tiny AWQ model: exactness against transformers, stops, limits, seeds, batching, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from chat_qwen_awq.testing import cpu_grant, engine_ids, tiny_config
from host.contract.domain import ChatDelta, ChatMessage, ChatRequest, SamplingParams
from host.contract.errors import BackendError, InvalidRequest

ENGLISH = "Tell me about the Great Wall of China."
CHINESE = "请用三句话介绍一下北京和上海。"


def request(content: str = ENGLISH, **sampling: Any) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=(ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", content)),
        sampling=SamplingParams(**sampling),
    )


async def complete(backend: Any, req: ChatRequest) -> tuple[str, ChatDelta, list[ChatDelta]]:
    deltas = [d async for d in backend.generate(req)]
    return "".join(d.text for d in deltas), deltas[-1], deltas


def prompt_ids(backend: Any, req: ChatRequest) -> list[int]:
    return backend.prepare(req).prompt_ids


@pytest.mark.parametrize("content", [ENGLISH, CHINESE])
@pytest.mark.parametrize("repetition_penalty", [1.0, None])  # None: generation_config's 1.05
async def test_greedy_is_token_identical_to_transformers_generate(
    backend: Any, content: str, repetition_penalty: float | None
) -> None:
    req = request(content, temperature=0, max_tokens=60, repetition_penalty=repetition_penalty)
    ours, last = await engine_ids(backend, req)
    ids = torch.tensor([prompt_ids(backend, req)])
    with torch.no_grad():
        out = backend.loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=60,
            do_sample=False,
            repetition_penalty=repetition_penalty or backend.defaults["repetition_penalty"],
            eos_token_id=backend.eos_ids,
            pad_token_id=backend.eos_ids[0],
            temperature=None,
            top_p=None,
            top_k=None,
        )
    reference = out[0, ids.shape[1] :].tolist()
    assert ours == reference
    assert (last.prompt_tokens, last.completion_tokens) == (ids.shape[1], len(reference))
    assert last.finish_reason == ("stop" if reference[-1] in backend.eos_ids else "length")
    text, final, _ = await complete(backend, req)
    assert text == backend.engine.tokenizer.decode(reference, skip_special_tokens=True)
    assert (final.finish_reason, final.completion_tokens) == (last.finish_reason, last.completion_tokens)


def _stop_across_tokens(tokenizer: Any, ids: list[int]) -> str:
    """A 4-character string of the decoded text that straddles a token boundary."""
    for k in range(len(ids) // 2, len(ids) - 1):
        left, right = tokenizer.decode(ids[:k]), tokenizer.decode(ids[k : k + 1])
        if len(left) >= 2 and len(right) >= 2 and "\ufffd" not in left[-2:] + right[:2]:
            return left[-2:] + right[:2]
    raise AssertionError("no token boundary with two clean characters on both sides")


async def test_stop_strings_including_one_split_across_tokens(backend: Any) -> None:
    base = dict(temperature=0, max_tokens=60, repetition_penalty=1.0)
    ids, _ = await engine_ids(backend, request(**base))
    full, _, _ = await complete(backend, request(**base))
    stop = _stop_across_tokens(backend.engine.tokenizer, ids)
    text, last, _ = await complete(backend, request(**base, stop=(stop,)))
    assert text == full[: full.index(stop)] and stop not in text
    assert last.finish_reason == "stop" and last.completion_tokens < len(ids)
    later = full[full.index(stop) + len(stop) :][:3] or "\x00never"
    text2, last2, _ = await complete(backend, request(**base, stop=(later, stop)))
    first = min(i for i in (full.find(later), full.find(stop)) if i >= 0)  # the earliest stop wins
    assert text2 == full[:first] and last2.finish_reason == "stop"


async def test_max_tokens_finishes_with_length(backend: Any) -> None:
    _text, last, deltas = await complete(backend, request(temperature=0, max_tokens=5, repetition_penalty=1.0))
    assert (last.finish_reason, last.completion_tokens) == ("length", 5)
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert last.prompt_tokens == len(prompt_ids(backend, request()))


async def test_same_seed_same_output(backend: Any) -> None:
    outs = [(await complete(backend, request(temperature=1.0, seed=seed, max_tokens=30)))[0] for seed in (5, 5, 6, 7)]
    assert outs[0] == outs[1]
    assert len(set(outs[1:])) == 3


async def test_any_integer_is_a_seed(backend: Any) -> None:
    big, _, _ = await complete(backend, request(temperature=1.0, seed=2**70 + 5, max_tokens=10))
    assert big == (await complete(backend, request(temperature=1.0, seed=2**70 + 5, max_tokens=10)))[0]
    _negative, last, _ = await complete(backend, request(temperature=1.0, seed=-3, max_tokens=10))
    assert last.completion_tokens > 0


async def test_top_k_one_is_greedy(backend: Any) -> None:
    greedy, _, _ = await complete(backend, request(temperature=0, max_tokens=30))
    top1, _, _ = await complete(backend, request(temperature=1.3, top_k=1, max_tokens=30, seed=1))
    assert top1 == greedy


async def test_prompt_plus_max_tokens_over_the_context_is_400(backend: Any) -> None:
    n = len(prompt_ids(backend, request()))
    agen = backend.generate(request(max_tokens=2048 - n + 1))
    with pytest.raises(InvalidRequest) as caught:
        await anext(agen)
    message = caught.value.message
    assert caught.value.param == "max_tokens"
    assert "2048" in message and f"{n} in the messages" in message and f"{2048 - n + 1} in the completion" in message
    agen = backend.generate(request("word " * 3000))
    with pytest.raises(InvalidRequest) as caught:
        await anext(agen)
    assert caught.value.param == "messages" and "2048" in caught.value.message
    assert backend.engine.active() == 0


async def test_bad_roles_are_400(backend: Any) -> None:
    # "tool" turns are served since tool calling; the legacy "function" role is not.
    bad = ChatRequest(model="m", messages=(ChatMessage("function", "x"),))
    with pytest.raises(InvalidRequest) as caught:
        await anext(backend.generate(bad))
    assert caught.value.param == "messages[0].role"


@pytest.fixture(scope="module")
def small_backend(awq_folder: Any) -> Iterator[Any]:
    """A backend with a 96-token context and a KV cache for 160 tokens (preemption territory)."""
    from chat_qwen_awq import model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend

    b = QwenAwqChatBackend(model_spec(tiny_config(context_length=96, kv_cache_tokens=160, max_sequences=4)))
    b.load(cpu_grant())
    yield b
    b.unload()


async def test_without_max_tokens_generation_stops_at_the_context(small_backend: Any) -> None:
    _text, last, _ = await complete(small_backend, request(temperature=0, repetition_penalty=1.0))
    assert last.finish_reason == "length"
    assert last.prompt_tokens + last.completion_tokens == 96


async def test_batched_sequences_equal_sequential_ones(backend: Any) -> None:
    reqs = [
        request(c, temperature=0, max_tokens=40, repetition_penalty=1.0)
        for c in (ENGLISH, CHINESE, "hello", "Water boils at one hundred degrees. " * 3)
    ]
    alone = [await complete(backend, r) for r in reqs]
    steps = backend.engine.stats.steps
    together = await asyncio.gather(*(complete(backend, r) for r in reqs))
    assert [t[0] for t in together] == [a[0] for a in alone]
    assert [t[1].completion_tokens for t in together] == [a[1].completion_tokens for a in alone]
    # Batched decoding: far fewer engine steps than the 160 tokens (40 + a few when a busy machine
    # lets a request arrive after the others' prefill).
    assert backend.engine.stats.steps - steps <= 60
    assert backend.engine.stats.max_batch >= 4


async def test_a_full_kv_cache_preempts_and_recomputes(small_backend: Any) -> None:
    reqs = [request(c, temperature=0, max_tokens=40, repetition_penalty=1.0) for c in ("hi", "hello there", "Hey")]
    alone = [await complete(small_backend, r) for r in reqs]
    before = small_backend.engine.stats.preemptions
    together = await asyncio.gather(*(complete(small_backend, r) for r in reqs))
    assert small_backend.engine.stats.preemptions > before
    assert [t[0] for t in together] == [a[0] for a in alone]
    assert [t[1].completion_tokens for t in together] == [40, 40, 40]


async def test_cancel_stops_within_a_step(backend: Any) -> None:
    from chat_qwen_awq.sequence import Sequence

    prepared = backend.prepare(request(temperature=0, max_tokens=1500))
    seq = Sequence(prepared, backend.engine.tokenizer, asyncio.get_running_loop())
    backend.engine.submit(seq)
    while len(seq.generated) < 10:
        await seq.queue.get()
    backend.engine.cancel(seq)
    at_cancel = len(seq.generated)
    deadline = time.monotonic() + 5
    while backend.engine.active() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert backend.engine.active() == 0
    assert len(seq.generated) - at_cancel <= 2


async def test_closing_the_generator_cancels_the_sequence(backend: Any) -> None:
    agen = backend.generate(request(temperature=0, max_tokens=1500))
    await anext(agen)
    await agen.aclose()
    deadline = time.monotonic() + 5
    while backend.engine.active() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert backend.engine.active() == 0


async def test_a_failing_sequence_does_not_stop_the_others(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_qwen_awq.sequence import Sequence

    loop = asyncio.get_running_loop()
    good = Sequence(backend.prepare(request(temperature=0, max_tokens=30)), backend.engine.tokenizer, loop)
    bad = Sequence(backend.prepare(request(temperature=0, max_tokens=30)), backend.engine.tokenizer, loop)

    def explode(logits: torch.Tensor) -> int:
        raise RuntimeError("boom")

    bad.sampler.choose = explode  # type: ignore[method-assign]
    backend.engine.submit(good)
    backend.engine.submit(bad)
    bad_item = await bad.queue.get()
    assert isinstance(bad_item, BackendError) and "boom" in bad_item.message
    items = []
    while not items or (not isinstance(items[-1], BaseException) and items[-1].finish_reason is None):
        items.append(await good.queue.get())
    assert items[-1].finish_reason == "length" and items[-1].completion_tokens == 30

    # A forward pass that fails fails its sequences only; the engine serves the next request.
    real = backend.engine.model
    calls = []

    class Broken:
        config = real.config

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            raise RuntimeError("device lost")

    monkeypatch.setattr(backend.engine, "model", Broken())
    with pytest.raises(BackendError, match="device lost"):
        await complete(backend, request(max_tokens=5))
    monkeypatch.setattr(backend.engine, "model", real)
    assert calls and backend.engine.alive
    _text, last, _ = await complete(backend, request(temperature=0, max_tokens=5))
    assert last.completion_tokens == 5


async def test_a_failure_between_prefill_and_batch_finishes_the_sequences(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequences taken out of the prefill but not yet merged into the batch are still answered."""
    engine = backend.engine

    def broken_merge(rows: Any) -> None:
        raise RuntimeError("out of memory while merging")

    monkeypatch.setattr(engine, "_merge", broken_merge)
    with pytest.raises(BackendError, match="out of memory while merging"):
        await asyncio.wait_for(complete(backend, request(max_tokens=5)), 30)
    monkeypatch.undo()
    _text, last, _ = await asyncio.wait_for(complete(backend, request(temperature=0, max_tokens=5)), 30)
    assert last.finish_reason == "length" and engine.alive
