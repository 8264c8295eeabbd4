"""The vLLM tier: the plugin with ``engine: vllm`` behind the real HTTP stack, against a real vLLM engine.

Runs when a vLLM environment exists (``scripts/vllm-env`` makes ``.venv-vllm``, or
``$PLUGHOST_VLLM_PYTHON`` names one); skipped otherwise. One engine for the whole module, started
by the first test (10-100 s): the tiny AWQ model with 32-wide heads (vLLM's CPU attention needs
them), served by vLLM's CPU build in CI and by its CUDA build with ``PLUGHOST_VLLM_TEST_DEVICE=cuda``
(``scripts/gpu-check``). The crash test restarts it once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import psutil
import pytest
import torch
from openai import AsyncOpenAI, OpenAI

from chat_qwen_awq import model_spec
from chat_qwen_awq.demo import TINY_AWQ_HEAD32
from chat_qwen_awq.testing import (
    MODEL_ID,
    assert_same_greedy,
    engine_ids,
    greedy_reference,
    vllm_ids,
    vllm_python,
)
from host.app import create_app
from host.contract.config import HostConfig
from host.scheduling.policy import Budgets
from host.sdk import ChatMessage, ChatRequest, GiB, Grant, PlacementKind, SamplingParams
from host.testing.pytest_plugin import make_config
from host.testing.server import serve_in_thread

PYTHON = vllm_python()
pytestmark = pytest.mark.skipif(
    PYTHON is None,
    reason="no vLLM environment: scripts/vllm-env creates .venv-vllm (or set PLUGHOST_VLLM_PYTHON)",
)
DEVICE = os.environ.get("PLUGHOST_VLLM_TEST_DEVICE", "cpu")
PROMPTS = ("hello", "The weather in Paris", "你好，世界")
#: A long generation (a minute or more): 30k tokens, and at least 600 numbers before the grammar lets
#: the model end (no early end token).
LONG: dict[str, Any] = {
    "temperature": 0,
    "max_tokens": 30000,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 600}},
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Beijing", "Paris"]}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def config(engine: str) -> HostConfig:
    """The tiny 32-wide-head model served by ``engine``, with its 32k context."""
    options: dict[str, Any] = {
        "engine": engine,
        "context_length": 32768,
        "cpu_head_dtype": "float32",
        "max_sequences": 4,
        "max_waiting_sequences": 2,
    }
    if engine == "vllm":
        options["vllm_python"] = PYTHON
    placements = ["gpu"] if DEVICE == "cuda" else ["cpu"]
    weights = str(TINY_AWQ_HEAD32.folder())
    return make_config({"models": {MODEL_ID: {"weights": weights, "options": options, "placements": placements}}})


def grant() -> Grant:
    if DEVICE == "cuda":
        return Grant(placement=PlacementKind.GPU, device="cuda:0", gpu_bytes=8 * GiB, host_bytes=0)
    return Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0)


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    import chat_qwen_awq

    gpus = (torch.cuda.mem_get_info(0)[0] - GiB,) if DEVICE == "cuda" else ()
    built = create_app(config("vllm"), plugins=[chat_qwen_awq], budgets=Budgets(gpus=gpus, host=16 * GiB))
    yield built


@pytest.fixture(scope="module")
def server(app: Any) -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=600) as c:
        c.post("/models/" + MODEL_ID + "/load", cast_to=object)  # the engine starts here, once
        yield c


@pytest.fixture(scope="module")
def vllm(app: Any, client: OpenAI) -> Any:
    """The served VllmChatBackend (loaded by ``client``)."""
    backend = app.state.scheduler.backend_of(MODEL_ID)
    assert type(backend).__name__ == "VllmChatBackend" and backend.engine.alive
    return backend


@pytest.fixture(scope="module")
def ours() -> Iterator[Any]:
    """The plugin's own engine on the same model and device."""
    from chat_qwen_awq.backend import QwenAwqChatBackend

    backend = QwenAwqChatBackend(model_spec(config("plughost")))
    backend.load(grant())
    yield backend
    backend.unload()


def greedy(text: str, tokens: int = 30, **kwargs: Any) -> ChatRequest:
    sampling = SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.0)
    return ChatRequest(model=MODEL_ID, messages=(ChatMessage("user", text),), sampling=sampling, **kwargs)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def engine_count(backend: Any, what: str) -> int:
    return int(backend.engine.call(what, timeout=30))


def until_running(backend: Any) -> None:
    """Wait until the engine runs a generation (the test then acts at once: the client reading the
    stream may lag far behind the engine, which writes a long answer in a few seconds)."""
    deadline = time.monotonic() + 60
    while not engine_count(backend, "running"):
        assert time.monotonic() < deadline, "the generation never reached the engine"
        time.sleep(0.01)


