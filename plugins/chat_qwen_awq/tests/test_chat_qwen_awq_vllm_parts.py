"""The vLLM engine's parts that need no vLLM: the engine choice and its footprints, the bridge's frames,
the token stream's text and endings, and an engine process that cannot start.

(The tier against a real vLLM engine is ``test_chat_qwen_awq_vllm.py``.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_qwen_awq import model_spec, sizing, vllm_sizing
from chat_qwen_awq.engines import wants_vllm
from chat_qwen_awq.testing import MODEL_ID, tiny_config
from chat_qwen_awq.vllm_bridge import EngineConfig, Failed, Frames, FromEngine, TokenLogprobs, Tokens, frame
from host.sdk import (
    BackendError,
    ChatDelta,
    EngineUnavailable,
    GiB,
    Grant,
    InvalidRequest,
    PlacementKind,
    PlughostError,
    SamplingParams,
)
from host.testing.pytest_plugin import make_config

REAL_7B = sizing.ModelShape.from_config(sizing.QWEN2_5_7B_AWQ_CONFIG)


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A file standing for a vLLM environment's Python (the declaration only checks that it exists)."""
    monkeypatch.delenv(vllm_sizing.PYTHON_ENV, raising=False)
    path = tmp_path / "python"
    path.write_text("")
    return str(path)


def options(**kwargs: Any) -> sizing.ChatOptions:
    return sizing.ChatOptions(**kwargs)


# -- the engine choice -----------------------------------------------------------------------------
def test_auto_without_a_vllm_environment_is_the_plugins_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vllm_sizing.PYTHON_ENV, raising=False)
    spec = model_spec(tiny_config())
    assert spec.backend == vllm_sizing.OWN_BACKEND
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.HYBRID, PlacementKind.CPU]


def test_auto_with_a_vllm_environment_sizes_the_gpu_placement_for_vllm(fake_python: str) -> None:
    limits = sizing.limits_from_options(REAL_7B, options())
    backend, placements = vllm_sizing.declaration(options(vllm_python=fake_python), REAL_7B, limits)
    own = sizing.placements(REAL_7B, limits)
    assert backend == vllm_sizing.AUTO_BACKEND
    assert placements[0] == vllm_sizing.gpu_placement(REAL_7B, limits) and placements[1:] == own[1:]
    # the same model, KV cache and working set as the plugin's engine, plus what vLLM needs besides
    assert placements[0].gpu_bytes == own[0].gpu_bytes + vllm_sizing.GPU_OVERHEAD_BYTES
    assert 7.5 * GiB < placements[0].gpu_bytes < 8.5 * GiB  # one 24 GiB GPU holds it beside embed + rerank


def test_the_environment_variable_names_the_vllm_python(fake_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vllm_sizing.PYTHON_ENV, fake_python)
    assert vllm_sizing.vllm_python(options()) == fake_python
    assert vllm_sizing.vllm_python(options(vllm_python="/nowhere/python")) is None  # the option wins, and is missing


def test_engine_vllm_declares_whole_model_placements_only(fake_python: str) -> None:
    config = make_config({"models": {MODEL_ID: {"options": {"engine": "vllm", "vllm_python": fake_python}}}})
    spec = model_spec(config)
    assert spec.backend == vllm_sizing.VLLM_BACKEND
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.CPU]
    assert spec.offload_bytes == spec.placements[1].host_bytes


def test_engine_plughost_ignores_a_vllm_environment(fake_python: str) -> None:
    config = make_config({"models": {MODEL_ID: {"options": {"engine": "plughost", "vllm_python": fake_python}}}})
    assert model_spec(config).backend == vllm_sizing.OWN_BACKEND


def test_vllm_gets_the_declared_kv_cache() -> None:
    limits = sizing.limits_from_options(REAL_7B, options(kv_cache_tokens=32768, context_length=16384))
    # 28 layers x 4 KV heads x 128 x 2 (K and V) x 2 bytes = 56 KiB a token
    assert vllm_sizing.kv_cache_bytes(REAL_7B, limits) == (32768 + 4096) * 57344


