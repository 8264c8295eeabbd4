"""plughost plugin: Qwen3-Embedding on ``/v1/embeddings``.

Declares ``Qwen3-Embedding-0.6B`` (weights ``Qwen/Qwen3-Embedding-0.6B`` unless
``models.Qwen3-Embedding-0.6B.weights`` says otherwise) and every other ``models.<id>`` entry of
plugins.yaml that says ``plugin: embed_qwen3`` — that is how another Qwen3-Embedding size is
served under its own name::

    models:
      Qwen3-Embedding-4B:
        weights: Qwen/Qwen3-Embedding-4B
        plugin: embed_qwen3

Registration is cheap: footprints come from the model's ``config.json`` when it is already on disk
(else from the published shape); torch and transformers are imported only by
:mod:`embed_qwen3.backend`, when the scheduler admits the model.

Options (``models.<id>.options``): :class:`EmbedOptions`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from embed_qwen3.sizing import (
    DEFAULT_HUB_ID,
    config_for,
    footprint,
    max_length_of,
)
from host.sdk import (
    Capabilities,
    HostConfig,
    ModelSpec,
    NonNegativeInt,
    Options,
    PositiveInt,
    Task,
    demo_weights,
    hookimpl,
    peek_config,
)
from host.toolkit.sizing import gpu_then_cpu

PLUGIN = "embed_qwen3"
MODEL_ID = "Qwen3-Embedding-0.6B"
BACKEND = "embed_qwen3.backend:Qwen3EmbeddingBackend"
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
#: The random-weight stand-in served by the demo profile (:mod:`embed_qwen3.demo`).
DEMO = "embed_qwen3.demo:TINY"
DEMO_WEIGHTS = demo_weights(DEMO)


class EmbedOptions(Options, frozen=True):
    """``models.<id>.options`` of this plugin.

    :ivar task: the default query instruction (a request's ``instruction`` overrides it).
    :ivar max_length: tokens one input may take, instruction and end-of-text token included
        (``None``: 8192 as in the publisher's recipe, at most the model's ``max_position_embeddings``).
    :ivar truncate: cut over-long inputs instead of rejecting them (a request's ``truncate`` wins).
    :ivar batch_tokens_gpu: padded tokens per forward pass on a GPU (``batch_tokens_cpu``: on the CPU).
    :ivar max_batch_size: rows per forward pass.
    :ivar batch_overhead_tokens_gpu: a batch is cut where padding its rows would cost more tokens'
        worth of work than this (``None``: batches fill the budgets). A forward pass's fixed cost:
        small on a CPU (padding is pure waste), large on a GPU (``host.toolkit.batcher.cut_batches``).
    :ivar max_pending: inputs that may wait in the batcher before requests get 429 (``None``: no bound).
    :ivar max_request_tokens: tokens of one request's inputs in all (after truncation, instruction
        included), checked before any of them runs; more is a 400 naming the option (``None``: no
        bound). The default is OpenAI's bound of one embeddings request.
    :ivar gpu_dtype: ``auto`` (the checkpoint's 16-bit dtype), ``bfloat16`` or ``float16``.
    :ivar min_dimensions: the smallest ``dimensions`` a request may ask for.
    :ivar token_ids: what token-id inputs are: ``cl100k`` (OpenAI's encoding, what LangChain's
        ``OpenAIEmbeddings`` sends by default: decoded to text and embedded), ``model`` (this
        model's own ids) or ``reject`` (a 400 asking for text).
    """

    task: str = DEFAULT_TASK
    max_length: PositiveInt | None = None
    truncate: bool = False
    batch_tokens_gpu: PositiveInt = 16384
    batch_tokens_cpu: PositiveInt = 4096
    max_batch_size: PositiveInt = 256
    batch_overhead_tokens_cpu: NonNegativeInt | None = 32
    batch_overhead_tokens_gpu: NonNegativeInt | None = 4096
    max_pending: PositiveInt | None = 65536
    max_request_tokens: PositiveInt | None = 300_000
    gpu_dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    min_dimensions: PositiveInt = 32
    token_ids: Literal["cl100k", "model", "reject"] = "cl100k"


def declare(config: HostConfig, model_id: str = MODEL_ID, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """The declaration of ``model_id``, sized for its configured weights and options."""
    if model_id != MODEL_ID and config.model(model_id).weights is None:
        raise ValueError(
            f"models.{model_id}.weights: required for a model served by {PLUGIN} "
            f"(a local folder or a hub id such as Qwen/Qwen3-Embedding-4B)"
        )
    options = config.model_options(model_id, EmbedOptions)
    weights = config.model_weights(model_id, DEFAULT_HUB_ID)
    model_config = config_for(weights, peek_config(weights))
    max_length = max_length_of(model_config, options.max_length)
    gpu_weights, gpu_work = footprint(
        model_config, dtype_bytes=2, batch_tokens=options.batch_tokens_gpu, max_length=max_length
    )
    cpu_weights, cpu_work = footprint(
        model_config, dtype_bytes=4, batch_tokens=options.batch_tokens_cpu, max_length=max_length
    )
    placements, offload_bytes = gpu_then_cpu(
        gpu_weights=gpu_weights, gpu_work=gpu_work, cpu_weights=cpu_weights, cpu_work=cpu_work
    )
    return ModelSpec(
        id=model_id,
        task=Task.EMBEDDING,
        backend=BACKEND,
        placements=placements,
        aliases=aliases,
        weights=weights,
        options=options,
        offload_bytes=offload_bytes,
        capabilities=Capabilities(context_length=max_length),
        description="Qwen3 embedding: last-token pooling, query instructions, Matryoshka dimensions",
        demo=DEMO,
    )


@hookimpl
def register_models(config: HostConfig) -> list[ModelSpec]:
    """Declare Qwen3-Embedding-0.6B and every configured model marked ``plugin: embed_qwen3``."""
    default = declare(config, MODEL_ID)
    ref = config.weights_ref(MODEL_ID, default.weights)  # the hub repo, also once pulled into a folder
    if ref is not None and ref.repo == DEFAULT_HUB_ID:  # clients may name it by its hub id too
        default = msgspec.structs.replace(default, aliases=(*default.aliases, DEFAULT_HUB_ID))
    specs = [default]
    for model_id, model_config in config.models.items():
        if model_id != MODEL_ID and model_config.plugin == PLUGIN:
            specs.append(declare(config, model_id))
    return specs
