"""plughost plugin: Qwen2.5 and Qwen3 dense chat models, 4-bit AWQ GEMM or unquantised.

Declares ``Qwen2.5-7B-Instruct-AWQ`` and ``Qwen3-8B-AWQ`` (a thinking model: ``<think>`` blocks
parsed into reasoning, switchable per request and per model), each with its hub weights unless
``models.<id>.weights`` says otherwise, and every other ``models.<id>`` entry of plugins.yaml that
says ``plugin: chat_qwen_awq`` — that is how another Qwen2/Qwen3 dense checkpoint is served under
its own name::

    models:
      Qwen3-4B-AWQ:
        weights: Qwen/Qwen3-4B-AWQ
        plugin: chat_qwen_awq

Placements (gpu, GPU + host RAM hybrid, cpu) are sized from the checkpoint's ``config.json``
(see :mod:`chat_qwen_awq.sizing`; the published shape while the weights are not on disk). Qwen3 MoE
checkpoints are not served. Registration is cheap: no torch; the backend (:mod:`chat_qwen_awq.backend`,
or vLLM's: ``options.engine``, see :mod:`chat_qwen_awq.vllm_sizing`) is imported only when the model
is admitted.

Options (``models.<id>.options``): :class:`chat_qwen_awq.sizing.ChatOptions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chat_qwen_awq import sizing, vllm_sizing
from chat_qwen_awq.sizing import ChatOptions
from host.sdk import Capabilities, HostConfig, ModelSpec, Task, demo_weights, hookimpl, peek_config

log = logging.getLogger("plughost.chat_qwen_awq")

PLUGIN = "chat_qwen_awq"
BACKEND = vllm_sizing.OWN_BACKEND


@dataclass(frozen=True)
class Known:
    """A model this plugin declares by itself: its id, hub weights, published ``config.json``
    (sizing while the weights are not on disk), demo stand-in and one-line description."""

    id: str
    weights: str
    config: dict[str, Any]
    demo: str
    description: str


QWEN2_5 = Known(
    "Qwen2.5-7B-Instruct-AWQ",
    "Qwen/Qwen2.5-7B-Instruct-AWQ",
    sizing.QWEN2_5_7B_AWQ_CONFIG,
    "chat_qwen_awq.demo:TINY_AWQ",
    "Qwen2.5 7B Instruct, 4-bit AWQ: GPU, GPU + host RAM, or CPU",
)
QWEN3 = Known(
    "Qwen3-8B-AWQ",
    "Qwen/Qwen3-8B-AWQ",
    sizing.QWEN3_8B_AWQ_CONFIG,
    "chat_qwen_awq.demo:TINY_QWEN3_AWQ",
    "Qwen3 8B, 4-bit AWQ, thinking on or off: GPU, GPU + host RAM, or CPU",
)
KNOWN = {k.id: k for k in (QWEN2_5, QWEN3)}

#: The seed's model (the first declared).
MODEL_ID = QWEN2_5.id
DEFAULT_WEIGHTS = QWEN2_5.weights
DEMO = QWEN2_5.demo
DEMO_WEIGHTS = demo_weights(DEMO)


def published(weights: str) -> Known:
    """The declared model whose shape stands in for ``weights`` until they are on disk: the Qwen3 8B
    for weights that name Qwen3, else the Qwen2.5 7B."""
    return QWEN3 if "qwen3" in weights.lower() else QWEN2_5


def known_config(weights: str, fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's ``config.json`` (or a tiny stand-in's shape) if at hand; else ``fallback``
    (default: :func:`published`'s)."""
    found = peek_config(weights)
    return found if found is not None else dict(fallback or published(weights).config)


def model_spec(config: HostConfig, model_id: str = MODEL_ID) -> ModelSpec[ChatOptions]:
    """The declaration of ``model_id`` with footprints from its (configured) weights.

    In the demo profile the host declares the model again with its stand-in as its weights
    (``host.registry``), so footprints are then the stand-in's.
    """
    known = KNOWN.get(model_id)
    if known is None and config.model(model_id).weights is None:
        raise ValueError(
            f"models.{model_id}.weights: required for a model served by {PLUGIN} "
            f"(a local folder or a hub id such as Qwen/Qwen3-4B-AWQ)"
        )
    weights = config.model_weights(model_id, known.weights if known else "")
    options = config.model_options(model_id, ChatOptions)
    stand_in = known or published(weights)
    try:
        shape = sizing.ModelShape.from_config(known_config(weights, stand_in.config))
    except (sizing.ModelConfigError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: %s is not usable (%s); sizing it as %s", model_id, weights, exc, stand_in.id)
        shape = sizing.ModelShape.from_config(stand_in.config)
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
            thinking=shape.arch == "qwen3",  # Qwen3's dense models switch thinking on and off
        ),
        description=known.description if known else "Qwen2/Qwen3 chat: GPU, GPU + host RAM, or CPU",
        demo=(known or (QWEN3 if shape.arch == "qwen3" else QWEN2_5)).demo,
    )


@hookimpl
def register_models(config: HostConfig) -> list[ModelSpec]:
    """Declare Qwen2.5-7B-Instruct-AWQ, Qwen3-8B-AWQ and every configured model marked ``plugin: chat_qwen_awq``."""
    specs = [model_spec(config, known.id) for known in KNOWN.values()]
    for model_id, model_config in config.models.items():
        if model_id not in KNOWN and model_config.plugin == PLUGIN:
            specs.append(model_spec(config, model_id))
    return specs
