"""Memory footprints of a Qwen2 or Qwen3 dense model (4-bit AWQ GEMM or unquantised), from its ``config.json``.

Pure Python (no torch): the plugin's declaration uses it to size its placements, and the
loader uses the same numbers to split decoder layers between the GPU and host RAM.

The two architectures differ where the bytes are concerned in three places: Qwen2 has a bias on
q/k/v and ``head_dim = hidden_size / num_attention_heads``; Qwen3 has no bias, an explicit
``head_dim`` (128 in every size: the attention is wider than the hidden state in the small models)
and an RMSNorm over each query and key head (two ``head_dim`` weights per layer). Qwen3 MoE
(``Qwen3MoeForCausalLM``) is not served.

Where the bytes go:

- every decoder layer: its seven linears, AWQ (``qweight`` int32 ``[in, out/8]``, ``qzeros``
  int32 ``[in/G, out/8]``, ``scales`` fp16 ``[in/G, out]``, fp16 ``bias`` on Qwen2's q/k/v) or
  unquantised (a compute-dtype ``[out, in]`` weight and bias), and its norm weights (compute dtype);
- embeddings, the final norm and ``lm_head`` in the compute dtype (fp16 on a GPU, fp32 on the
  CPU, or bf16 matrices there with ``cpu_head_dtype`` — the default where the CPU has native
  bf16 dot products; a tied head costs nothing extra);
- the KV cache: ``kv_cache_tokens`` tokens in all (every running sequence together), in the
  compute dtype;
- a working set: activations of one prefill chunk, logits of every running sequence, the
  largest dequantised weight, and (hybrid) one decoder layer streamed in from host RAM.

On the CPU each AWQ linear also keeps a copy repacked for the CPU int4 kernel (the AWQ buffers
stay, so that the model can move back to a GPU without reading the disk).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from host.sdk import InvalidRequest, NonNegativeInt, Options, Placement, PlacementKind, PositiveInt

#: The linears of a decoder layer (AWQ-quantised in an AWQ checkpoint), in module order.
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The architectures served, by ``config.json``'s ``architectures`` entry and its ``model_type``.
ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}

#: The quantisation config of Qwen's published AWQ checkpoints (4-bit GEMM, groups of 128).
_PUBLISHED_AWQ: dict[str, Any] = {
    "bits": 4,
    "group_size": 128,
    "quant_method": "awq",
    "version": "gemm",
    "zero_point": True,
    "modules_to_not_convert": None,
}

#: ``config.json`` of Qwen/Qwen2.5-7B-Instruct-AWQ: the fallback when the real file is not at hand.
QWEN2_5_7B_AWQ_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "quantization_config": _PUBLISHED_AWQ,
}

#: ``config.json`` of Qwen/Qwen3-8B-AWQ: the fallback when the real file is not at hand.
QWEN3_8B_AWQ_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "head_dim": 128,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
    "quantization_config": _PUBLISHED_AWQ,
}

_FP16 = 2
_FP32 = 4


class ModelConfigError(ValueError):
    """The checkpoint is not a model this plugin can serve (architecture or quantisation)."""


def architecture(config: Mapping[str, Any]) -> str:
    """``"qwen2"`` or ``"qwen3"``, from ``architectures`` (else ``model_type``); :class:`ModelConfigError` otherwise."""
    names = list(config.get("architectures") or [])
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = str(config.get("model_type", ""))
    if not names and model_type in ARCHITECTURES.values():
        return model_type
    found = ", ".join(names) or model_type or "missing"
    if "moe" in found.lower():
        raise ModelConfigError(f"{found} is a mixture-of-experts model; only dense Qwen2 and Qwen3 models are served")
    raise ModelConfigError(f"architecture {found} is not served; expected one of {', '.join(ARCHITECTURES)}")


def _awq_group_size(config: Mapping[str, Any]) -> int | None:
    """The AWQ group size (-1: one group per column), or ``None`` for an unquantised checkpoint."""
    q = config.get("quantization_config")
    if not q:
        return None
    method = str(q.get("quant_method", "")).lower()
    if method != "awq":
        raise ModelConfigError(f"quantization_config.quant_method is {method or 'missing'!r}, expected 'awq'")
    bits = q.get("bits", q.get("w_bit"))
    if bits != 4:
        raise ModelConfigError(f"only 4-bit AWQ is supported, the checkpoint has bits={bits!r}")
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise ModelConfigError(f"only AWQ version 'gemm' is supported, the checkpoint has {version!r}")
    if q.get("zero_point", True) is not True:
        raise ModelConfigError("only AWQ with zero points (zero_point: true) is supported")
    if q.get("modules_to_not_convert"):
        raise ModelConfigError(f"modules_to_not_convert={q['modules_to_not_convert']!r} is not supported")
    return int(q.get("group_size", q.get("q_group_size", 128)))


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2/Qwen3 dense model that decide its memory footprint.

    ``group_size`` is the AWQ group size, ``None`` for an unquantised checkpoint.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    group_size: int | None
    arch: str = "qwen2"
    qkv_bias: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Read a ``config.json`` mapping; :class:`ModelConfigError` when the plugin cannot serve it."""
        arch = architecture(config)
        group = _awq_group_size(config)
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        # As transformers reads it: Qwen3Config defaults to 128, Qwen2 to hidden_size / heads.
        head_dim = int(config.get("head_dim") or (128 if arch == "qwen3" else hidden // heads))
        shape = cls(
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            group_size=hidden if group == -1 else group,
            arch=arch,
            qkv_bias=True if arch == "qwen2" else bool(config.get("attention_bias", False)),
        )
        if shape.group_size is not None:
            for name, in_f, out_f, _ in shape.linears():
                if in_f % shape.group_size or out_f % 8:
                    raise ModelConfigError(f"{name}: {in_f}x{out_f} does not fit AWQ group size {shape.group_size}")
        return shape

    @property
    def quantized(self) -> bool:
        """Whether the decoder linears are 4-bit AWQ."""
        return self.group_size is not None

    @property
    def qk_norm(self) -> bool:
        """Whether each query and key head is RMS-normalised (Qwen3)."""
        return self.arch == "qwen3"

    @property
    def q_dim(self) -> int:
        """Width of the query projection (Qwen3's exceeds ``hidden_size`` in the small models)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection."""
        return self.num_key_value_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int, bool]]:
        """``(name, in_features, out_features, has_bias)`` of each linear of one layer."""
        h, i, q, kv, bias = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim, self.qkv_bias
        return [
            ("q_proj", h, q, bias),
            ("k_proj", h, kv, bias),
            ("v_proj", h, kv, bias),
            ("o_proj", q, h, False),
            ("gate_proj", h, i, False),
            ("up_proj", h, i, False),
            ("down_proj", i, h, False),
        ]

    @property
    def parameters(self) -> int:
        """Parameters of the unquantised model (embeddings and an untied head included)."""
        layer = sum(i * o + (o if b else 0) for _, i, o, b in self.linears()) + 2 * self.hidden_size
        layer += 2 * self.head_dim if self.qk_norm else 0
        matrices = 1 if self.tie_word_embeddings else 2
        return self.num_hidden_layers * layer + matrices * self.vocab_size * self.hidden_size + self.hidden_size


