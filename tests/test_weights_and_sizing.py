"""The contract is not Qwen-only: weights may be one file, and footprint arithmetic reads any
transformer config (issue 20)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from host.contract.spec import Task
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import make_config
from host.toolkit.sizing import activation_bytes_per_token, checkpoint_bytes, head_dim, kv_heads
from host.toolkit.weights import WeightsError, resolve_weights, weights_on_disk, weights_problem

#: BAAI/bge-m3's config (XLM-RoBERTa): no num_key_value_heads, no head_dim.
XLM_R = {
    "architectures": ["XLMRobertaModel"],
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "max_position_embeddings": 8194,
    "vocab_size": 250002,
}
#: Qwen3-8B's attention: grouped-query heads, head_dim independent of the hidden size.
QWEN3_8B = {"hidden_size": 4096, "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8}


def test_footprint_arithmetic_reads_an_encoder_config_without_decoder_keys() -> None:
    assert (head_dim(XLM_R), kv_heads(XLM_R)) == (64, 16)
    # residual/normed/attention/MLP input (4h) + q, k, v and the result (4 x heads x hd) + MLP (3i), fp16
    assert activation_bytes_per_token(XLM_R, 2) == (4 * 1024 + 4 * 1024 + 3 * 4096) * 2


def test_footprint_arithmetic_reads_grouped_query_heads() -> None:
    assert (head_dim(QWEN3_8B), kv_heads(QWEN3_8B)) == (128, 8)
    assert activation_bytes_per_token(QWEN3_8B, 2) == (4 * 4096 + 2 * 32 * 128 + 2 * 8 * 128 + 3 * 12288) * 2


def test_checkpoint_bytes_of_a_folder_counts_weight_files_only(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 200)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 10_000)
    assert checkpoint_bytes(tmp_path) == 500
    single = tmp_path / "model-q4_0.gguf"
    single.write_bytes(b"GGUF" + b"\0" * 96)
    assert checkpoint_bytes(single) == 100


def test_a_single_file_is_weights_on_disk_not_a_missing_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "qwen2.5-7b-instruct-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_weights(str(gguf), model_id="m") == gguf
    assert weights_problem(str(gguf)) is None and weights_on_disk(str(gguf))
    with pytest.raises(WeightsError, match=r"models\.m\.weights: .*does not exist"):
        resolve_weights(str(tmp_path / "missing.gguf"), model_id="m")


def test_a_single_file_model_is_served_as_configured_not_replaced_by_its_demo(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    spec = msgspec.structs.replace(fake_spec("gguf-chat", Task.CHAT), demo="host.demo:NOT_USED")
    config = make_config({"models": {"gguf-chat": {"weights": str(gguf)}}})
    registry = build_registry(make_plugin_manager(config, extra=[FakePlugin([spec])]), config)
    assert registry.get("gguf-chat").spec.weights == str(gguf)
