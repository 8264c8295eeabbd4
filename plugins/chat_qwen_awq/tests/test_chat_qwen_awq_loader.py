"""The loader: AWQ layers on the CPU, the hybrid path (cpu for the GPU, disk for the overflow), relocation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from chat_qwen_awq.testing import assert_engine_equals_generate, cpu_grant, tiny_config
from host.contract.domain import ChatMessage, ChatRequest, SamplingParams
from host.contract.spec import Grant, PlacementKind


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def references(awq_folder: Path) -> tuple[Any, Any]:
    """(the fp16 model the AWQ checkpoint was quantised from, that model with the 4-bit weights), in fp32."""
    from awq.utils.packing_utils import dequantize_gemm  # autoawq's own unpacking: a reference independent of ours
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from chat_qwen_awq.demo import TINY_FP16, awq_group_size

    fp16 = TINY_FP16.folder()
    original = AutoModelForCausalLM.from_pretrained(str(fp16), dtype=torch.float32).eval()
    quantised = AutoModelForCausalLM.from_pretrained(str(fp16), dtype=torch.float32).eval()
    tensors = load_file(str(awq_folder / "model.safetensors"))
    g = awq_group_size(TINY_FP16.shape)
    with torch.no_grad():
        for name, module in quantised.named_modules():
            if isinstance(module, torch.nn.Linear) and f"{name}.qweight" in tensors:
                w = dequantize_gemm(
                    tensors[f"{name}.qweight"], tensors[f"{name}.qzeros"], tensors[f"{name}.scales"], 4, g
                )
                module.weight.copy_(w.t().float())
    return original, quantised


def test_cpu_forward_matches_the_fp16_model_within_4bit_error(backend: Any, references: tuple[Any, Any]) -> None:
    from awq.modules.linear import gemm

    original, quantised = references
    model = backend.loaded.model
    assert not torch.cuda.is_available() and gemm.TRITON_AVAILABLE is False  # triton crashes on the CPU
    assert model.model.embed_tokens.weight.dtype == torch.float32  # cpu → fp32 compute
    ids = torch.randint(0, 2000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids).logits
        exact = quantised(ids).logits
        fp16 = original(ids).logits
    scale = exact.abs().max()
    # Against the same 4-bit weights: only the CPU kernel's bf16 activations differ.
    assert (ours - exact).abs().max() < 0.02 * scale
    # Against the unquantised model: no more error than 4-bit quantisation itself brings.
    quant_error = (exact - fp16).abs().mean()
    assert (ours - fp16).abs().mean() < 1.1 * quant_error + 1e-3
    assert torch.nn.functional.cosine_similarity(ours.flatten(), fp16.flatten(), dim=0) > 0.95


def test_cpu_kernel_matches_autoawq_dequantisation(backend: Any) -> None:
    from awq.utils.packing_utils import dequantize_gemm

    from chat_qwen_awq import loader

    checked = 0
    for name, module in backend.loaded.model.named_modules():
        if not hasattr(module, "prepare_cpu"):
            continue
        x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(1))
        w = dequantize_gemm(module.qweight, module.qzeros, module.scales, 4, module.group_size).float()
        assert torch.equal(
            loader.dequantize(module.qweight, module.qzeros, module.scales, module.group_size, torch.float16), w.half()
        ), name
        expected = x @ w + (module.bias.float() if module.bias is not None else 0)
        got = module(x)
        assert got.dtype == torch.float32 and got.shape == (3, module.out_features)
        assert (got - expected).abs().max() < 0.02 * expected.abs().max(), name
        checked += 1
    assert checked == 2 * 7


async def _greedy_text(backend: Any, content: str = "Tell me about the Great Wall.", n: int = 40) -> tuple[str, int]:
    request = ChatRequest(
        model="m", messages=(ChatMessage("user", content),), sampling=SamplingParams(max_tokens=n, temperature=0)
    )
    parts = [d async for d in backend.generate(request)]
    return "".join(d.text for d in parts), parts[-1].completion_tokens


def test_hybrid_with_disk_overflow_equals_the_in_memory_load(backend: Any, awq_folder: Path, tmp_path: Path) -> None:
    from chat_qwen_awq import loader, model_spec, sizing
    from chat_qwen_awq.backend import QwenAwqChatBackend

    config = _config(awq_folder)
    shape = sizing.ModelShape.from_config(config)
    everything = loader.plan_device_map(config, backend.limits, 1 << 40, device="cpu", overflow="disk")
    assert everything.gpu_layers == shape.num_hidden_layers == 2
    budget = everything.device_bytes - 1  # a "GPU" (cpu stands for it) one byte short of the second layer
    plan = loader.plan_device_map(config, backend.limits, budget, device="cpu", overflow="disk")
    assert plan.gpu_layers == 1

    offload = tmp_path / "offload"
    other = QwenAwqChatBackend(model_spec(tiny_config(offload_dir=str(offload), cpu_head_dtype="float32")))
    other.load(Grant(placement=PlacementKind.HYBRID, device="cpu", gpu_bytes=budget, host_bytes=0))
    try:
        assert other.loaded.plan.device_map["model.layers.1"] == "disk"
        assert other.loaded.decoder is None  # offloaded layers arrive through hooks: transformers' forward
        assert other.loaded.plan.device_map["model.layers.0"] == "cpu"
        assert any(offload.glob("model.layers.1.*qweight.dat"))
        layer = other.loaded.model.model.layers[1].mlp.down_proj
        assert layer.qweight.device.type == "meta"  # a buffer, offloaded thanks to offload_buffers=True
        ids = torch.randint(0, 2000, (1, 16), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert torch.equal(other.loaded.model(ids).logits, backend.loaded.model(ids).logits)
        assert asyncio.run(_greedy_text(other)) == asyncio.run(_greedy_text(backend))
    finally:
        other.unload()


def test_relocate_moves_without_reading_the_checkpoint(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_qwen_awq import loader, model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend

    other = QwenAwqChatBackend(model_spec(tiny_config()))
    other.load(cpu_grant())
    try:
        expected = asyncio.run(_greedy_text(backend))

        def no_disk(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("relocate read the checkpoint")

        monkeypatch.setattr(loader, "checkpoint_tensors", no_disk)
        config = _config(other.folder)
        budget = loader.plan_device_map(config, other.limits, 1 << 40, device="cpu", overflow="disk").device_bytes - 1
        other.relocate(Grant(placement=PlacementKind.HYBRID, device="cpu", gpu_bytes=budget, host_bytes=0))
        assert other.loaded.plan.offloaded and other.loaded.offload_dir is not None
        folder = other.loaded.offload_dir
        assert asyncio.run(_greedy_text(other)) == expected
        other.relocate(cpu_grant())
        assert not other.loaded.plan.offloaded and not folder.exists()
        assert asyncio.run(_greedy_text(other)) == expected
    finally:
        other.unload()
    assert other.engine is None and other.loaded is None


def test_bf16_embeddings_and_head_on_the_cpu(backend: Any) -> None:
    from chat_qwen_awq import model_spec, sizing
    from chat_qwen_awq.backend import QwenAwqChatBackend

    spec = model_spec(tiny_config(cpu_head_dtype="bfloat16"))
    shape = sizing.ModelShape.from_config(backend.config)
    saved = 2 * 2 * shape.vocab_size * shape.hidden_size  # two untied matrices, 2 bytes less per value
    assert spec.placements[-1].host_bytes == backend.spec.placements[-1].host_bytes - saved
    other = QwenAwqChatBackend(spec)
    other.load(cpu_grant())
    try:
        model = other.loaded.model
        state = dict(other.loaded.tensors())
        assert state["lm_head.weight"].dtype == model.model.embed_tokens.weight.dtype == torch.bfloat16
        assert model.lm_head.packed is not None  # multiplied through oneDNN's reordered copy
        ids = torch.randint(0, 2000, (2, 16), generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            ours, reference = model(ids).logits, backend.loaded.model(ids).logits
        assert ours.dtype == torch.float32 and (ours - reference).abs().max() < 0.02 * reference.abs().max()
        assert_engine_equals_generate(other)
    finally:
        other.unload()


def test_int8_embeddings_and_head_on_the_cpu(backend: Any) -> None:
    """The opt-in lossy head: declared smaller, logits within int8 error of the fp32 head, the engine
    equal to ``generate`` on the same quantised model, and a relocation reads the dequantised rows."""
    from chat_qwen_awq import cpu_kernels, model_spec, sizing
    from chat_qwen_awq.backend import QwenAwqChatBackend
    from chat_qwen_awq.head import quantize_rows_int8

    spec = model_spec(tiny_config(cpu_head_dtype="int8"))
    shape = sizing.ModelShape.from_config(backend.config)
    # two matrices (untied), int8 codes and a bf16 scale per row instead of fp32; the kernel's fp32 scales
    saved = 2 * shape.vocab_size * (4 * shape.hidden_size - (shape.hidden_size + 2)) - 4 * shape.vocab_size
    assert spec.placements[-1].host_bytes == backend.spec.placements[-1].host_bytes - saved
    other = QwenAwqChatBackend(spec)
    other.load(cpu_grant())
    try:
        model = other.loaded.model
        assert model.model.embed_tokens.codes.dtype == torch.int8
        kern = cpu_kernels.kernel()
        if kern is not None and kern.usable():  # the VNNI kernel's packed rows replace an untied head's codes
            assert model.lm_head.packed is not None and "codes" not in model.lm_head._buffers
        else:
            assert model.lm_head.codes.dtype == torch.int8
        ids = torch.randint(0, 2000, (2, 16), generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            ours, reference = model(ids).logits, backend.loaded.model(ids).logits
        error = ((ours - reference).norm() / reference.norm()).item()
        assert ours.dtype == torch.float32 and error < 0.05, error
        # The rows the state dict gives back are the quantised ones, exactly.
        state = dict(other.loaded.tensors())
        codes, scales = quantize_rows_int8(dict(backend.loaded.tensors())["lm_head.weight"])
        expected_rows = codes.float() * scales.float()[:, None]
        assert torch.equal(state["lm_head.weight"], expected_rows)
        assert_engine_equals_generate(other)
    finally:
        other.unload()