@dataclass(frozen=True)
class Limits:
    """What the engine may hold: per-sequence context, KV tokens in all, concurrent sequences."""

    context_length: int
    kv_cache_tokens: int
    max_sequences: int
    prefill_chunk_tokens: int
    cpu_head_dtype: str = "float32"
    #: Completion budget of a request without ``max_tokens`` (at most what the context leaves).
    default_max_tokens: int = 2048
    #: The largest ``max_tokens`` a request may ask for (400 above it).
    max_tokens_cap: int | None = None
    #: Sequences waiting for a free row before new requests get 429.
    max_waiting_sequences: int = 128
    prefix_cache_tokens: int = 0
    #: Tokens one request may generate over all its choices (400 above it).
    max_request_output_tokens: int = 32768
    #: Log probabilities one request may return over all its choices (400 above it).
    max_request_logprobs: int = 131072

    @property
    def kv_tokens_held(self) -> int:
        """KV-cache tokens held at most: the running sequences' and the prefix cache's."""
        return self.kv_cache_tokens + self.prefix_cache_tokens


class ChatOptions(Options, frozen=True):
    """``models.<id>.options`` of this plugin.

    :ivar context_length: longest prompt + completion of one sequence (``None``: the model's, at
        most 16384).
    :ivar kv_cache_tokens: KV-cache tokens of all running sequences together (``None``: context_length).
    :ivar max_sequences: sequences decoded together; more requests wait for a free slot.
    :ivar prefill_chunk_tokens: prompt tokens per prefill forward pass.
    :ivar cpu_head_dtype: weights of embeddings and lm_head on the CPU: ``auto`` (bfloat16 where the
        CPU has native bf16 dot products, else float32), float32 or bfloat16 (half the memory, ~3x
        faster head; activations stay fp32), or ``int8`` (opt-in, lossy, the fastest: per-row int8
        codes, the head through the plugin's VNNI kernel; docs/troubleshooting.md says how much it
        changes the logits).
    :ivar prefix_cache_tokens: KV-cache tokens of prompt prefixes kept for reuse by later requests
        (0 turns prefix caching off); counted in the model's footprint.
    :ivar offload_dir: the folder for disk overflow of a hybrid grant on a machine without GPU.
    :ivar default_max_tokens: completion budget of a request without ``max_tokens`` (never more
        than the context leaves).
    :ivar max_tokens_cap: the largest ``max_tokens`` a request may ask for; larger is a 400 naming
        both numbers (``None``: context_length).
    :ivar max_waiting_sequences: bound of the line for a free sequence slot: a newcomer gets 429
        when this many waiting requests would go before it (never more than twice this many wait).
    :ivar max_request_output_tokens: tokens one request may generate in all, ``n`` choices (and a
        legacy completion's prompts) times ``max_tokens``; more is a 400 naming both numbers. A
        request without ``max_tokens`` gets a default budget that fits.
    :ivar max_request_logprobs: log probabilities one request may return, generated tokens times
        ``1 + top_logprobs`` over all its choices (each is about 90 bytes of JSON); more is a 400.
    :ivar grammar_max_schema_bytes: the largest ``response_format`` or tools schema (compact JSON)
        a request may ask to enforce; see :mod:`chat_qwen_awq.schema_limits` for these three caps.
    :ivar grammar_max_depth: how deep such a schema may nest (objects and arrays).
    :ivar grammar_max_alternatives: the most alternatives at one point of such a schema (an object's
        properties, ``anyOf`` branches).
    :ivar engine: ``auto`` (vLLM when the model is placed wholly on a CUDA GPU and a vLLM environment
        is configured, else the plugin's own engine), ``plughost`` (always the plugin's engine) or
        ``vllm`` (always vLLM: its GPU or CPU build, whichever the environment holds; never hybrid).
    :ivar vllm_python: the Python of a vLLM environment (``None``: ``$PLUGHOST_VLLM_PYTHON``); see
        docs/deployment.md ("vLLM as the chat engine").
    :ivar vllm_start_timeout_s: how long a vLLM engine may take to start before the load fails.
    :ivar thinking: a thinking model's (Qwen3's) default for requests that neither switch thinking
        themselves nor write ``/think`` or ``/no_think``: ``on`` or ``off`` (YAML's unquoted ``on``/
        ``off`` are booleans: ``true``/``false`` mean the same; ``None``: the chat template's own
        default, on for Qwen3). Models that cannot think ignore it.
    :ivar thinking_budget: the think-block tokens of a request that sets no budget; then the block
        is closed and the model answers (``None``: no cap but ``max_tokens``).
    """

    context_length: Annotated[int, msgspec.Meta(ge=2)] | None = None
    kv_cache_tokens: PositiveInt | None = None
    max_sequences: PositiveInt = 8
    prefill_chunk_tokens: PositiveInt = 512
    cpu_head_dtype: Literal["auto", "float32", "bfloat16", "int8"] = "auto"
    prefix_cache_tokens: NonNegativeInt = 4096
    offload_dir: str | None = None
    default_max_tokens: PositiveInt = 2048
    max_tokens_cap: PositiveInt | None = None
    max_waiting_sequences: Annotated[int, msgspec.Meta(ge=0)] = 128
    max_request_output_tokens: PositiveInt = 32768
    max_request_logprobs: PositiveInt = 131072
    grammar_max_schema_bytes: PositiveInt = 65536
    grammar_max_depth: PositiveInt = 64
    grammar_max_alternatives: PositiveInt = 256
    engine: Literal["auto", "plughost", "vllm"] = "auto"
    vllm_python: str | None = None
    vllm_start_timeout_s: PositiveInt = 600
    thinking: Literal["on", "off"] | bool | None = None
    thinking_budget: PositiveInt | None = None


