"""plughost plugin: Qwen3-Reranker-0.6B on ``/v1/rerank``.

Registration is cheap: footprints come from the model's ``config.json`` when it is already on
disk (else from the published shape); torch and transformers are imported only by
:mod:`rerank_qwen3.backend`, when the scheduler admits the model.

Options (``models.Qwen3-Reranker-0.6B.options`` in plugins.yaml): :class:`RerankOptions`.
"""

from __future__ import annotations

from typing import Literal

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
from rerank_qwen3.prompt import DEFAULT_INSTRUCTION
from rerank_qwen3.sizing import (
    QWEN3_RERANKER_0_6B_CONFIG,
    footprint,
    max_length_of,
)

MODEL_ID = "Qwen3-Reranker-0.6B"
HUB_ID = "Qwen/Qwen3-Reranker-0.6B"
BACKEND = "rerank_qwen3.backend:Qwen3RerankerBackend"
#: The random-weight stand-in served by the demo profile (:mod:`rerank_qwen3.demo`).
DEMO = "rerank_qwen3.demo:TINY"
DEMO_WEIGHTS = demo_weights(DEMO)


class RerankOptions(Options, frozen=True):
    """``models.<id>.options`` of this plugin.

    :ivar instruction: the default instruction (a request's ``instruction`` overrides it).
    :ivar max_length: tokens a whole prompt may take (``None``: 8192 as in the publisher's recipe,
        at most the model's ``max_position_embeddings``); longer documents are cut.
    :ivar batch_tokens_gpu: padded tokens per forward pass on a GPU.
    :ivar batch_tokens_cpu: the same on the CPU, where the cost per token is flat from one row up
        (bench/bench_rerank.py): bigger batches only add padding and memory.
    :ivar max_batch_size: pairs per forward pass.
    :ivar max_pending: pairs that may wait in the batcher before requests get 429.
    :ivar max_request_tokens: tokens of one request's pairs in all (every pair's whole prompt, as
        ``usage.prompt_tokens`` counts them), checked before any of them runs; more is a 400 naming
        the option (``None``: no bound). OpenAI's bound of one embeddings request by default.
    :ivar gpu_dtype: ``float16`` (the publisher's choice) or ``bfloat16``.
    :ivar share_prefix: run the prompt tokens before the document (template, instruction, query)
        once per request instead of once per document (false: every pair runs whole). Its passes
        keep every layer's keys and values of the batch, prefixes included; the declared working
        set counts them, and a pass holds at most the batch token budget of them.
    :ivar prefix_cache_entries: prefixes whose key/value states stay cached (LRU) between batches.
    :ivar prefix_cache_tokens: their tokens in all (counted in the footprint).
    """

    instruction: str = DEFAULT_INSTRUCTION
    max_length: PositiveInt | None = None
    batch_tokens_gpu: PositiveInt = 16384
    batch_tokens_cpu: PositiveInt = 1024
    max_batch_size: PositiveInt = 128
    max_pending: PositiveInt = 65536
    max_request_tokens: PositiveInt | None = 300_000
    gpu_dtype: Literal["float16", "bfloat16"] = "float16"
    share_prefix: bool = True
    prefix_cache_entries: NonNegativeInt = 8
    prefix_cache_tokens: NonNegativeInt = 4096


def declare(config: HostConfig) -> ModelSpec:
    """The declaration of Qwen3-Reranker-0.6B, sized for the configured weights and options."""
    options = config.model_options(MODEL_ID, RerankOptions)
    weights = config.model_weights(MODEL_ID, HUB_ID)
    model_config = peek_config(weights) or QWEN3_RERANKER_0_6B_CONFIG
    max_length = max_length_of(model_config, options.max_length)
    cached = options.prefix_cache_tokens if options.share_prefix else None
    gpu_weights, gpu_work = footprint(
        model_config,
        dtype_bytes=2,
        batch_tokens=options.batch_tokens_gpu,
        max_length=max_length,
        prefix_cache_tokens=cached,
    )
    cpu_weights, cpu_work = footprint(
        model_config,
        dtype_bytes=4,
        batch_tokens=options.batch_tokens_cpu,
        max_length=max_length,
        prefix_cache_tokens=cached,
    )
    placements, offload_bytes = gpu_then_cpu(
        gpu_weights=gpu_weights, gpu_work=gpu_work, cpu_weights=cpu_weights, cpu_work=cpu_work
    )
    return ModelSpec(
        id=MODEL_ID,
        task=Task.RERANK,
        backend=BACKEND,
        placements=placements,
        aliases=(HUB_ID,),
        weights=weights,
        options=options,
        offload_bytes=offload_bytes,
        capabilities=Capabilities(context_length=max_length),
        description="Qwen3 reranker: P(yes) from two lm_head rows, batch-invariant",
        demo=DEMO,
    )


@hookimpl
def register_models(config: HostConfig) -> list[ModelSpec]:
    """Declare Qwen3-Reranker-0.6B."""
    return [declare(config)]
