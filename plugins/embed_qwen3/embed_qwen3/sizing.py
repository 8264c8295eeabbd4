"""Memory footprints of a Qwen3-Embedding model, computed from its ``config.json`` (no torch here).

Bytes = parameters × dtype bytes + a working set sized by the batch token budget + a fixed
runtime allowance. The base model is served (no lm_head). Weights are 16-bit on a GPU and
fp32 on the CPU; parked in host RAM (offloaded) they keep their 16-bit GPU dtype.
"""

from __future__ import annotations

from typing import Any

from host.toolkit import sizing
from host.toolkit.sizing import activation_bytes_per_token, qwen3_param_count

#: Published configs of the Qwen3-Embedding sizes (the fallback when config.json is not at hand).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-Embedding-0.6B": {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151669,
        "max_position_embeddings": 32768,
    },
    "Qwen/Qwen3-Embedding-4B": {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151665,
        "max_position_embeddings": 40960,
    },
    "Qwen/Qwen3-Embedding-8B": {
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151665,
        "max_position_embeddings": 40960,
    },
}
DEFAULT_HUB_ID = "Qwen/Qwen3-Embedding-0.6B"

#: The publisher's recipe tokenises with ``max_length=8192``: the default input limit.
RECIPE_MAX_LENGTH = 8192


def config_for(weights: str, peeked: dict[str, Any] | None) -> dict[str, Any]:
    """The model config to size with: the real file (or a tiny preset's shape) if at hand
    (``peek_config``); else the published shape of ``weights`` (a known hub id), else that of
    Qwen3-Embedding-0.6B."""
    if peeked is not None:
        return peeked
    return KNOWN_CONFIGS.get(weights, KNOWN_CONFIGS[DEFAULT_HUB_ID])


def param_count(config: dict[str, Any]) -> int:
    """Parameters the backend holds for ``config`` (the base model: no lm_head)."""
    return qwen3_param_count(config, lm_head=False)


def max_length_of(config: dict[str, Any], option: int | None) -> int:
    """Tokens one input may take: the option, else the recipe's 8192, within the model's positions."""
    return sizing.max_length_of(config, option, RECIPE_MAX_LENGTH)


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