DEFAULT_MAX_CONTEXT = 16384


def limits_from_options(shape: ModelShape, options: ChatOptions) -> Limits:
    """The engine limits from the model's options, checked against the model."""
    context = options.context_length or min(shape.max_position_embeddings, DEFAULT_MAX_CONTEXT)
    if context > shape.max_position_embeddings:
        raise ValueError(
            f"option 'context_length' ({context}) exceeds the model's max_position_embeddings "
            f"({shape.max_position_embeddings})"
        )
    kv_tokens = options.kv_cache_tokens or context
    if kv_tokens < context:
        raise ValueError(f"option 'kv_cache_tokens' ({kv_tokens}) must hold at least one full context ({context})")
    head: str = options.cpu_head_dtype
    if head == "auto":
        head = "bfloat16" if cpu_has_native_bf16() else "float32"
    return Limits(
        context_length=context,
        kv_cache_tokens=kv_tokens,
        max_sequences=options.max_sequences,
        prefill_chunk_tokens=options.prefill_chunk_tokens,
        cpu_head_dtype=head,
        default_max_tokens=options.default_max_tokens,
        max_tokens_cap=min(options.max_tokens_cap or context, context),
        max_waiting_sequences=options.max_waiting_sequences,
        prefix_cache_tokens=options.prefix_cache_tokens,
        max_request_output_tokens=options.max_request_output_tokens,
        max_request_logprobs=options.max_request_logprobs,
    )


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16).

    There a bf16 lm_head is about twice as fast as an fp32 one (it is memory-bound) and no less
    exact in what matters (the logits' order); without them bf16 is emulated and slower.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def awq_linear_bytes(in_features: int, out_features: int, group_size: int, bias: bool) -> int:
    """Bytes of one ``WQLinear_GEMM``'s buffers (qweight, qzeros, scales, optional fp16 bias)."""
    groups = in_features // group_size
    return (
        in_features * out_features // 2
        + groups * out_features // 2
        + groups * out_features * _FP16
        + (out_features * _FP16 if bias else 0)
    )


def int4pack_bytes(in_features: int, out_features: int, group_size: int) -> int:
    """Bytes of the CPU-kernel copy of one linear: 4-bit codes plus, per group and column, torch's
    bf16 scale and zero (the plugin's own kernel needs 3 of those 4 bytes: fp16 scale, uint8 zero)."""
    return in_features * out_features // 2 + (in_features // group_size) * out_features * 2 * 2


#: Linears whose CPU packs the lean decode step fuses (one input each: q/k/v, gate/up).
FUSED_LINEARS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


def dense_linear_bytes(in_features: int, out_features: int, bias: bool, dtype_bytes: int) -> int:
    """Bytes of one unquantised ``nn.Linear`` (weight and optional bias) in a dtype of ``dtype_bytes``."""
    return (in_features * out_features + (out_features if bias else 0)) * dtype_bytes


def layer_bytes(shape: ModelShape, *, cpu: bool = False) -> int:
    """Bytes of one decoder layer as loaded (``cpu``: fp32 norms, fp32 dense linears or the AWQ
    buffers plus their int4 kernel copies).

    On the CPU the fused q/k/v and gate/up packs share their parts' codes; with torch's kernel
    (which reads no strided scales) they hold a second copy of the scales and zeros, counted here.
    """
    dtype = _FP32 if cpu else _FP16
    norms = 2 * shape.hidden_size + (2 * shape.head_dim if shape.qk_norm else 0)
    total = norms * dtype
    group = shape.group_size
    for name, in_f, out_f, bias in shape.linears():
        if group is None:
            total += dense_linear_bytes(in_f, out_f, bias, dtype)
            continue
        total += awq_linear_bytes(in_f, out_f, group, bias)
        if cpu:
            total += int4pack_bytes(in_f, out_f, group)
            if name in FUSED_LINEARS:
                total += (in_f // group) * out_f * 2 * 2
    return total


def head_bytes(shape: ModelShape, *, cpu: bool = False, cpu_head_dtype: str = "float32") -> int:
    """Embeddings, final norm and (untied) lm_head (compute dtype; on the CPU ``cpu_head_dtype`` matrices).

    On the CPU a tied head also holds a copy of the shared matrix in its kernel's layout (oneDNN's
    reordered one, or the int8 kernel's packed rows); an untied one keeps only that copy: always two
    matrices.
    """
    norm = _FP32 if cpu else _FP16
    matrices = 2 if cpu else (1 if shape.tie_word_embeddings else 2)
    if cpu and cpu_head_dtype == "int8":  # int8 codes, a bf16 scale per row, and the head kernel's fp32 scales
        return matrices * shape.vocab_size * (shape.hidden_size + 2) + shape.vocab_size * 4 + shape.hidden_size * norm
    matrix = (_FP32 if cpu_head_dtype == "float32" else 2) if cpu else _FP16
    return matrices * shape.vocab_size * shape.hidden_size * matrix + shape.hidden_size * norm


def kv_bytes_per_token(shape: ModelShape, *, cpu: bool = False) -> int:
    """KV-cache bytes of one token over all layers."""
    return 2 * shape.num_hidden_layers * shape.kv_dim * (_FP32 if cpu else _FP16)


def working_bytes(shape: ModelShape, limits: Limits, *, cpu: bool = False, streamed_layer: bool = False) -> int:
    """Transient memory of a forward pass (see the module docstring)."""
    dtype = _FP32 if cpu else _FP16
    chunk = min(limits.prefill_chunk_tokens, limits.context_length)
    widths = 4 * shape.hidden_size + 2 * shape.q_dim + 2 * shape.kv_dim + 3 * shape.intermediate_size
    activations = chunk * widths * dtype
    # Attention scores of a prefill chunk against the whole context (the CPU's math kernel
    # materialises them; GPU kernels do not).
    scores = chunk * shape.num_attention_heads * limits.context_length * _FP32 if cpu else 0
    logits = 3 * limits.max_sequences * shape.vocab_size * _FP32
    # An AWQ layer dequantises its weight on a GPU (and where no CPU kernel serves); dense ones need no copy.
    largest = max(in_f * out_f for _, in_f, out_f, _ in shape.linears()) * dtype if shape.quantized else 0
    kv_merge = limits.kv_cache_tokens * kv_bytes_per_token(shape, cpu=cpu) // shape.num_hidden_layers
    streamed = layer_bytes(shape) if streamed_layer else 0
    return activations + scores + logits + largest + kv_merge + streamed


def gpu_fixed_bytes(shape: ModelShape, limits: Limits, *, hybrid: bool) -> int:
    """What must be on the GPU whatever the layer split: head, KV cache, working set."""
    return (
        head_bytes(shape)
        + limits.kv_tokens_held * kv_bytes_per_token(shape)
        + working_bytes(shape, limits, streamed_layer=hybrid)
    )


def cpu_bytes(shape: ModelShape, limits: Limits) -> int:
    """Host RAM of the CPU placement (fp32 compute)."""
    return (
        head_bytes(shape, cpu=True, cpu_head_dtype=limits.cpu_head_dtype)
        + shape.num_hidden_layers * layer_bytes(shape, cpu=True)
        + limits.kv_tokens_held * kv_bytes_per_token(shape, cpu=True)
        + working_bytes(shape, limits, cpu=True)
    )


def placements(shape: ModelShape, limits: Limits) -> tuple[Placement, ...]:
    """gpu (all on one GPU), hybrid (decoder layers split GPU / host RAM), cpu — in that order."""
    layers = shape.num_hidden_layers * layer_bytes(shape)
    return (
        Placement(kind=PlacementKind.GPU, gpu_bytes=gpu_fixed_bytes(shape, limits, hybrid=False) + layers),
        Placement(
            kind=PlacementKind.HYBRID, gpu_bytes=gpu_fixed_bytes(shape, limits, hybrid=True), flexible_bytes=layers
        ),
        Placement(kind=PlacementKind.CPU, host_bytes=cpu_bytes(shape, limits)),
    )


def gpu_layer_count(shape: ModelShape, limits: Limits, gpu_bytes: int, *, layer_size: int | None = None) -> int:
    """Decoder layers that fit on the GPU next to the fixed part in a hybrid grant of ``gpu_bytes``."""
    size = layer_size if layer_size is not None else layer_bytes(shape)
    room = gpu_bytes - gpu_fixed_bytes(shape, limits, hybrid=True)
    return max(0, min(shape.num_hidden_layers, room // size))


def context_error(prompt_tokens: int, max_tokens: int | None, context: int) -> InvalidRequest | None:
    """The 400 for a prompt (+ ``max_tokens``) that does not fit ``context``; ``None`` when it fits."""
    if max_tokens is None:
        if prompt_tokens < context:
            return None
        return InvalidRequest(
            f"This model's maximum context length is {context} tokens, but the messages take {prompt_tokens} "
            f"tokens, which leaves no room for a completion. Please shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    if prompt_tokens + max_tokens <= context:
        return None
    return InvalidRequest(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). "
        f"Please reduce the length of the messages or the completion.",
        param="max_tokens",
        code="context_length_exceeded",
    )
