"""Memory footprints of a Qwen3-Embedding model, computed from its ``config.json`` (no torch here).

Bytes = parameters × dtype bytes + a working set sized by the batch token budget + a fixed
runtime allowance. The base model is served (no lm_head). Weights are 16-bit on a GPU and
fp32 on the CPU; parked in host RAM (offloaded) they keep their 16-bit GPU dtype.
"""

from __future__ import annotations

from typing import Any

from host.spec import MiB

#: Published configs of the Qwen3-Embedding sizes (the fallback when config.json is not at hand).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-Embedding-0.6B": {
        "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151669, "max_position_embeddings": 32768,
    },
    "Qwen/Qwen3-Embedding-4B": {
        "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151665, "max_position_embeddings": 40960,
    },
    "Qwen/Qwen3-Embedding-8B": {
        "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151665, "max_position_embeddings": 40960,
    },
}
DEFAULT_HUB_ID = "Qwen/Qwen3-Embedding-0.6B"

#: The publisher's recipe tokenises with ``max_length=8192``: the default input limit.
RECIPE_MAX_LENGTH = 8192

#: CUDA context, allocator slack and kernel workspaces on the GPU.
GPU_RUNTIME_BYTES = 512 * MiB
#: Tokenizer, prepared batches and Python-side buffers in host RAM.
HOST_RUNTIME_BYTES = 256 * MiB


def config_for(weights: str, peeked: dict[str, Any] | None) -> dict[str, Any]:
    """The model config to size with: the real file (or a tiny preset's shape) if at hand
    (``peek_config``); else the published shape of ``weights`` (a known hub id), else that of
    Qwen3-Embedding-0.6B."""
    if peeked is not None:
        return peeked
    return KNOWN_CONFIGS.get(weights, KNOWN_CONFIGS[DEFAULT_HUB_ID])


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def param_count(config: dict[str, Any]) -> int:
    """Parameters of the base ``Qwen3Model`` (embeddings, decoder layers, final norm; no lm_head)."""
    h, i, v = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["vocab_size"])
    heads, kv, hd = int(config["num_attention_heads"]), int(config["num_key_value_heads"]), _head_dim(config)
    attention = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd  # q, k, v, o, q_norm, k_norm
    if config.get("attention_bias"):
        attention += heads * hd + 2 * kv * hd + h
    layer = attention + 3 * h * i + 2 * h  # gate/up/down + two RMSNorms
    return v * h + int(config["num_hidden_layers"]) * layer + h


def activation_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Peak activations of one token inside one decoder layer (memory-efficient attention).

    Residual stream, normed input, attention output and MLP input (4·hidden), q/k/v and the
    attention result, the MLP's gate, up and activated intermediate (3·intermediate).
    """
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, kv, hd = int(config["num_attention_heads"]), int(config["num_key_value_heads"]), _head_dim(config)
    return (4 * h + 2 * heads * hd + 2 * kv * hd + 3 * i) * dtype_bytes


def max_length_of(config: dict[str, Any], option: int | None) -> int:
    """Tokens one input may take: the option, else the recipe's 8192, within the model's positions."""
    limit = int(config.get("max_position_embeddings") or RECIPE_MAX_LENGTH)
    return min(limit, int(option) if option else RECIPE_MAX_LENGTH)


def footprint(config: dict[str, Any], *, dtype_bytes: int, batch_tokens: int, max_length: int) -> tuple[int, int]:
    """``(weights_bytes, working_bytes)`` for batches of at most ``batch_tokens`` padded tokens.

    An input longer than the budget still runs (alone), so the working set covers
    ``max(batch_tokens, max_length)`` tokens; the boolean attention mask of a padded batch
    (rows × width², at most tokens × max_length) is counted too.
    """
    tokens = max(batch_tokens, max_length)
    weights = param_count(config) * dtype_bytes
    working = tokens * activation_bytes_per_token(config, dtype_bytes) + tokens * max_length
    return weights, working