@pytest.mark.parametrize(
    ("placement", "device", "parked", "expected"),
    [
        (PlacementKind.GPU, "cuda:0", False, True),
        (PlacementKind.GPU, "cuda:1", False, True),
        (PlacementKind.HYBRID, "cuda:0", False, False),
        (PlacementKind.CPU, "cpu", False, False),
        (PlacementKind.CPU, "cpu", True, False),
    ],
)
def test_auto_picks_vllm_for_a_whole_model_on_a_cuda_gpu(
    placement: PlacementKind, device: str, parked: bool, expected: bool
) -> None:
    assert wants_vllm(Grant(placement=placement, device=device, gpu_bytes=0, host_bytes=0, parked=parked)) is expected


def test_engine_vllm_without_an_environment_fails_the_load_naming_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chat_qwen_awq.vllm_backend import VllmChatBackend

    monkeypatch.delenv(vllm_sizing.PYTHON_ENV, raising=False)
    backend = VllmChatBackend(model_spec(tiny_config(engine="vllm")))
    with pytest.raises(RuntimeError, match=r"options\.vllm_python or \$PLUGHOST_VLLM_PYTHON"):
        backend.load(Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0))


# -- the bridge's frames ---------------------------------------------------------------------------
def test_frames_survive_any_split() -> None:
    messages = [Tokens(1, [5, 6], [TokenLogprobs(-0.5, [(5, -0.5), (9, -1.0)])] * 2), Failed(2, "x", invalid=True)]
    data = b"".join(frame(m) for m in messages)
    for cut in range(1, len(data)):
        frames = Frames(FromEngine)
        assert frames.feed(data[:cut]) + frames.feed(data[cut:]) == messages


def test_an_oversized_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        Frames(FromEngine).feed(b"\xff\xff\xff\xff")


# -- the token stream -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(awq_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(awq_folder))


def stream_of(tokenizer: Any, *, stops: tuple[str, ...] = (), max_tokens: int = 50, top: int | None = None) -> Any:
    from chat_qwen_awq.logprobs import TokenTexts
    from chat_qwen_awq.preparing import Prompt
    from chat_qwen_awq.sampling import resolve
    from chat_qwen_awq.vllm_backend import VllmStream

    prompt = Prompt([1, 2, 3], max_tokens, resolve(SamplingParams(), {}), stops, top)
    texts = TokenTexts(lambda t: tokenizer.decode([t]).encode())
    eos = frozenset({tokenizer.convert_tokens_to_ids("<|im_end|>")})
    return VllmStream(prompt, tokenizer, eos, texts, asyncio.new_event_loop())


def drain(stream: Any) -> list[ChatDelta | PlughostError]:
    stream.flush()
    stream.loop.run_until_complete(asyncio.sleep(0))  # run the delivery callback
    out = []
    while not stream.queue.empty():
        out.append(stream.queue.get_nowait())
    stream.loop.close()
    return out


def test_tokens_become_text_until_the_end_token(tokenizer: Any) -> None:
    ids = tokenizer.encode("你好, world", add_special_tokens=False)
    stream = stream_of(tokenizer)
    for token in ids:  # one token a message: multi-byte characters are held until complete
        stream.deliver(Tokens(1, [token]))
    stream.deliver(Tokens(1, [tokenizer.convert_tokens_to_ids("<|im_end|>")], finish="stop"))
    deltas = drain(stream)
    assert "".join(d.text for d in deltas) == "你好, world"
    assert all("\ufffd" not in d.text for d in deltas)
    last = deltas[-1]
    assert last.finish_reason == "stop" and (last.prompt_tokens, last.completion_tokens) == (3, len(ids) + 1)


