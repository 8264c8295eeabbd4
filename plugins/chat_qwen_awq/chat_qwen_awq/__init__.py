"""plughost plugin: Qwen2.5-7B-Instruct-AWQ (any Qwen2 4-bit AWQ GEMM checkpoint) for chat.

Declares one model whose placements (gpu, GPU + host RAM hybrid, cpu) are sized from the
checkpoint's ``config.json`` (see :mod:`chat_qwen_awq.sizing`). Registration is cheap: no torch;
the backend (:mod:`chat_qwen_awq.backend`, or vLLM's: ``options.engine``, see
:mod:`chat_qwen_awq.vllm_sizing`) is imported only when the model is admitted.

Options (``models.Qwen2.5-7B-Instruct-AWQ.options``): :class:`chat_qwen_awq.sizing.ChatOptions`.
"""

from __future__ import annotations

import logging
from typing import Any

from chat_qwen_awq import sizing, vllm_sizing
from chat_qwen_awq.sizing import ChatOptions
from host.sdk import Capabilities, HostConfig, ModelSpec, Task, demo_weights, hookimpl, peek_config

log = logging.getLogger("plughost.chat_qwen_awq")

MODEL_ID = "Qwen2.5-7B-Instruct-AWQ"
DEFAULT_WEIGHTS = "Qwen/Qwen2.5-7B-Instruct-AWQ"
#: The random-weight stand-in of the demo profile (same architecture, built offline).
DEMO = "chat_qwen_awq.demo:TINY_AWQ"
DEMO_WEIGHTS = demo_weights(DEMO)
BACKEND = vllm_sizing.OWN_BACKEND


def known_config(weights: str) -> dict[str, Any]:
    """The model's ``config.json`` (or a tiny stand-in's shape) if at hand; else the real 7B's."""
    found = peek_config(weights)
    return found if found is not None else dict(sizing.QWEN2_5_7B_AWQ_CONFIG)


def model_spec(config: HostConfig, model_id: str = MODEL_ID) -> ModelSpec:
    """The declaration of ``model_id`` with footprints from its (configured) weights.

    In the demo profile the host declares the model again with :data:`DEMO_WEIGHTS` as its
    weights (``host.registry``), so footprints are then the stand-in's.
    """
    weights = config.model_weights(model_id, DEFAULT_WEIGHTS)
    options = config.model_options(model_id, ChatOptions)
    sized = weights
    try:
        shape = sizing.ModelShape.from_config(known_config(sized))
    except (sizing.AwqConfigError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: %s is not usable (%s); sizing it as Qwen2.5-7B-Instruct-AWQ", model_id, sized, exc)
        shape = sizing.ModelShape.from_config(sizing.QWEN2_5_7B_AWQ_CONFIG)
    limits = sizing.limits_from_options(shape, options)
    backend, placements = vllm_sizing.declaration(options, shape, limits)
    return ModelSpec(
        id=model_id,
        task=Task.CHAT,
        backend=backend,
        placements=placements,
        weights=weights,
        options=options,
        offload_bytes=max(p.host_bytes for p in placements),  # the CPU placement's: it holds everything there
        capabilities=Capabilities(
            context_length=limits.context_length,
            tools=True,
            output_formats=frozenset({"json_object", "json_schema"}),
            logprobs=True,
            raw_prompt=True,
        ),
        description="Qwen2.5 7B Instruct, 4-bit AWQ: GPU, GPU + host RAM, or CPU",
        demo=DEMO,
    )


@hookimpl
def register_models(config: HostConfig) -> list[ModelSpec]:
    """Declare Qwen2.5-7B-Instruct-AWQ."""
    return [model_spec(config)]
