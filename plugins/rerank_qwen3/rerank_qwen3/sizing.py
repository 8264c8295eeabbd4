"""Memory footprints of a Qwen3 reranker, computed from its ``config.json`` (no torch here).

Bytes = parameters × dtype bytes + a working set sized by the batch token budget + a fixed
runtime allowance. Weights are fp16 on a GPU and fp32 on the CPU. With the shared prefix the
forward pass runs with a key/value cache, which holds every layer's keys and values of the
batch (prefix and rest) until its end: that is part of the working set too.
"""

from __future__ import annotations

from typing import Any

from host.toolkit import sizing
from host.toolkit.sizing import activation_bytes_per_token, qwen3_param_count

#: The published config of Qwen/Qwen3-Reranker-0.6B: the fallback when config.json is not at hand.
QWEN3_RERANKER_0_6B_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151669,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
    "attention_bias": False,
}

#: The publisher's recipe truncates every pair to 8192 tokens; the default here too.
RECIPE_MAX_LENGTH = 8192


def param_count(config: dict[str, Any]) -> int:
    """Parameters the backend holds for ``config`` (an untied lm_head counted: it is loaded)."""
    return qwen3_param_count(config, lm_head=True)


def max_length_of(config: dict[str, Any], option: int | None) -> int:
    """Tokens one input may take: the option, else the recipe's 8192, within the model's positions."""
    return sizing.max_length_of(config, option, RECIPE_MAX_LENGTH)


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Keys and values of one token in every layer."""
    kv_dim = int(config["num_key_value_heads"]) * sizing.head_dim(config)
    return 2 * int(config["num_hidden_layers"]) * kv_dim * dtype_bytes


def footprint(
    config: dict[str, Any],
    *,
    dtype_bytes: int,
    batch_tokens: int,
    max_length: int,
    prefix_cache_tokens: int | None = None,
) -> tuple[int, int]:
    """``(weights_bytes, working_bytes)`` for a batch of at most ``batch_tokens`` padded tokens.

    A single pair longer than the budget still runs (alone), so the working set covers
    ``max(batch_tokens, max_length)`` tokens: their activations in one layer and, with the
    shared prefix (``prefix_cache_tokens`` not ``None``), their keys and values in every layer
    (the backend cuts a batch so that a pass holds no more) plus those of the cached prefixes.
    """
    weights = param_count(config) * dtype_bytes
    tokens = max(batch_tokens, max_length)
    working = tokens * activation_bytes_per_token(config, dtype_bytes)
    if prefix_cache_tokens is not None:
        working += (tokens + prefix_cache_tokens) * kv_bytes_per_token(config, dtype_bytes)
    return weights, working