def test_a_stop_string_ends_the_text_before_it(tokenizer: Any) -> None:
    stream = stream_of(tokenizer, stops=("world",))
    stream.deliver(Tokens(1, tokenizer.encode("hello world and more", add_special_tokens=False)))
    deltas = drain(stream)
    assert "".join(d.text for d in deltas) == "hello " and deltas[-1].finish_reason == "stop"
    assert stream.finished


def test_the_token_budget_ends_with_length_and_logprobs_keep_pace(tokenizer: Any) -> None:
    ids = tokenizer.encode("one two three four", add_special_tokens=False)
    stream = stream_of(tokenizer, max_tokens=len(ids), top=1)
    lps = [TokenLogprobs(-0.1, [(t, -0.1), (0, -3.0)]) for t in ids]
    stream.deliver(Tokens(1, ids[:2], lps[:2]))
    stream.deliver(Tokens(1, ids[2:], lps[2:], finish="length"))
    deltas = drain(stream)
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == len(ids)
    logprobs = [lp for d in deltas for lp in d.logprobs or []]
    assert [lp.logprob for lp in logprobs] == [-0.1] * len(ids) and all(len(lp.top) == 1 for lp in logprobs)


@pytest.mark.parametrize(
    ("failed", "error"),
    [
        (Failed(1, "bad grammar", invalid=True), InvalidRequest),
        (Failed(1, "the vLLM engine died", dead=True), EngineUnavailable),
        (Failed(1, "RuntimeError: boom"), BackendError),
    ],
)
def test_failures_become_the_right_errors(tokenizer: Any, failed: Failed, error: type[Exception]) -> None:
    stream = stream_of(tokenizer)
    stream.deliver(failed)
    (item,) = drain(stream)
    assert isinstance(item, error)


# -- the engine process --------------------------------------------------------------------------
def tiny_engine_config() -> EngineConfig:
    return EngineConfig(
        model="/nowhere", device="cpu", dtype="float16", max_model_len=64, max_num_seqs=1,
        max_num_batched_tokens=64, kv_cache_bytes=1 << 20,
    )  # fmt: skip


def test_a_missing_python_is_a_start_error_naming_it() -> None:
    from chat_qwen_awq.vllm_engine import EngineProcess, EngineStartError

    with pytest.raises(EngineStartError, match="/nowhere/python"):
        EngineProcess("/nowhere/python", tiny_engine_config(), cuda_device=None).start()


def test_an_environment_without_vllm_is_a_start_error_and_leaves_nothing_behind() -> None:
    from chat_qwen_awq.vllm_engine import EngineProcess, EngineStartError

    engine = EngineProcess(sys.executable, tiny_engine_config(), cuda_device=None, start_timeout_s=60)
    with pytest.raises(EngineStartError, match="No module named 'vllm'"):
        engine.start()
    assert not engine.alive and engine.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(engine.pid, 0)  # the bridge is gone (and reaped)
    assert engine._rpc_dir is None  # its private folder is removed


def test_auto_serves_a_cpu_grant_with_the_plugins_engine(fake_python: str) -> None:
    from chat_qwen_awq.engines import AutoChatBackend
    from chat_qwen_awq.testing import cpu_grant
    from host.sdk import ChatMessage, ChatRequest

    spec = model_spec(tiny_config(vllm_python=fake_python))
    assert spec.backend == vllm_sizing.AUTO_BACKEND
    backend = AutoChatBackend(spec)
    backend.load(cpu_grant())
    try:
        assert backend.engine_name == "plughost"
        request = ChatRequest(
            model=MODEL_ID, messages=(ChatMessage("user", "hi"),), sampling=SamplingParams(max_tokens=3)
        )

        async def run() -> list[ChatDelta]:
            return [d async for d in backend.generate(request)]

        assert asyncio.run(run())[-1].completion_tokens == 3
    finally:
        backend.unload()
    assert backend.engine_name == "none"
