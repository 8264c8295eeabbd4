"""The declaration: cheap registration, footprints from the config, the device map of the real 7B."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_qwen_awq.sizing import ChatOptions
from chat_qwen_awq.testing import MODEL_ID, PLUGIN_ROOT, TINY, tiny_config
from host import hookimpl
from host.contract.config import ConfigError, HostConfig
from host.contract.spec import GiB, ModelSpec, PlacementKind, Task
from host.testing.pytest_plugin import make_config


def awq_config(shape: Any, group_size: int = 128) -> dict[str, Any]:
    """A config.json mapping of a Qwen2 AWQ checkpoint of ``shape`` (host.demo.shapes presets)."""
    from host.demo.shapes import qwen2_config

    data = qwen2_config(shape).to_dict()
    data["quantization_config"] = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "version": "gemm",
        "zero_point": True,
        "modules_to_not_convert": None,
    }
    return data


def test_registration_imports_no_torch() -> None:
    code = (
        "import sys; import chat_qwen_awq; from host.contract.config import config_from_dict; "
        "specs = chat_qwen_awq.register_models(config_from_dict({})); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'accelerate', 'awq')]; "
        "assert not heavy, heavy; assert specs[0].backend.startswith('chat_qwen_awq.backend:')"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_ROOT), str(root)])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=60)


def test_discovered_from_a_plugin_folder(tmp_path: Path) -> None:
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    (tmp_path / "chat_qwen_awq").symlink_to(PLUGIN_ROOT, target_is_directory=True)
    config = make_config({"plugins": {"paths": [str(tmp_path)]}, "models": {MODEL_ID: {"weights": TINY}}})
    model = build_registry(make_plugin_manager(config), config).get(MODEL_ID)
    assert model.plugin == "chat_qwen_awq" and model.spec.weights == TINY
    assert model.spec.backend == "chat_qwen_awq.backend:QwenAwqChatBackend"


def test_plugin_package_layout() -> None:
    text = (PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'name = "plughost-chat-qwen-awq"' in text
    assert '[project.entry-points.plughost]\nchat_qwen_awq = "chat_qwen_awq"' in text
    assert '"plughost"' in text


def test_default_declaration_is_the_real_7b() -> None:
    from chat_qwen_awq import DEFAULT_WEIGHTS, model_spec, sizing

    spec = model_spec(make_config({"demo": False}))
    assert (spec.id, spec.task, spec.weights) == (MODEL_ID, Task.CHAT, DEFAULT_WEIGHTS)
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.HYBRID, PlacementKind.CPU]
    gpu, hybrid, cpu = spec.placements
    shape = sizing.ModelShape.from_config(sizing.QWEN2_5_7B_AWQ_CONFIG)
    layers = shape.num_hidden_layers * sizing.layer_bytes(shape)
    # 4-bit weights + fp16 embeddings and head are the published ~5.4 GB; KV cache and working set come on top.
    assert 5.0 * GiB < layers + sizing.head_bytes(shape) < 5.4 * GiB
    assert hybrid.flexible_bytes == layers
    assert gpu.gpu_bytes == hybrid.gpu_bytes + layers - sizing.layer_bytes(shape)  # hybrid streams one layer
    kv = 16384 * 2 * 28 * 4 * 128 * 2  # default context, K and V, layers, KV heads, head dim, fp16
    assert hybrid.gpu_bytes >= sizing.head_bytes(shape) + kv
    assert cpu.host_bytes > gpu.gpu_bytes  # fp32 compute and the CPU kernel's copies
    assert spec.offload_bytes == cpu.host_bytes


def test_configured_weights_and_options_change_the_footprint(tmp_path: Path) -> None:
    from chat_qwen_awq import model_spec

    folder = tmp_path / "model"
    folder.mkdir()
    from host.demo.shapes import QWEN2_5_0_5B_SHAPE

    (folder / "config.json").write_text(json.dumps(awq_config(QWEN2_5_0_5B_SHAPE)), encoding="utf-8")
    small = model_spec(make_config({"models": {MODEL_ID: {"weights": str(folder)}}}))
    big = model_spec(make_config({"demo": False}))
    assert small.weights == str(folder)
    assert small.placements[0].gpu_bytes < big.placements[0].gpu_bytes / 4
    longer = model_spec(
        make_config({"models": {MODEL_ID: {"weights": str(folder), "options": {"kv_cache_tokens": 32768}}}})
    )
    assert longer.placements[0].gpu_bytes > small.placements[0].gpu_bytes
    tiny = model_spec(tiny_config())
    assert tiny.weights == TINY and tiny.placements[-1].host_bytes < 64 * 2**20


def test_demo_profile_is_sized_for_the_stand_in() -> None:
    from chat_qwen_awq import DEMO_WEIGHTS, model_spec
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    class Plugin:
        @hookimpl
        def register_models(self, config: HostConfig) -> list[ModelSpec]:
            return [model_spec(config)]

    def registered(data: dict[str, Any]) -> ModelSpec:
        config = make_config(data)
        return build_registry(make_plugin_manager(config, extra=[Plugin()]), config).get(MODEL_ID).spec

    real = registered({"demo": False})
    assert real.weights != DEMO_WEIGHTS and "DEMO" not in real.description
    for data in ({"demo": True}, {}):  # unset: the hub id is not on this (offline test) machine
        spec = registered(data)
        assert spec.weights == DEMO_WEIGHTS and "DEMO" in spec.description
        assert spec.placements[-1].host_bytes < real.placements[-1].host_bytes / 100


def test_bad_options_are_reported() -> None:
    from chat_qwen_awq import model_spec

    with pytest.raises(ValueError, match="kv_cache_tokens"):
        model_spec(tiny_config(kv_cache_tokens=10))
    with pytest.raises(ValueError, match="context_length"):
        model_spec(tiny_config(context_length=10**6))
    # Types and ranges are checked when plugins.yaml is read, naming the dotted key.
    with pytest.raises(ConfigError, match=rf"^models\.{MODEL_ID}\.options\.cpu_head_dtype: Invalid enum value"):
        model_spec(tiny_config(cpu_head_dtype="float16"))
    with pytest.raises(ConfigError, match=rf"^models\.{MODEL_ID}\.options\.max_sequences: Expected `int` >= 1"):
        model_spec(tiny_config(max_sequences=0))


def test_analytic_sizes_match_the_meta_model() -> None:
    from accelerate.utils import compute_module_sizes

    from chat_qwen_awq import loader, sizing
    from host.demo.shapes import QWEN2_5_7B_SHAPE, TINY_QWEN2

    for shape_preset, group in ((QWEN2_5_7B_SHAPE, 128), (TINY_QWEN2, 32)):
        config = awq_config(shape_preset, group)
        shape = sizing.ModelShape.from_config(config)
        sizes = compute_module_sizes(loader.build_empty_model(config, loader.compute_dtype("cuda:0")))
        assert sizes["model.layers.0"] == sizing.layer_bytes(shape)
        head = (
            sizes["model.embed_tokens"] + sizes["model.norm"] + (0 if shape.tie_word_embeddings else sizes["lm_head"])
        )
        assert head == sizing.head_bytes(shape)


@pytest.mark.parametrize("budget_gib", [4, 6])
def test_device_map_of_the_real_7b_on_a_meta_model(budget_gib: int) -> None:
    from chat_qwen_awq import loader, sizing
    from host.demo.shapes import QWEN2_5_7B_SHAPE

    config = awq_config(QWEN2_5_7B_SHAPE)
    shape = sizing.ModelShape.from_config(config)
    limits = sizing.limits_from_options(shape, ChatOptions())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plan = loader.plan_device_map(config, limits, budget_gib * GiB, device="cuda:0", overflow="cpu")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, "sizing the 7B must not materialise its weights"
    layers = [plan.device_map[f"model.layers.{i}"] for i in range(28)]
    n = plan.gpu_layers
    assert layers == ["cuda:0"] * n + ["cpu"] * (28 - n)
    for key in ("model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head"):
        assert plan.device_map[key] == "cuda:0"
    assert plan.device_bytes <= budget_gib * GiB < plan.device_bytes + sizing.layer_bytes(shape)
    assert plan.overflow_bytes == (28 - n) * sizing.layer_bytes(shape)
    # The same split as the footprint arithmetic the scheduler's grant is based on.
    assert n == sizing.gpu_layer_count(shape, limits, budget_gib * GiB)
    # ~3.5 GiB fixed (224 MiB of it the default 4096-token prefix cache), ~108 MiB per layer
    expected = {4: (3, 7), 6: (21, 25)}[budget_gib]
    assert expected[0] <= n <= expected[1], n


def test_device_map_budget_too_small() -> None:
    from chat_qwen_awq import loader, sizing
    from host.demo.shapes import QWEN2_5_7B_SHAPE

    config = awq_config(QWEN2_5_7B_SHAPE)
    limits = sizing.limits_from_options(sizing.ModelShape.from_config(config), ChatOptions())
    with pytest.raises(ValueError, match="does not hold the fixed part"):
        loader.plan_device_map(config, limits, 2 * GiB)
    everything = loader.plan_device_map(config, limits, None)
    assert everything.gpu_layers == 28 and not everything.offloaded


def test_non_awq_checkpoints_are_refused() -> None:
    from chat_qwen_awq import sizing
    from host.demo.shapes import TINY_QWEN2

    config = awq_config(TINY_QWEN2, 32)
    for change, message in (
        ({"quant_method": "gptq"}, "expected 'awq'"),
        ({"bits": 8}, "4-bit"),
        ({"version": "gemv"}, "gemm"),
    ):
        bad = {**config, "quantization_config": {**config["quantization_config"], **change}}
        with pytest.raises(sizing.ModelConfigError, match=message):
            sizing.ModelShape.from_config(bad)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_head_dtype_auto_follows_the_cpu(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_qwen_awq import sizing

    monkeypatch.setattr(sizing, "cpu_has_native_bf16", lambda: native)
    shape = sizing.ModelShape.from_config(sizing.QWEN2_5_7B_AWQ_CONFIG)
    auto = sizing.limits_from_options(shape, ChatOptions())
    assert auto.cpu_head_dtype == ("bfloat16" if native else "float32")
    assert sizing.limits_from_options(shape, ChatOptions(cpu_head_dtype="float32")).cpu_head_dtype == "float32"
    assert sizing.cpu_bytes(shape, auto) == sizing.cpu_bytes(
        shape, sizing.limits_from_options(shape, ChatOptions(cpu_head_dtype=auto.cpu_head_dtype))
    )


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Any) -> None:
    from chat_qwen_awq import sizing

    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: avx2 amx_bf16 amx_tile\n")
    assert sizing.cpu_has_native_bf16(str(with_bf16)) and sizing.cpu_has_native_bf16(str(amx))
    assert not sizing.cpu_has_native_bf16(str(without))
    assert not sizing.cpu_has_native_bf16(str(tmp_path / "missing"))
