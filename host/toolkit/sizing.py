"""Footprint arithmetic from what is on disk and in a Hugging Face ``config.json`` dict (no torch).

Generic: :func:`checkpoint_bytes` (the weight files' bytes), :func:`head_dim` and
:func:`activation_bytes_per_token` (any transformer config with ``hidden_size``,
``num_attention_heads`` and ``intermediate_size``; ``num_key_value_heads`` and ``head_dim`` when
the architecture has them: Llama/Qwen/Mistral decoders and BERT/XLM-R encoders alike),
:func:`max_length_of` and :func:`gpu_then_cpu`. Family-specific, and named so:
:func:`qwen3_param_count`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.contract.spec import MiB, Placement, PlacementKind

#: CUDA context, allocator slack and kernel workspaces on the GPU.
GPU_RUNTIME_BYTES = 512 * MiB
#: Tokenizer, prepared batches and Python-side buffers in host RAM.
HOST_RUNTIME_BYTES = 256 * MiB


#: Files that hold weights in the checkpoint formats plugins load.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def checkpoint_bytes(path: Path) -> int:
    """Bytes of the weight files of a checkpoint: one file (a ``.gguf``) or a folder's weight files
    (sharded or not). What a model needs in memory at its stored precision, without reading it."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def head_dim(config: dict[str, Any]) -> int:
    """``head_dim`` if the config sets it, else ``hidden_size // num_attention_heads``."""
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def kv_heads(config: dict[str, Any]) -> int:
    """Key/value heads: ``num_key_value_heads`` (grouped-query attention), else one per query head."""
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def qwen3_param_count(config: dict[str, Any], *, lm_head: bool) -> int:
    """Parameters of a Qwen3 decoder: embeddings, layers (with q/k norms), final norm, and an
    untied lm_head when ``lm_head`` (a tied one shares the embedding)."""
    h, i, v = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["vocab_size"])
    heads, kv, hd = int(config["num_attention_heads"]), kv_heads(config), head_dim(config)
    attention = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd  # q, k, v, o, q_norm, k_norm
    if config.get("attention_bias"):
        attention += heads * hd + 2 * kv * hd + h
    layer = attention + 3 * h * i + 2 * h  # gate/up/down + two RMSNorms
    total = v * h + int(config["num_hidden_layers"]) * layer + h
    if lm_head and not config.get("tie_word_embeddings", True):
        total += v * h
    return total


def activation_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Peak activations of one token inside one decoder layer (memory-efficient attention).

    Residual stream, normed input, attention output and MLP input (4·hidden), q/k/v and the
    attention result, and the MLP's gate, up and activated intermediate (3·intermediate).
    """
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, kv, hd = int(config["num_attention_heads"]), kv_heads(config), head_dim(config)
    return (4 * h + 2 * heads * hd + 2 * kv * hd + 3 * i) * dtype_bytes


def max_length_of(config: dict[str, Any], option: int | None, default: int) -> int:
    """Tokens one input may take: ``option``, else ``default``, within the model's positions."""
    limit = int(config.get("max_position_embeddings") or default)
    return min(limit, int(option) if option else default)


def gpu_then_cpu(
    *, gpu_weights: int, gpu_work: int, cpu_weights: int, cpu_work: int
) -> tuple[tuple[Placement, Placement], int]:
    """The placements "all on one GPU, else all in host RAM" and the offload bytes (the weights
    parked in host RAM in their GPU dtype), each with the runtime allowances."""
    placements = (
        Placement(
            kind=PlacementKind.GPU, gpu_bytes=gpu_weights + gpu_work + GPU_RUNTIME_BYTES, host_bytes=HOST_RUNTIME_BYTES
        ),
        Placement(kind=PlacementKind.CPU, host_bytes=cpu_weights + cpu_work + HOST_RUNTIME_BYTES),
    )
    return placements, gpu_weights + HOST_RUNTIME_BYTES
