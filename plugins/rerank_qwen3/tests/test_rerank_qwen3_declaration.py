"""The declaration: cheap registration, footprints from the model config, weights option, packaging."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import torch

import rerank_qwen3
from host.contract.config import config_from_dict
from host.contract.spec import GiB, PlacementKind, Task
from host.demo import demo_weights
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.testing.pytest_plugin import make_config
from host.toolkit.sizing import GPU_RUNTIME_BYTES, HOST_RUNTIME_BYTES
from rerank_qwen3.sizing import (
    QWEN3_RERANKER_0_6B_CONFIG,
    activation_bytes_per_token,
    param_count,
)
from rerank_qwen3.testing import PLUGIN_ROOT, TINY


def test_declares_the_reranker_gpu_first() -> None:
    spec = rerank_qwen3.declare(config_from_dict({}))
    assert spec.id == "Qwen3-Reranker-0.6B" and spec.task == Task.RERANK
    assert spec.backend == "rerank_qwen3.backend:Qwen3RerankerBackend"
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.CPU]
    assert spec.weights == "Qwen/Qwen3-Reranker-0.6B"
    assert spec.offload_bytes is not None


def test_registration_imports_no_torch() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import rerank_qwen3; from host.contract.config import "
        "config_from_dict; specs = rerank_qwen3.register_models(config_from_dict({})); "
        "assert specs and 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(PLUGIN_ROOT)], check=True, env=env, timeout=60)


def test_real_shape_param_count_matches_the_architecture() -> None:
    from transformers import Qwen3ForCausalLM

    from host.demo.shapes import QWEN3_0_6B_SHAPE, qwen3_config

    with torch.device("meta"):
        model = Qwen3ForCausalLM(qwen3_config(QWEN3_0_6B_SHAPE))
    assert param_count(QWEN3_RERANKER_0_6B_CONFIG) == sum(p.numel() for p in model.parameters())
    spec = rerank_qwen3.declare(config_from_dict({}))
    gpu, cpu = spec.placements
    # 0.6B parameters: ~1.1 GiB in fp16 (the contract's 1.11GB) plus the working set.
    assert 1.0 * GiB < param_count(QWEN3_RERANKER_0_6B_CONFIG) * 2 < 1.2 * GiB
    kv = 2 * 28 * 8 * 128 * 2  # keys and values of a token in every layer, fp16 (the shared-prefix pass keeps them)
    working = 16384 * activation_bytes_per_token(QWEN3_RERANKER_0_6B_CONFIG, 2) + (16384 + 4096) * kv
    assert gpu.gpu_bytes == param_count(QWEN3_RERANKER_0_6B_CONFIG) * 2 + working + GPU_RUNTIME_BYTES
    assert cpu.host_bytes > 2 * param_count(QWEN3_RERANKER_0_6B_CONFIG) * 2  # fp32 on the CPU


def test_footprint_follows_the_local_config(tiny_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_path))
    params = sum(p.numel() for p in model.parameters())
    config = config_from_dict(
        {
            "models": {
                "Qwen3-Reranker-0.6B": {
                    "weights": str(tiny_path),
                    "options": {"batch_tokens_cpu": 1000, "max_length": 512},
                }
            }
        }
    )
    spec = rerank_qwen3.declare(config)
    gpu, cpu = spec.placements
    tiny_config: dict[str, Any] = model.config.to_dict()
    assert param_count(tiny_config) == params
    kv_fp32 = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads * model.config.head_dim * 4
    working = 1000 * activation_bytes_per_token(tiny_config, 4) + (1000 + 4096) * kv_fp32
    assert cpu.host_bytes == params * 4 + working + HOST_RUNTIME_BYTES
    assert spec.offload_bytes == params * 2 + HOST_RUNTIME_BYTES
    assert gpu.gpu_bytes < 64 * 2**20 + GPU_RUNTIME_BYTES


def test_config_weights_override_reaches_the_backend_options() -> None:
    config = make_config({"models": {"Qwen3-Reranker-0.6B": {"weights": TINY, "options": {"max_length": 512}}}})
    registry = build_registry(make_plugin_manager(config, extra=[rerank_qwen3]), config)
    spec = registry.get("Qwen3-Reranker-0.6B").spec
    assert spec.weights == TINY and spec.options.max_length == 512
    assert registry.get("Qwen/Qwen3-Reranker-0.6B").spec.id == spec.id


def test_demo_profile_serves_the_tiny_stand_in() -> None:
    config = make_config({"demo": True})
    spec = build_registry(make_plugin_manager(config, extra=[rerank_qwen3]), config).get("Qwen3-Reranker-0.6B").spec
    assert demo_weights(spec.demo or "") == TINY == spec.weights
    assert "DEMO" in spec.description


def test_pyproject_names_the_entry_point() -> None:
    project = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "plughost-rerank-qwen3"
    assert "plughost" in project["dependencies"]
    assert project["entry-points"]["plughost"] == {"rerank_qwen3": "rerank_qwen3"}


def test_folder_discovery_finds_the_plugin(tmp_path: Path) -> None:
    # A folder holding only this plugin (plugins/ may hold others that are still being written).
    (tmp_path / "rerank_qwen3").symlink_to(PLUGIN_ROOT, target_is_directory=True)
    config = make_config({"plugins": {"paths": [str(tmp_path)]}})
    pm = make_plugin_manager(config)
    assert pm.get_plugin("rerank_qwen3") is not None


def test_without_the_shared_prefix_no_key_value_cache_is_declared() -> None:
    shared = rerank_qwen3.declare(config_from_dict({}))
    whole = rerank_qwen3.declare(
        config_from_dict({"models": {"Qwen3-Reranker-0.6B": {"options": {"share_prefix": False}}}})
    )
    kv = 2 * 28 * 8 * 128 * 2
    assert shared.placements[0].gpu_bytes - whole.placements[0].gpu_bytes == (16384 + 4096) * kv
