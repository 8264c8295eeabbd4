"""The CUDA paths: autoawq's GPU kernels, the GPU + host-RAM split, and real GPU memory against the declaration.

Skipped where torch sees no CUDA device (CI has none). On a GPU machine::

    python -m pytest plugins/chat_qwen_awq/tests/test_chat_qwen_awq_cuda.py

Greedy decoding on random weights meets near-ties (two logits a rounding error apart); where a
GPU kernel legitimately rounds differently from the reference, outputs may part at such a
near-tie and nowhere else — :func:`assert_same_greedy` checks exactly that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from chat_qwen_awq.testing import (
    MODEL_ID,
    QWEN3_ID,
    TINY_QWEN3,
    TINY_QWEN3_DENSE,
    assert_same_greedy,
    engine_ids,
    greedy_reference,
    qwen3_config,
    tiny_config,
)
from host.contract.domain import ChatMessage, ChatRequest, SamplingParams
from host.contract.spec import Grant, PlacementKind
from host.testing.pytest_plugin import make_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _request(content: str, n: int = 48) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=(ChatMessage("user", content),),
        sampling=SamplingParams(max_tokens=n, temperature=0, repetition_penalty=1.0),
    )


async def _engine_tokens(backend: Any, req: ChatRequest) -> list[int]:
    return (await engine_ids(backend, req))[0]


def _gpu_grant(spec: Any, placement: PlacementKind = PlacementKind.GPU, gpu_bytes: int | None = None) -> Grant:
    """The scheduler's grant of ``placement`` on cuda:0 (its declared GPU bytes unless given)."""
    declared = next(p for p in spec.placements if p.kind == placement)
    return Grant(
        placement=placement,
        device="cuda:0",
        gpu_bytes=declared.gpu_bytes if gpu_bytes is None else gpu_bytes,
        host_bytes=0,
    )


def _load(spec: Any, grant: Grant) -> Any:
    from chat_qwen_awq.backend import QwenAwqChatBackend

    backend = QwenAwqChatBackend(spec)
    backend.load(grant)
    return backend


def _spec(kind: str) -> Any:
    """The declaration of a tiny model: the Qwen2 AWQ stand-in, the Qwen3 AWQ one, or unquantised Qwen3."""
    from chat_qwen_awq import model_spec

    if kind == "qwen2":
        return model_spec(tiny_config())
    return model_spec(qwen3_config(TINY_QWEN3 if kind == "qwen3" else TINY_QWEN3_DENSE), QWEN3_ID)


