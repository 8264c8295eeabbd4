"""Which engine serves the model (``options.engine``), and the footprints vLLM is given.

Pure Python, no torch: the declaration uses it. The scheduler budgets what is declared here, and
vLLM gets exactly its part of it: an explicit KV-cache size (``kv_cache_memory_bytes``) instead
of a share of the whole GPU (``gpu_memory_utilization``), so that embeddings and rerank models
still fit beside it.

A vLLM placement holds:

- on the GPU: the same 4-bit layers and fp16 embeddings/head as the plugin's own engine, the KV
  cache (``kv_cache_tokens`` + ``prefix_cache_tokens``, fp16: vLLM's prefix cache shares the
  running sequences' blocks), the working set of a ``prefill_chunk_tokens`` step, and
  :data:`GPU_OVERHEAD_BYTES` for what vLLM does not count itself: the engine process's CUDA
  context, its CUDA graphs (decode batches up to ``max_sequences``) and allocator slack;
- in host RAM: :data:`HOST_BYTES` for the engine's processes (Python, torch and CUDA libraries),
  and on the CPU build the whole model, as the plugin's CPU placement sizes it.

The two constants are estimates (the CPU figure measured: ~2 GB RSS over three processes); the
first session with a GPU should check them with ``bench/bench_chat.py --engine vllm``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from chat_qwen_awq import sizing
from host.sdk import GiB, MiB, Placement, PlacementKind

log = logging.getLogger("plughost.chat_qwen_awq")

#: GPU memory of a vLLM engine outside the model, its KV cache and working set (see the module docstring).
GPU_OVERHEAD_BYTES = 1536 * MiB
#: Host RAM of a vLLM engine's processes besides the weights it holds there.
HOST_BYTES = 3 * GiB
#: vLLM's CPU attention needs heads at least this wide (narrower ones end the engine at its first step).
MIN_CPU_HEAD_DIM = 32
#: The environment variable naming the vLLM environment's Python when ``options.vllm_python`` is unset.
PYTHON_ENV = "PLUGHOST_VLLM_PYTHON"

#: Import strings of the backends an engine choice declares.
OWN_BACKEND = "chat_qwen_awq.backend:QwenAwqChatBackend"
VLLM_BACKEND = "chat_qwen_awq.vllm_backend:VllmChatBackend"
AUTO_BACKEND = "chat_qwen_awq.engines:AutoChatBackend"


def vllm_python(options: sizing.ChatOptions) -> str | None:
    """The vLLM environment's Python (``options.vllm_python``, else ``$PLUGHOST_VLLM_PYTHON``), or
    ``None`` when neither is set or the file is not there (logged: a path that was meant to work)."""
    configured = options.vllm_python or os.environ.get(PYTHON_ENV)
    if not configured:
        return None
    path = Path(configured).expanduser()
    if not path.is_file():
        log.warning("the vLLM environment's Python %s does not exist; the chat model cannot use vLLM", path)
        return None
    return str(path)


def kv_cache_bytes(shape: sizing.ModelShape, limits: sizing.Limits) -> int:
    """vLLM's ``kv_cache_memory_bytes``: every KV token the limits allow, in fp16."""
    return limits.kv_tokens_held * sizing.kv_bytes_per_token(shape)


def weights_bytes(shape: sizing.ModelShape) -> int:
    """The 4-bit layers and the fp16 embeddings/head, as loaded on a GPU."""
    return shape.num_hidden_layers * sizing.layer_bytes(shape) + sizing.head_bytes(shape)


def gpu_placement(shape: sizing.ModelShape, limits: sizing.Limits) -> Placement:
    """The whole model on one GPU under vLLM."""
    gpu = (
        weights_bytes(shape) + kv_cache_bytes(shape, limits) + sizing.working_bytes(shape, limits) + GPU_OVERHEAD_BYTES
    )
    return Placement(kind=PlacementKind.GPU, gpu_bytes=gpu, host_bytes=HOST_BYTES)


def cpu_placement(shape: sizing.ModelShape, limits: sizing.Limits) -> Placement:
    """The whole model in host RAM under vLLM's CPU build (fp16 KV cache; the test tier's engine)."""
    host = (
        weights_bytes(shape)
        + kv_cache_bytes(shape, limits)
        + sizing.working_bytes(shape, limits, cpu=True)
        + HOST_BYTES
    )
    return Placement(kind=PlacementKind.CPU, host_bytes=host)


def declaration(
    options: sizing.ChatOptions, shape: sizing.ModelShape, limits: sizing.Limits
) -> tuple[str, tuple[Placement, ...]]:
    """The backend import string and placements of ``options.engine``.

    - ``plughost``, or ``auto`` without a vLLM environment: the plugin's engine and its placements;
    - ``auto`` with one: a GPU placement sized for vLLM (vLLM serves it), hybrid and CPU as before
      (the plugin's engine serves those);
    - ``vllm``: vLLM's GPU and CPU placements only (it cannot split a model between GPU and host RAM).
    """
    own = sizing.placements(shape, limits)
    if options.engine == "plughost":
        return OWN_BACKEND, own
    if options.engine == "vllm":
        return VLLM_BACKEND, (gpu_placement(shape, limits), cpu_placement(shape, limits))
    if vllm_python(options) is None:
        return OWN_BACKEND, own
    gpu = gpu_placement(shape, limits)
    return AUTO_BACKEND, tuple(gpu if p.kind == PlacementKind.GPU else p for p in own)
