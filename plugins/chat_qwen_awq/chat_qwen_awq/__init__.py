"""plughost plugin: Qwen2.5-7B-Instruct-AWQ (any Qwen2 4-bit AWQ GEMM checkpoint) for chat.

Declares one model whose placements (gpu, GPU + host RAM hybrid, cpu) are sized from the
checkpoint's ``config.json`` (see :mod:`chat_qwen_awq.sizing`). Registration is cheap: no torch;
the backend (:mod:`chat_qwen_awq.backend`) is imported only when the model is admitted.

Options (``models.Qwen2.5-7B-Instruct-AWQ.options``): ``context_length``, ``kv_cache_tokens``,
``max_sequences``, ``prefill_chunk_tokens``, ``cpu_head_dtype``, ``default_max_tokens``,
``max_tokens_cap``, ``max_waiting_sequences`` (see
:data:`chat_qwen_awq.sizing.LIMIT_OPTIONS`) and ``offload_dir`` (the folder for disk overflow of
a hybrid grant on a machine without GPU).
"""

from __future__ import annotations

import logging
from typing import Any

from chat_qwen_awq import sizing
from host import hookimpl
from host.config import HostConfig
from host.spec import ModelSpec, Task
from host.weights import peek_config

log = logging.getLogger("plughost.chat_qwen_awq")

MODEL_ID = "Qwen2.5-7B-Instruct-AWQ"
DEFAULT_WEIGHTS = "Qwen/Qwen2.5-7B-Instruct-AWQ"
#: The random-weight stand-in of the demo profile (same architecture, built offline).
DEMO_WEIGHTS = "tiny:qwen2-awq"
BACKEND = "chat_qwen_awq.backend:QwenAwqChatBackend"
#: What ``models.<id>.options`` may set (see the README of this plugin).
OPTION_KEYS = frozenset(
    {
        "weights",
        "context_length",
        "kv_cache_tokens",
        "max_sequences",
        "prefill_chunk_tokens",
        "cpu_head_dtype",
        "offload_dir",
        "default_max_tokens",
        "max_tokens_cap",
        "max_waiting_sequences",
    }
)


def known_config(weights: str) -> dict[str, Any]:
    """The model's ``config.json`` (or a tiny stand-in's shape) if at hand; else the real 7B's."""
    found = peek_config(weights)
    return found if found is not None else dict(sizing.QWEN2_5_7B_AWQ_CONFIG)


def model_spec(config: HostConfig, model_id: str = MODEL_ID) -> ModelSpec:
    """The declaration of ``model_id`` with footprints from its (configured) weights.

    In the demo profile the host declares the model again with :data:`DEMO_WEIGHTS` as its
    weights (``host.registry``), so footprints are then the stand-in's.
    """
    mc = config.model(model_id)
    weights = mc.weights or DEFAULT_WEIGHTS
    options: dict[str, Any] = {"weights": weights, **mc.options}
    sized = weights
    try:
        shape = sizing.ModelShape.from_config(known_config(sized))
    except (sizing.AwqConfigError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: %s is not usable (%s); sizing it as Qwen2.5-7B-Instruct-AWQ", model_id, sized, exc)
        shape = sizing.ModelShape.from_config(sizing.QWEN2_5_7B_AWQ_CONFIG)
    limits = sizing.limits_from_options(shape, options)
    placements = sizing.placements(shape, limits)
    return ModelSpec(
        id=model_id,
        task=Task.CHAT,
        backend=BACKEND,
        placements=placements,
        options=options,
        offload_bytes=placements[-1].host_bytes,
        description="Qwen2.5 7B Instruct, 4-bit AWQ: GPU, GPU + host RAM, or CPU",
        demo_weights=DEMO_WEIGHTS,
        option_keys=OPTION_KEYS,
    )


@hookimpl
def register_models(config: HostConfig) -> list[ModelSpec]:
    """Declare Qwen2.5-7B-Instruct-AWQ."""
    return [model_spec(config)]
