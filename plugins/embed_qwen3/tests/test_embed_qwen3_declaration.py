"""The plugin's declaration: cheap registration, footprints from the model config, configurable ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import embed_qwen3
from embed_qwen3.sizing import KNOWN_CONFIGS, activation_bytes_per_token, param_count
from embed_qwen3.testing import MODEL, PLUGIN_ROOT, TINY
from host.contract.config import config_from_dict
from host.contract.spec import MiB, PlacementKind, Task
from host.demo import demo_weights

REPO = PLUGIN_ROOT.parents[1]


def test_registration_imports_no_torch() -> None:
    code = (
        "import sys; import embed_qwen3; from host.contract.config import config_from_dict; "
        "specs = embed_qwen3.register_models(config_from_dict({})); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'tokenizers')]; "
        "assert not heavy, heavy; print(specs[0].id)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_ROOT), str(REPO)]), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.strip() == MODEL


def test_default_declaration() -> None:
    (spec,) = embed_qwen3.register_models(config_from_dict({}))
    assert spec.id == MODEL and spec.task == Task.EMBEDDING
    assert spec.backend == "embed_qwen3.backend:Qwen3EmbeddingBackend"
    assert [p.kind for p in spec.placements] == [PlacementKind.GPU, PlacementKind.CPU]
    assert spec.weights == "Qwen/Qwen3-Embedding-0.6B"
    assert "Qwen/Qwen3-Embedding-0.6B" in spec.aliases
    assert spec.offload_bytes is not None and spec.offload_bytes > 0


def test_published_shape_counts_0_6b_parameters() -> None:
    # 595.8M parameters without lm_head: 1.11 GiB in bf16, the size the API reference quotes.
    params = param_count(KNOWN_CONFIGS["Qwen/Qwen3-Embedding-0.6B"])
    assert 595_000_000 < params < 596_500_000
    assert round(params * 2 / 2**30, 2) == 1.11


def test_param_count_matches_the_real_module() -> None:
    torch = pytest.importorskip("torch")
    from transformers import Qwen3Model

    from host.demo.shapes import TINY_QWEN3, qwen3_config

    with torch.device("meta"):
        model = Qwen3Model(qwen3_config(TINY_QWEN3))
    assert param_count(qwen3_config(TINY_QWEN3).to_dict()) == sum(p.numel() for p in model.parameters())


def test_footprints_come_from_the_config_file(tmp_path: Path) -> None:
    config = {**KNOWN_CONFIGS["Qwen/Qwen3-Embedding-4B"], "model_type": "qwen3"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg = config_from_dict(
        {
            "models": {
                MODEL: {
                    "weights": str(tmp_path),
                    "options": {"batch_tokens_gpu": 1000, "batch_tokens_cpu": 500, "max_length": 512},
                }
            }
        }
    )
    (spec,) = embed_qwen3.register_models(cfg)
    params = param_count(config)
    gpu, cpu = spec.placements
    tokens_gpu, tokens_cpu = 1000, 512  # a single max-length input may exceed the CPU budget
    assert gpu.gpu_bytes == params * 2 + tokens_gpu * (activation_bytes_per_token(config, 2) + 512) + 512 * MiB
    assert cpu.host_bytes == params * 4 + tokens_cpu * (activation_bytes_per_token(config, 4) + 512) + 256 * MiB
    assert spec.offload_bytes == params * 2 + 256 * MiB
    assert spec.weights == str(tmp_path) and spec.aliases == ()  # not the published 0.6B


def test_tiny_weights_are_sized_as_the_tiny_model(tiny_path: Path) -> None:
    (spec,) = embed_qwen3.register_models(config_from_dict({"models": {MODEL: {"weights": TINY}}}))
    real = json.loads((tiny_path / "config.json").read_text())
    cpu = spec.placements[1]
    assert cpu.host_bytes == param_count(real) * 4 + 4096 * (activation_bytes_per_token(real, 4) + 2048) + 256 * MiB
    assert spec.weights == TINY == demo_weights(spec.demo or "")


def test_unknown_weights_fall_back_to_the_published_shape() -> None:
    (spec,) = embed_qwen3.register_models(config_from_dict({"models": {MODEL: {"weights": "Qwen/Qwen3-Embedding-4B"}}}))
    config = KNOWN_CONFIGS["Qwen/Qwen3-Embedding-4B"]  # not in the hub cache here (HF_HUB_OFFLINE)
    assert spec.placements[0].gpu_bytes > param_count(config) * 2
    (default,) = embed_qwen3.register_models(config_from_dict({}))
    assert default.placements[0].gpu_bytes > param_count(KNOWN_CONFIGS["Qwen/Qwen3-Embedding-0.6B"]) * 2
    assert default.placements[0].gpu_bytes < spec.placements[0].gpu_bytes


def test_demo_profile_serves_the_stand_in() -> None:
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    cfg = config_from_dict({"plugins": {"paths": [], "entry_points": False}, "demo": True})
    model = build_registry(make_plugin_manager(cfg, extra=[embed_qwen3]), cfg).get(MODEL)
    assert model.spec.weights == TINY
    (tiny,) = embed_qwen3.register_models(config_from_dict({"models": {MODEL: {"weights": TINY}}}))
    assert model.spec.placements == tiny.placements  # footprints of the stand-in, not of the real model


def test_more_sizes_by_config() -> None:
    cfg = config_from_dict(
        {
            "models": {
                "Qwen3-Embedding-4B": {
                    "weights": "Qwen/Qwen3-Embedding-4B",
                    "aliases": ["emb4"],
                    "plugin": "embed_qwen3",
                    "options": {"task": "Find duplicates"},
                },
                "something-else": {"weights": "x/y"},
            }
        }
    )
    specs = {s.id: s for s in embed_qwen3.register_models(cfg)}
    assert set(specs) == {MODEL, "Qwen3-Embedding-4B"}
    big = specs["Qwen3-Embedding-4B"]
    assert big.weights == "Qwen/Qwen3-Embedding-4B" and big.options.task == "Find duplicates"
    assert big.placements[1].host_bytes > 4 * param_count(KNOWN_CONFIGS["Qwen/Qwen3-Embedding-4B"])
    with pytest.raises(ValueError, match=r"models\.E\.weights"):
        embed_qwen3.register_models(config_from_dict({"models": {"E": {"plugin": "embed_qwen3"}}}))


def test_registry_applies_config_overrides() -> None:
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    cfg = config_from_dict(
        {
            "plugins": {"paths": [], "entry_points": False},
            "models": {MODEL: {"weights": TINY, "aliases": ["emb"], "placements": ["cpu"]}},
        }
    )
    registry = build_registry(make_plugin_manager(cfg, extra=[embed_qwen3]), cfg)
    model = registry.get("emb")
    assert model.spec.id == MODEL and model.spec.weights == TINY
    assert [p.kind for p in model.spec.placements] == [PlacementKind.CPU]