def test_the_engine_runs_in_its_own_process_on_loopback_only(vllm: Any) -> None:
    bridge = psutil.Process(vllm.engine.pid)
    family = [bridge, *bridge.children(recursive=True)]
    assert bridge.pid != os.getpid() and len(family) >= 2  # the bridge and vLLM's engine core (at least)
    for process in family:
        for conn in process.net_connections(kind="inet"):
            assert conn.status != psutil.CONN_LISTEN or conn.laddr.ip in ("127.0.0.1", "::1"), conn


def test_greedy_tokens_equal_ours_and_generate(vllm: Any, ours: Any) -> None:
    for text in PROMPTS:
        request = greedy(text, top_logprobs=1)
        theirs, last = asyncio.run(vllm_ids(vllm, request))
        mine, _ = asyncio.run(engine_ids(ours, request))
        reference, scores = greedy_reference(ours, request)
        if DEVICE == "cpu":  # vLLM in fp16, ours and generate in fp32: equal on this model (checked)
            assert theirs == mine == reference, text
        else:  # different GPU kernels (AWQ Marlin, autoawq): equal, or parted only at an fp16 near-tie
            assert_same_greedy(theirs, reference, scores)
            assert_same_greedy(mine, reference, scores)
        assert last.completion_tokens == len(theirs) and last.prompt_tokens == len(ours.prepare(request).prompt_ids)


def test_logprobs_are_ours(client: OpenAI, ours: Any) -> None:
    kwargs: Any = dict(model=MODEL_ID, messages=messages("hello"), temperature=0, max_tokens=12, top_p=1)
    got = client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=3, extra_body={"repetition_penalty": 1})
    content = got.choices[0].logprobs.content
    assert len(content) == got.usage.completion_tokens
    request = ChatRequest(
        model=MODEL_ID,
        messages=(ChatMessage("user", "hello"),),
        sampling=SamplingParams(max_tokens=12, temperature=0, repetition_penalty=1.0),
        top_logprobs=3,
    )

    async def mine() -> list[Any]:
        return [lp for d in [d async for d in ours.generate(request)] for lp in d.logprobs or []]

    reference = asyncio.run(mine())
    for a, b in zip(content, reference):
        assert a.token == b.token and [t.token for t in a.top_logprobs] == [t.token for t in b.top]
        assert a.logprob == pytest.approx(b.logprob, abs=2e-2)  # fp16 (vLLM) against fp32
        assert a.top_logprobs[0].token == a.token and a.top_logprobs[0].logprob >= a.top_logprobs[1].logprob


def test_stream_equals_non_stream_with_usage(client: OpenAI) -> None:
    kwargs: Any = dict(model=MODEL_ID, messages=messages("The weather in Paris"), temperature=0, max_tokens=40)
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    content = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in content) == full.choices[0].message.content
    assert content[-1].choices[0].finish_reason == full.choices[0].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        full.usage.prompt_tokens,
        full.usage.completion_tokens,
    )


def test_n_choices_and_seeds(client: OpenAI) -> None:
    kwargs: Any = dict(model=MODEL_ID, messages=messages("hello"), temperature=1.0, max_tokens=20, seed=7, n=3)
    a = client.chat.completions.create(**kwargs)
    b = client.chat.completions.create(**kwargs)
    texts = [c.message.content for c in a.choices]
    assert len(texts) == 3 and texts == [c.message.content for c in b.choices]
    assert len(set(texts)) == 3  # seed + i per choice


def test_stop_strings_end_the_text_before_them(client: OpenAI) -> None:
    kwargs: Any = dict(model=MODEL_ID, messages=messages("hello"), temperature=0, max_tokens=30)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = client.chat.completions.create(**kwargs, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[: full.index(stop)]


def test_a_named_tool_call_validates(client: OpenAI) -> None:
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    got = client.chat.completions.create(
        model=MODEL_ID, messages=messages("Weather?"), tools=[WEATHER], tool_choice=choice, max_tokens=60
    ).choices[0]
    assert got.finish_reason == "tool_calls" and len(got.message.tool_calls) >= 1
    call = got.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_a_json_schema_validates(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "city": {"enum": ["Beijing", "Paris"]}},
        "required": ["ok", "city"],
        "additionalProperties": False,
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    got = client.chat.completions.create(model=MODEL_ID, messages=messages("json"), response_format=fmt, max_tokens=40)
    assert got.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(got.choices[0].message.content), schema)


def test_a_schema_it_cannot_enforce_is_a_400(client: OpenAI) -> None:
    schema = {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_ID, messages=messages("x"), response_format=fmt)
    assert caught.value.body["param"] == "response_format.json_schema.schema"


