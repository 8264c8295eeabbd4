"""The plugin behind the real HTTP stack and the official ``openai`` client (real socket, tiny model)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from chat_qwen_awq.testing import MODEL_ID, RecordingBackend, RecordingPlugin, paused_decode_steps, tiny_config
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread

CHINESE_PROMPTS = ("请用三句话介绍一下北京和上海。", "你好，今天天气怎么样？", "重力是什么？", "长城在哪里？")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    RecordingBackend.instances.clear()
    with serve_in_thread(create_app(tiny_config(), plugins=[RecordingPlugin()], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=60) as c:
        yield c


def served_backend() -> Any:
    live = [b for b in RecordingBackend.instances if b.engine is not None]
    assert len(live) == 1
    return live[0]


def messages(content: str = "Tell me about the Great Wall of China.") -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_stream_equals_non_stream_with_usage(client: OpenAI) -> None:
    kwargs = dict(model=MODEL_ID, messages=messages(), temperature=0, max_tokens=50)
    full = client.chat.completions.create(**kwargs)
    assert full.model == MODEL_ID and full.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices]
    streamed = "".join(c.choices[0].delta.content or "" for c in content)
    assert streamed == full.choices[0].message.content
    assert content[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in content[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        full.usage.prompt_tokens,
        full.usage.completion_tokens,
        full.usage.total_tokens,
    )


def test_n_choices_and_seed(client: OpenAI) -> None:
    kwargs = dict(model=MODEL_ID, messages=messages("hello"), temperature=1.0, max_tokens=20, seed=11, n=2)
    a = client.chat.completions.create(**kwargs)
    b = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.choices[0].message.content != a.choices[1].message.content  # seed + i per choice
    assert (
        a.usage.completion_tokens <= 2 * 20
        and a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    )


def _clean_prefix(tokenizer: Any, ids: list[int]) -> int:
    """The longest prefix length that decodes without U+FFFD and holds a character split over tokens."""
    for n in range(len(ids), 0, -1):
        text = tokenizer.decode(ids[:n])
        split = any("\ufffd" in tokenizer.decode([i]) for i in ids[:n])
        if "\ufffd" not in text and split and any("\u4e00" <= ch <= "\u9fff" for ch in text):
            return n
    return 0


def test_chinese_streaming_never_splits_a_character(client: OpenAI) -> None:
    tokenizer = served_backend().engine.tokenizer
    for prompt in CHINESE_PROMPTS:
        full = client.chat.completions.create(
            model=MODEL_ID,
            messages=messages(prompt),
            temperature=0,
            max_tokens=80,
            extra_body={"repetition_penalty": 1.0},
        )
        ids = tokenizer.encode(full.choices[0].message.content)
        # The model's own ids are those of the text unless it emitted invalid bytes; find a clean prefix.
        n = _clean_prefix(tokenizer, ids)
        if n >= 4:
            break
    else:
        pytest.fail("no prompt gives Chinese text with a character split over tokens")
    expected = tokenizer.decode(ids[:n])
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=messages(prompt),
            temperature=0,
            max_tokens=80,
            stream=True,
            extra_body={"repetition_penalty": 1.0},
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    streamed = "".join(pieces)
    assert streamed == full.choices[0].message.content
    assert streamed.startswith(expected)
    clean_part = []
    for piece in pieces:  # every chunk inside the valid prefix is whole characters
        if len("".join(clean_part) + piece) > len(expected):
            break
        clean_part.append(piece)
        assert "\ufffd" not in piece
    assert len(clean_part) >= 2


def test_prompt_too_long_is_400_with_both_numbers(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_ID, messages=messages(), max_tokens=2040)
    body = caught.value.body
    assert caught.value.status_code == 400 and body["param"] == "max_tokens"
    assert "2048" in body["message"] and "2040 in the completion" in body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_ID, messages=messages(), max_tokens=2040, stream=True)
    assert caught.value.status_code == 400


async def test_two_concurrent_streams_both_progress(server: str) -> None:
    backend = served_backend()
    order: list[str] = []
    done: dict[str, float] = {}

    async def run(label: str, prompt: str) -> str:
        async with AsyncOpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=60) as c:
            stream = await c.chat.completions.create(
                model=MODEL_ID,
                messages=messages(prompt),
                temperature=0,
                max_tokens=300,
                stream=True,
                extra_body={"repetition_penalty": 1.0},
            )
            parts = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    order.append(label)
                    parts.append(chunk.choices[0].delta.content)
            done[label] = time.monotonic()
            return "".join(parts)

    batch_before = backend.engine.stats.max_batch
    a, b = await asyncio.gather(run("a", "hello"), run("b", "Tell me a story."))
    assert a and b
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    first_a, last_b = order.index("a"), len(order) - 1 - order[::-1].index("b")
    assert first_b < last_a and first_a < last_b, "one stream waited for the other"
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 10
    assert max(batch_before, backend.engine.stats.max_batch) >= 2


def test_disconnect_stops_generation_and_frees_the_lease(server: str) -> None:
    with httpx.Client(timeout=30) as http:  # load the model, so that its engine can be slowed down
        warm = {"model": MODEL_ID, "messages": messages(), "max_tokens": 1}
        assert http.post(f"{server}/v1/chat/completions", json=warm).status_code == 200
    backend = served_backend()
    body = {
        "model": MODEL_ID,
        "messages": messages(),
        "temperature": 0,
        "max_tokens": 1900,
        "stream": True,
        "repetition_penalty": 1.0,
    }
    with httpx.Client(timeout=30) as http, paused_decode_steps(backend.engine, 0.005):  # 1,900 steps: ~10 s
        with http.stream("POST", f"{server}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            data = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data.append(json.loads(line[6:]))
                if len(data) >= 4:
                    break
            assert all(c["choices"][0]["finish_reason"] is None for c in data if c["choices"])
            # The engine's counters are read without its thread's lock (it moves a row from the
            # prefill to the batch outside it): look for the running sequence for up to 2 s.
            running = time.monotonic() + 2
            while backend.engine.active() != 1 and time.monotonic() < running:
                time.sleep(0.01)
            assert backend.engine.active() == 1
            steps_at_close = backend.engine.stats.steps
        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = http.get(f"{server}/v1/models/{MODEL_ID}").json()["status"]
            if status["in_flight"] == 0 and backend.engine.active() == 0:
                break
            time.sleep(0.01)
    assert status["in_flight"] == 0 and backend.engine.active() == 0
    # Far from the 1,900 tokens asked for. The margin is the server noticing the disconnect on a
    # busy machine; once noticed, the engine stops within a step (test_cancel_stops_within_a_step).
    assert backend.engine.stats.steps - steps_at_close < 1000
