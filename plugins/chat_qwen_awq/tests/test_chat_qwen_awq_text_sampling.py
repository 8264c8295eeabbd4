"""Incremental detokenisation with stop strings, and the sampling arithmetic against transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from host.contract.domain import SamplingParams

CHINESE = "中国的首都是北京。重力是一种使两个物体相互吸引的力。龘"


@pytest.fixture(scope="module")
def tokenizer(awq_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(awq_folder))


def _stream(tokenizer: Any, text: str, stops: tuple[str, ...] = ()) -> tuple[list[str], Any]:
    from chat_qwen_awq.text import TextStream

    stream = TextStream(tokenizer, stops)
    deltas = [stream.push(t) for t in tokenizer.encode(text)]
    deltas.append(stream.flush())
    return deltas, stream


def test_multibyte_characters_are_never_split(tokenizer: Any) -> None:
    ids = tokenizer.encode(CHINESE)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids), "the sample must split characters over tokens"
    deltas, stream = _stream(tokenizer, CHINESE)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == stream.text == CHINESE
    assert "" in deltas[:-1]  # an incomplete character was held back


def test_stop_string_split_across_tokens(tokenizer: Any) -> None:
    text = "The capital of China is Beijing. Gravity is a force."
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(text)]
    stop = "of China is"
    assert stop not in pieces and not any(stop in p for p in pieces)  # it spans several tokens
    deltas, stream = _stream(tokenizer, text, (stop,))
    assert stream.stopped and "".join(deltas) == "The capital "
    assert stop not in "".join(deltas)
    assert stream.matched == stop  # reported as the stop_sequence


def test_stop_string_inside_a_chinese_character_sequence(tokenizer: Any) -> None:
    deltas, stream = _stream(tokenizer, CHINESE, ("吸引",))
    assert stream.stopped and "".join(deltas) == "中国的首都是北京。重力是一种使两个物体相互"


def test_the_earliest_stop_wins_and_held_text_is_released(tokenizer: Any) -> None:
    deltas, stream = _stream(tokenizer, "The capital of China is Beijing.", ("Beijing!", "China", "capital of"))
    assert "".join(deltas) == "The " and stream.matched == "capital of"
    deltas, stream = _stream(tokenizer, "The capital of China is Beijing.", ("Beijing!",))
    assert not stream.stopped and "".join(deltas) == "The capital of China is Beijing."
    assert stream.matched is None
    assert "Beijing" not in "".join(deltas[:-2])  # held while it could still become "Beijing!"


def _sampler(prompt: list[int], **params: Any) -> Any:
    from chat_qwen_awq.sampling import Sampler, resolve

    return Sampler(resolve(SamplingParams(**params), {}), prompt)


def test_repetition_penalty_is_transformers_arithmetic() -> None:
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    prompt, generated = [1, 2, 3, 2], [7, 3, 9]
    sampler = _sampler(prompt, repetition_penalty=1.3, temperature=0)
    for t in generated:
        sampler.observe(t)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + generated]), logits[None].clone())[0]
    assert torch.equal(sampler.penalised(logits), expected)


def test_presence_and_frequency_penalties_are_openai_arithmetic() -> None:
    logits = torch.zeros(10)
    sampler = _sampler([4, 4, 5], presence_penalty=0.5, frequency_penalty=0.25, temperature=0)
    for t in (1, 1, 1, 2):
        sampler.observe(t)
    expected = torch.zeros(10)
    expected[1] = -(0.5 + 0.25 * 3)
    expected[2] = -(0.5 + 0.25 * 1)
    assert torch.allclose(sampler.penalised(logits), expected)  # prompt tokens (4, 5) are not penalised


def test_top_k_and_top_p_keep_what_transformers_keeps() -> None:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    for seed in range(5):
        logits = torch.randn(200, generator=torch.Generator().manual_seed(seed)) * 3
        for top_k, top_p in ((None, 0.8), (20, None), (20, 0.8), (5, 0.3)):
            sampler = _sampler([], temperature=0.7, top_k=top_k, top_p=top_p)
            _, kept = sampler.candidates(logits)
            scores = TemperatureLogitsWarper(0.7)(None, logits[None].clone())
            if top_k:
                scores = TopKLogitsWarper(top_k)(None, scores)
            if top_p:
                scores = TopPLogitsWarper(top_p)(None, scores)
            expected = torch.isfinite(scores[0]).nonzero().flatten()
            assert sorted(kept.tolist()) == sorted(expected.tolist()), (seed, top_k, top_p)


def test_seeded_sampling_is_reproducible_and_greedy_is_argmax() -> None:
    logits = torch.randn(300, generator=torch.Generator().manual_seed(3))

    def draw(seed: int) -> list[int]:
        sampler = _sampler([], temperature=1.0, seed=seed)
        return [sampler.choose(logits) for _ in range(20)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert _sampler([], temperature=0).choose(logits) == int(logits.argmax())
    assert _sampler([], temperature=1.0, top_k=1).choose(logits) == int(logits.argmax())


def test_generation_config_defaults_fill_what_the_request_leaves_out() -> None:
    from chat_qwen_awq.sampling import resolve

    defaults = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    r = resolve(SamplingParams(), defaults)
    assert (r.greedy, r.temperature, r.top_p, r.top_k, r.repetition_penalty) == (False, 0.7, 0.8, 20, 1.05)
    r = resolve(SamplingParams(temperature=0, top_k=5, repetition_penalty=1.0), defaults)
    assert (r.greedy, r.top_k, r.repetition_penalty) == (True, 5, 1.0)
    assert resolve(SamplingParams(), {"do_sample": False}).greedy


def test_a_non_finite_distribution_is_the_request_s_error() -> None:
    # Issue 26: settings past the wire's ranges (a backend called directly, a generation_config) that
    # overflow the logits are a 400 naming the settings, not a 500.
    import torch

    from host.sdk import InvalidRequest

    logits = torch.tensor([30.0, 20.0, 10.0, -5.0])
    with pytest.raises(InvalidRequest, match="not finite") as caught:
        _sampler([0, 1], temperature=1.0, repetition_penalty=1e-300).choose(logits)
    assert caught.value.code == "invalid_sampling" and "repetition_penalty 1e-300" in caught.value.message
    # a subnormal temperature is greedy, here as on the wire
    assert _sampler([], temperature=5e-324).choose(logits) == 0
    assert _sampler([], temperature=0.5, top_p=0).choose(logits) == 0  # top_p 0 keeps the likeliest token