def test_the_hostile_bounds_hold_for_vllm_too(client: OpenAI) -> None:
    # Issue 26's shapes reach vLLM's backend through the same Preparer and Grammars as our engine's.
    deep: Any = {"type": "object"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}}
    for schema, words in ((deep, "levels deep"), (many, "bytes of JSON")):
        fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL_ID, messages=messages("x"), response_format=fmt)
        assert caught.value.body["param"] == "response_format.json_schema.schema" and words in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL_ID, messages=messages("x"), n=16, max_tokens=4000, logprobs=True, top_logprobs=20
        )
    assert caught.value.code == "request_too_large"
    tiny = client.chat.completions.create(model=MODEL_ID, messages=messages("x"), max_tokens=3, temperature=1e-320)
    assert tiny.choices[0].finish_reason in ("length", "stop")  # a subnormal temperature is greedy


def test_a_closed_stream_is_aborted_in_the_engine(client: OpenAI, vllm: Any) -> None:
    aborted = engine_count(vllm, "aborted")
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages("hello"), stream=True, **LONG)
    until_running(vllm)
    closed = time.monotonic()
    stream.close()
    while engine_count(vllm, "running") and time.monotonic() < closed + 30:
        time.sleep(0.05)
    # stopped long before its 30,000 tokens (about a minute), by an abort from the server
    assert engine_count(vllm, "running") == 0 and time.monotonic() - closed < 15
    assert engine_count(vllm, "aborted") == aborted + 1


def test_a_full_line_is_a_429(server: str, vllm: Any) -> None:
    async def run() -> list[str]:
        async with AsyncOpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=120) as c:

            async def first(c: AsyncOpenAI) -> tuple[str, Any]:
                """'started' (with the open stream) or the error code; a refusal is a 429, or an error event
                when the answer's headers went out before it (a model that takes over 0.5 s to answer)."""
                try:
                    ask = messages("count")
                    stream = await c.chat.completions.create(model=MODEL_ID, messages=ask, stream=True, **LONG)
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            return "started", stream
                except openai.APIError as exc:
                    return str(exc.code), None
                return "ended", None

            # 4 run, 2 wait for a slot, the seventh is refused; then the running ones are closed
            calls = [asyncio.ensure_future(first(c)) for _ in range(7)]
            codes, running = [], []
            for call in asyncio.as_completed(calls):
                code, stream = await call
                codes.append(code)
                running += [stream] if stream is not None else []
                if "queue_full" in codes:
                    for stream in running:
                        await stream.close()
                    running.clear()
            return codes

    codes = asyncio.run(run())
    assert sorted(codes) == ["queue_full"] + ["started"] * 6
    deadline = time.monotonic() + 30
    while engine_count(vllm, "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine_count(vllm, "running") == 0


def test_sleep_and_wake(vllm: Any) -> None:
    before, engine = asyncio.run(vllm_ids(vllm, greedy("hello")))[0], vllm.engine
    free = torch.cuda.mem_get_info(0)[0] if DEVICE == "cuda" else 0
    serving = vllm.grant
    vllm.relocate(Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0, parked=True))
    assert vllm.sleeping and engine_count(vllm, "sleeping") == 1
    if DEVICE == "cuda":  # level 1 frees the weights and the KV cache on the GPU
        assert torch.cuda.mem_get_info(0)[0] > free
    vllm.relocate(serving)  # back where it was: a wake-up, not a new engine
    assert not vllm.sleeping and engine_count(vllm, "sleeping") == 0
    assert vllm.engine is engine and asyncio.run(vllm_ids(vllm, greedy("hello")))[0] == before


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_crashed_engine_fails_its_requests_and_restarts_on_the_next(client: OpenAI, vllm: Any) -> None:
    expected = client.chat.completions.create(model=MODEL_ID, messages=messages("hello"), temperature=0, max_tokens=20)
    old = vllm.engine
    family = [old.pid, *(p.pid for p in psutil.Process(old.pid).children(recursive=True))]
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages("hello"), stream=True, **LONG)
    until_running(vllm)
    for pid in family[1:]:  # generating now: kill vLLM's engine processes, as a CUDA fault or the OOM killer would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert caught.value.code == "engine_unavailable"
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old.alive and all(gone(pid) for pid in family)  # nothing of the old engine is left behind
    again = client.chat.completions.create(model=MODEL_ID, messages=messages("hello"), temperature=0, max_tokens=20)
    assert again.choices[0].message.content == expected.choices[0].message.content
    assert vllm.engine is not old and vllm.engine.alive
