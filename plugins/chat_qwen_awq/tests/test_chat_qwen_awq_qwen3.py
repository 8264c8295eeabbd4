"""Qwen3 dense checkpoints (AWQ and unquantised): declared, sized, and greedy tokens equal to
transformers' ``generate`` on every CPU path (the plugin's int4 kernel with the lean step, torch's
int4 kernel, an unquantised model) and split between memory and an offload folder (hybrid)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from chat_qwen_awq.sizing import ChatOptions
from chat_qwen_awq.testing import (
    QWEN3_ID,
    TINY_QWEN3,
    TINY_QWEN3_DENSE,
    assert_engine_equals_generate,
    qwen3_backend,
    qwen3_config,
)
from host.contract.spec import GiB, Grant, PlacementKind, Task
from host.testing.pytest_plugin import make_config

#: Prompts whose greedy continuation the equality checks compare (English and Chinese).
PROMPTS = ("Tell me about the Great Wall of China.", "请用三句话介绍一下北京和上海。")


def _config_of(demo_weights: str) -> dict[str, Any]:
    from host.demo import load_demo

    return json.loads((load_demo(demo_weights.removeprefix("demo:")).folder() / "config.json").read_text("utf-8"))


def test_qwen3_8b_awq_is_declared_next_to_the_seed_model() -> None:
    from chat_qwen_awq import QWEN3, register_models, sizing

    specs = {s.id: s for s in register_models(make_config({"demo": False}))}
    assert list(specs) == ["Qwen2.5-7B-Instruct-AWQ", QWEN3_ID]
    spec = specs[QWEN3_ID]
    assert (spec.task, spec.weights, spec.demo) == (Task.CHAT, "Qwen/Qwen3-8B-AWQ", QWEN3.demo)
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.HYBRID, PlacementKind.CPU]
    shape = sizing.ModelShape.from_config(sizing.QWEN3_8B_AWQ_CONFIG)
    assert (shape.arch, shape.head_dim, shape.q_dim, shape.qkv_bias, shape.qk_norm) == ("qwen3", 128, 4096, False, True)
    # 8.19B parameters (the model card's 8.2B); 4-bit layers and 16-bit embeddings and head
    assert 8.1e9 < shape.parameters < 8.3e9
    layers = shape.num_hidden_layers * sizing.layer_bytes(shape)
    # half a byte per layer weight, and per group of 128 an fp16 scale and a 4-bit zero for each column
    in_layers = shape.parameters - 2 * shape.vocab_size * shape.hidden_size
    assert layers == pytest.approx(in_layers * (0.5 + 2.5 / 128), rel=0.001)
    assert 3.3 * GiB < layers < 3.4 * GiB
    assert sizing.head_bytes(shape) == 2 * 151936 * 4096 * 2 + 4096 * 2
    kv = 16384 * 2 * 36 * 8 * 128 * 2  # default context, K and V, layers, KV heads, head dim, fp16
    assert spec.placements[1].gpu_bytes >= sizing.head_bytes(shape) + kv
    assert spec.placements[1].flexible_bytes == layers


def test_more_qwen_checkpoints_are_declared_by_name() -> None:
    from chat_qwen_awq import register_models

    config = make_config(
        {"models": {"Qwen3-4B-AWQ": {"weights": "Qwen/Qwen3-4B-AWQ", "plugin": "chat_qwen_awq"}}, "demo": False}
    )
    spec = {s.id: s for s in register_models(config)}["Qwen3-4B-AWQ"]
    assert spec.weights == "Qwen/Qwen3-4B-AWQ" and spec.demo == "chat_qwen_awq.demo:TINY_QWEN3_AWQ"
    with pytest.raises(ValueError, match=r"models\.Qwen3-14B-AWQ\.weights: required"):
        register_models(make_config({"models": {"Qwen3-14B-AWQ": {"plugin": "chat_qwen_awq"}}}))


def test_the_demo_stand_in_serves_qwen3_8b_awq() -> None:
    from chat_qwen_awq import QWEN3
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    plugins = Path(__file__).resolve().parents[2]
    config = make_config({"plugins": {"paths": [str(plugins)]}})  # the hub weights are not on this machine
    spec = build_registry(make_plugin_manager(config), config).get(QWEN3_ID).spec
    assert spec.weights == f"demo:{QWEN3.demo}" and "DEMO" in spec.description
    assert spec.placements[-1].host_bytes < 64 * 2**20


@pytest.mark.parametrize("weights", [TINY_QWEN3, TINY_QWEN3_DENSE])
def test_analytic_sizes_match_the_meta_model(weights: str) -> None:
    """Per-head q/k norms, no q/k/v bias, a head_dim of its own: the footprint is the built model's."""
    from accelerate.utils import compute_module_sizes

    from chat_qwen_awq import loader, sizing
    from chat_qwen_awq.demo import quantization_config
    from host.demo.shapes import QWEN3_0_6B_SHAPE, qwen3_config

    real = qwen3_config(QWEN3_0_6B_SHAPE).to_dict()
    if "dense" not in weights.lower():
        real["quantization_config"] = quantization_config(128)
    for config in (_config_of(weights), real):
        shape = sizing.ModelShape.from_config(config)
        for device in ("cuda:0", "cpu"):
            sizes = compute_module_sizes(loader.build_empty_model(config, loader.compute_dtype(device)))
            layer = sizes["model.layers.0"]
            if device == "cpu" and shape.quantized:  # plus the CPU kernel's copies, not in the module
                layer += sum(sizing.int4pack_bytes(i, o, shape.group_size) for _, i, o, _ in shape.linears())
                layer += sum(
                    (i // shape.group_size) * o * 4 for n, i, o, _ in shape.linears() if n in sizing.FUSED_LINEARS
                )
            assert layer == sizing.layer_bytes(shape, cpu=device == "cpu"), (config.get("model_type"), device)
            if device != "cpu":  # the CPU's head has layouts of its own (test_chat_qwen_awq_loader)
                tied = shape.tie_word_embeddings
                head = sizes["model.embed_tokens"] + sizes["model.norm"] + (0 if tied else sizes["lm_head"])
                assert head == sizing.head_bytes(shape)


def test_unserved_architectures_are_refused_by_name() -> None:
    from chat_qwen_awq import sizing

    config = _config_of(TINY_QWEN3)
    moe = {**config, "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}
    with pytest.raises(sizing.ModelConfigError, match="mixture-of-experts"):
        sizing.ModelShape.from_config(moe)
    with pytest.raises(sizing.ModelConfigError, match="LlamaForCausalLM is not served"):
        sizing.ModelShape.from_config({**config, "architectures": ["LlamaForCausalLM"]})


@pytest.fixture(scope="module")
def qwen3(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The tiny Qwen3 AWQ stand-in on the CPU, fp32 head (the exactness reference)."""
    backend = qwen3_backend(cpu_head_dtype="float32")
    yield backend
    backend.unload()


@pytest.mark.parametrize("content", PROMPTS)
def test_greedy_equals_generate_on_the_cpu_kernel_path(qwen3: Any, content: str) -> None:
    from chat_qwen_awq import cpu_kernels

    assert type(qwen3.loaded.model).__name__ == "Qwen3ForCausalLM" and qwen3.loaded.decoder is not None
    q_proj = qwen3.loaded.model.model.layers[0].self_attn.q_proj
    kern = cpu_kernels.kernel()
    expected_pack = cpu_kernels.Int4Pack if kern is not None and kern.usable() else tuple
    assert isinstance(q_proj.cpu_pack(), expected_pack)
    assert_engine_equals_generate(qwen3, tokens=40, content=content)


def test_greedy_equals_generate_on_the_torch_kernel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_qwen_awq import cpu_kernels

    monkeypatch.setenv("PLUGHOST_AWQ_CPU_KERNEL", "torch")
    cpu_kernels.kernel.cache_clear()
    try:
        backend = qwen3_backend(cpu_head_dtype="float32")
    finally:
        monkeypatch.undo()
        cpu_kernels.kernel.cache_clear()
    try:
        pack = backend.loaded.model.model.layers[0].self_attn.q_proj.cpu_pack()
        assert isinstance(pack, tuple) and backend.loaded.decoder is not None  # torch's int4 pack, lean step
        for content in PROMPTS:
            assert_engine_equals_generate(backend, tokens=40, content=content)
    finally:
        backend.unload()


def test_unquantised_qwen3_greedy_equals_generate_and_is_sized_as_such() -> None:
    from chat_qwen_awq import sizing

    backend = qwen3_backend(TINY_QWEN3_DENSE, cpu_head_dtype="float32")
    try:
        model = backend.loaded.model
        assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
        assert backend.loaded.decoder is not None
        shape = sizing.ModelShape.from_config(backend.config)
        assert not shape.quantized and backend.spec.placements[-1].host_bytes == sizing.cpu_bytes(shape, backend.limits)
        for content in PROMPTS:
            assert_engine_equals_generate(backend, tokens=40, content=content)
    finally:
        backend.unload()


@pytest.mark.parametrize("weights", [TINY_QWEN3, TINY_QWEN3_DENSE])
def test_hybrid_with_disk_overflow_equals_generate_and_the_in_memory_load(
    qwen3: Any, weights: str, tmp_path: Path
) -> None:
    """One decoder layer on the "GPU" (the CPU stands for it), the other in an offload folder:
    transformers' forward through accelerate's hooks, greedy tokens equal to ``generate``."""
    from chat_qwen_awq import loader

    config = _config_of(weights)
    limits = qwen3.limits
    everything = loader.plan_device_map(config, limits, 1 << 40, device="cpu", overflow="disk")
    budget = everything.device_bytes - 1  # one byte short of the second layer
    grant = Grant(placement=PlacementKind.HYBRID, device="cpu", gpu_bytes=budget, host_bytes=0)
    hybrid = qwen3_backend(weights, grant, cpu_head_dtype="float32", offload_dir=str(tmp_path / "offload"))
    try:
        assert hybrid.loaded.plan.gpu_layers == 1 and hybrid.loaded.plan.device_map["model.layers.1"] == "disk"
        assert hybrid.loaded.decoder is None and any((tmp_path / "offload").glob("model.layers.1.*.dat"))
        for content in PROMPTS:
            assert_engine_equals_generate(hybrid, tokens=24, content=content)
        if weights == TINY_QWEN3:  # the same model in memory: the same logits
            ids = torch.randint(0, 2000, (1, 16), generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                assert torch.equal(hybrid.loaded.model(ids).logits, qwen3.loaded.model(ids).logits)
    finally:
        hybrid.unload()


def test_relocation_keeps_a_qwen3_model_serving(qwen3: Any) -> None:
    """Moved between placements without reading the checkpoint again (q/k norms included)."""
    from chat_qwen_awq import loader

    other = qwen3_backend(cpu_head_dtype="float32")
    try:
        config = _config_of(TINY_QWEN3)
        budget = loader.plan_device_map(config, other.limits, 1 << 40, device="cpu", overflow="disk").device_bytes - 1
        other.relocate(Grant(placement=PlacementKind.HYBRID, device="cpu", gpu_bytes=budget, host_bytes=0))
        assert other.loaded.plan.offloaded
        assert_engine_equals_generate(other, tokens=16)
        other.relocate(Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0))
        assert other.loaded.decoder is not None
        assert_engine_equals_generate(other, tokens=16)
    finally:
        other.unload()


def test_options_reach_the_qwen3_declaration(tmp_path: Path) -> None:
    from chat_qwen_awq import model_spec
    from host.contract.config import load_config

    spec = model_spec(qwen3_config(thinking="off", thinking_budget=512), QWEN3_ID)
    assert isinstance(spec.options, ChatOptions)
    assert (spec.options.thinking, spec.options.thinking_budget) == ("off", 512)
    # plugins.yaml's bare off is YAML's false: it means the same
    file = tmp_path / "plugins.yaml"
    file.write_text(f"models:\n  {QWEN3_ID}:\n    options:\n      thinking: off\n", "utf-8")
    assert model_spec(load_config(file), QWEN3_ID).options == ChatOptions(thinking=False)