@pytest.fixture(scope="module", params=["qwen2", "qwen3", "qwen3dense"])
def gpu_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A tiny model, all on cuda:0: Qwen2 AWQ, Qwen3 AWQ, Qwen3 unquantised."""
    spec = _spec(request.param)
    backend = _load(spec, _gpu_grant(spec))
    yield backend
    backend.unload()


def test_gpu_load_runs_autoawq_gpu_kernels_in_fp16(gpu_backend: Any) -> None:
    from awq.modules.linear import gemm

    model = gpu_backend.loaded.model
    assert model.model.embed_tokens.weight.dtype == torch.float16
    linear = model.model.layers[0].mlp.down_proj
    if isinstance(linear, torch.nn.Linear):  # an unquantised checkpoint: fp16 on the GPU
        assert linear.weight.device.type == "cuda" and linear.weight.dtype == torch.float16
        return
    assert isinstance(linear, gemm.WQLinear_GEMM)
    assert linear.qweight.device.type == "cuda" and linear.qweight.dtype == torch.int32
    assert gemm.TRITON_AVAILABLE or gemm.awq_ext is not None  # a real GPU kernel, not the CPU fallback
    # The GPU kernel agrees with autoawq's own dequantisation.
    from awq.utils.packing_utils import dequantize_gemm

    x = torch.randn(
        5, linear.in_features, device="cuda", dtype=torch.float16, generator=torch.Generator("cuda").manual_seed(0)
    )
    w = dequantize_gemm(linear.qweight, linear.qzeros, linear.scales, 4, linear.group_size)
    expected = (x.float() @ w.float()) + (linear.bias.float() if linear.bias is not None else 0)
    got = linear(x).float()
    assert (got - expected).abs().max() < 0.01 * expected.abs().max() + 1e-3


@pytest.mark.parametrize("content", ["Tell me about the Great Wall of China.", "请用三句话介绍一下北京和上海。"])
def test_gpu_greedy_matches_transformers_generate(gpu_backend: Any, content: str) -> None:
    req = _request(content)
    ours = asyncio.run(_engine_tokens(gpu_backend, req))
    reference, scores = greedy_reference(gpu_backend, req)
    assert_same_greedy(ours, reference, scores)


def test_gpu_batched_streams_equal_solo_runs(gpu_backend: Any) -> None:
    reqs = [_request(c, 32) for c in ("hello", "Tell me about the sea.", "今天天气晴朗", "Explain gravity " * 4)]

    async def together() -> list[list[int]]:
        return list(await asyncio.gather(*(_engine_tokens(gpu_backend, r) for r in reqs)))

    batched = asyncio.run(together())
    assert gpu_backend.engine.stats.max_batch >= 2
    for req, got in zip(reqs, batched):
        reference, scores = greedy_reference(gpu_backend, req)
        assert_same_greedy(got, reference, scores)


def test_hybrid_splits_layers_between_the_gpu_and_host_ram(gpu_backend: Any) -> None:
    from chat_qwen_awq import loader

    config = gpu_backend.config
    spec = gpu_backend.spec
    everything = loader.plan_device_map(config, gpu_backend.limits, 1 << 40, device="cuda:0", overflow="cpu")
    budget = everything.device_bytes - 1  # one byte short of the second layer
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    hybrid = _load(spec, _gpu_grant(spec, PlacementKind.HYBRID, budget))
    try:
        plan = hybrid.loaded.plan
        assert plan.gpu_layers == 1 and plan.device_map["model.layers.1"] == "cpu"
        weight = "qweight" if hasattr(hybrid.loaded.model.model.layers[1].mlp.down_proj, "qweight") else "weight"
        offloaded = getattr(hybrid.loaded.model.model.layers[1].mlp.down_proj, weight)
        assert offloaded.device.type == "meta"  # kept in host RAM (offload_buffers=True), not on the GPU
        assert hybrid.loaded.host_state[f"model.layers.1.mlp.down_proj.{weight}"].device.type == "cpu"
        assert getattr(hybrid.loaded.model.model.layers[0].mlp.down_proj, weight).device.type == "cuda"
        assert torch.cuda.memory_allocated() - before <= budget
        ids = torch.randint(0, 2000, (2, 24), generator=torch.Generator().manual_seed(2)).cuda()
        with torch.no_grad():
            split = hybrid.loaded.model(ids).logits
            whole = gpu_backend.loaded.model(ids).logits
        torch.testing.assert_close(split, whole, rtol=0, atol=1e-3)
        req = _request("Tell me about the Great Wall of China.")
        reference, scores = greedy_reference(gpu_backend, req)
        assert_same_greedy(asyncio.run(_engine_tokens(hybrid, req)), reference, scores)
    finally:
        hybrid.unload()


def test_relocate_gpu_to_cpu_and_back(awq_folder: Path) -> None:
    from chat_qwen_awq import model_spec
    from chat_qwen_awq.testing import cpu_grant

    spec = model_spec(tiny_config())
    backend = _load(spec, _gpu_grant(spec))
    try:
        req = _request("Explain gravity to a child.", 24)
        on_gpu = asyncio.run(_engine_tokens(backend, req))
        backend.relocate(cpu_grant())
        assert backend.loaded.device.type == "cpu"
        assert backend.loaded.model.model.layers[0].mlp.down_proj.qweight.device.type == "cpu"
        assert len(asyncio.run(_engine_tokens(backend, req))) == len(on_gpu)
        backend.relocate(_gpu_grant(spec))
        assert backend.loaded.model.model.layers[0].mlp.down_proj.qweight.device.type == "cuda"
        reference, scores = greedy_reference(backend, req)
        assert_same_greedy(asyncio.run(_engine_tokens(backend, req)), reference, scores)
    finally:
        backend.unload()


@pytest.fixture(scope="module")
def wide_awq_folder() -> Path:
    """Real Qwen2.5-7B widths (hidden 3584, vocab 152064, group 128) with 3 of its 28 layers."""
    from chat_qwen_awq.demo import TINY_AWQ
    from host.demo.shapes import QWEN2_5_7B_SHAPE

    return TINY_AWQ.with_shape(dataclasses.replace(QWEN2_5_7B_SHAPE, num_hidden_layers=3)).folder()


def _peak_while_serving(backend: Any, prompt_tokens: int) -> int:
    """Peak GPU bytes allocated while a long prompt is prefilled and 8 streams decode."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    long_prompt = "The Great Wall of China is long. " * (prompt_tokens // 8)

    async def run() -> None:
        reqs = [_request(long_prompt, 8)] + [_request(f"Story number {i}.", 16) for i in range(7)]
        await asyncio.gather(*(_engine_tokens(backend, r) for r in reqs))

    asyncio.run(run())
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("placement", [PlacementKind.GPU, PlacementKind.HYBRID])
def test_real_gpu_memory_stays_within_the_declared_footprint(wide_awq_folder: Path, placement: PlacementKind) -> None:
    """7B-wide weights, a 2k context: what the GPU really holds at peak is within the scheduler's grant."""
    from chat_qwen_awq import model_spec, sizing

    options = {"context_length": 2048, "kv_cache_tokens": 8192, "max_sequences": 8}
    spec = model_spec(make_config({"models": {MODEL_ID: {"weights": str(wide_awq_folder), "options": options}}}))
    shape = sizing.ModelShape.from_config(json.loads((wide_awq_folder / "config.json").read_text("utf-8")))
    declared = next(p for p in spec.placements if p.kind == placement)
    # hybrid: room for the fixed part and one layer (of three)
    grant_bytes = (
        declared.gpu_bytes if placement == PlacementKind.GPU else declared.gpu_bytes + sizing.layer_bytes(shape)
    )
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    backend = _load(spec, _gpu_grant(spec, placement, grant_bytes))
    try:
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated() - base
        peak = _peak_while_serving(backend, 1500) - base
        expected_layers = 3 if placement == PlacementKind.GPU else 1
        assert backend.loaded.plan.gpu_layers == expected_layers
        print(
            f"\n{placement}: grant {grant_bytes / 2**20:.0f} MiB, resident {resident / 2**20:.0f} MiB, "
            f"peak {peak / 2**20:.0f} MiB"
        )
        assert peak <= grant_bytes
        # Not wildly over-declared either: the weights themselves are most of it.
        weights = sizing.head_bytes(shape) + expected_layers * sizing.layer_bytes(shape)
        assert resident >= 0.9 * weights
    finally:
        backend.unload()
