"""A lean CPU decode step: transformers' Qwen2/Qwen3 arithmetic, op for op, with less Python around it.

Profiled on one thread (Qwen2.5-0.5B shape), a decode step through ``Qwen2ForCausalLM.forward``
spends ~6 ms of ~36 ms outside its matmuls: module calls, keyword plumbing, mask helpers, ~230
tensor ops per layer. :class:`CpuDecoder` runs one new token per row through the same tensor
operations, in the same order and dtypes, so its logits are bitwise those of ``forward`` (the
tests compare them with ``torch.equal``), and

- multiplies q, k and v with one int4 matmul and gate and up with another: both CPU int4 kernels
  (:mod:`chat_qwen_awq.cpu_kernels`'s and torch's) compute every output column on its own, so a
  fused product changes no bit (the per-projection packs become views into the fused ones);
- normalises (Qwen3's per-head q/k RMSNorm, one stacked weight) and rotates q and k together
  (per head and elementwise, so again no bit changes);
- calls torch ops directly instead of walking module trees.

Unquantised checkpoints run the same step with plain ``F.linear`` per projection (not fused: a
wider dense GEMM may sum in another order).

It serves decode steps only, on models that live wholly on the CPU; prefill, offloaded models
and GPUs keep transformers' forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from chat_qwen_awq import cpu_kernels

#: Rows per block of torch's CPU int4 pack (64 with AVX-512, 32 otherwise): a fused torch pack is
#: the concatenation of its parts' packs only when every part but the last fills whole blocks.
_PACK_BLOCK_ROWS = 64


@dataclass(frozen=True)
class Int4Matmul:
    """``x @ W.T (+ bias)`` for ``[rows, in]`` activations, as ``AwqLinear`` computes it on the CPU."""

    pack: cpu_kernels.CpuPack
    group_size: int
    bias: torch.Tensor | None  # [out] in the compute dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = cpu_kernels.apply(x, self.pack, self.group_size)
        return out if self.bias is None else out + self.bias


@dataclass(frozen=True)
class DenseMatmul:
    """``x @ W.T (+ bias)`` of an unquantised ``nn.Linear``: the very call its ``forward`` makes."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


Matmul = Int4Matmul | DenseMatmul


def fuse(linears: Sequence[Any], dtype: torch.dtype) -> Int4Matmul:
    """One :class:`Int4Matmul` for several ``AwqLinear`` of the same input, outputs side by side.

    Their own CPU packs are replaced by views into the fused one, so the model's ``forward`` and this
    step read the same memory; ``dtype`` is the compute dtype (the bias is kept in it). The caller
    checks :func:`fusable` first.
    """
    first = linears[0]
    packs = [lin.cpu_pack() for lin in linears]
    pack: cpu_kernels.CpuPack
    if len(packs) == 1:
        pack = packs[0]
    elif all(isinstance(p, cpu_kernels.Int4Pack) for p in packs):
        pack = cpu_kernels.concat(packs)
        start = 0
        for lin in linears:
            lin.use_cpu_pack(pack.columns(start, start + lin.out_features))
            start += lin.out_features
    else:
        weight = torch.cat([w for w, _ in packs])
        pack = (weight, torch.cat([sz for _, sz in packs], dim=1))
        row = 0
        for lin, (w, sz) in zip(linears, packs):
            lin.use_cpu_pack((weight[row : row + w.shape[0]], sz))
            row += w.shape[0]
    biases = [lin.bias for lin in linears]
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat(
            [
                b.to(dtype) if b is not None else torch.zeros(lin.out_features, dtype=dtype)
                for lin, b in zip(linears, biases)
            ]
        )
    return Int4Matmul(pack, first.group_size, bias)


def fusable(linears: Sequence[Any]) -> bool:
    """Whether ``linears`` (of one input) can share one pack: this plugin's packs always can; torch's
    when every part but the last fills whole blocks (see :data:`_PACK_BLOCK_ROWS`)."""
    if len({lin.group_size for lin in linears}) != 1 or len({lin.in_features for lin in linears}) != 1:
        return False
    packs = [lin.cpu_pack() for lin in linears]
    if all(isinstance(p, cpu_kernels.Int4Pack) for p in packs):
        return True
    if any(isinstance(p, cpu_kernels.Int4Pack) for p in packs):
        return False
    return all(lin.out_features % _PACK_BLOCK_ROWS == 0 for lin in linears[:-1])


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's weights as the step uses them."""

    norm1: torch.Tensor
    norm2: torch.Tensor
    eps1: float
    eps2: float
    qkv: tuple[Matmul, ...]  # one fused matmul, or q, k, v
    o: Matmul
    gate_up: tuple[Matmul, ...]  # one fused matmul, or gate, up
    down: Matmul
    #: Qwen3: the q and k norms' weights stacked per head ([heads + kv_heads, head_dim]), and their eps
    #: (one elementwise product per value, as each norm's own: no bit changes).
    qk_norm: torch.Tensor | None = None
    qk_eps: float = 0.0


def _rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Qwen2RMSNorm on a float32 stream (its .to(float32) and .to(input_dtype) are no-ops there)
    variance = h.pow(2).mean(-1, keepdim=True)
    return weight * (h * torch.rsqrt(variance + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # apply_rotary_pos_emb: x * cos + rotate_half(x) * sin
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


class CpuDecoder:
    """One decode step of a CPU-resident ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` (see the module docstring).

    Build it with :meth:`build`, which says ``None`` where the step does not apply.
    """

    def __init__(self, model: Any, layers: list[_Layer]) -> None:
        config = model.config
        self.model = model
        self.layers = layers
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self.scaling = self.head_dim**-0.5
        self.intermediate = int(config.intermediate_size)

    @classmethod
    def build(cls, model: Any) -> CpuDecoder | None:
        """A decoder for ``model``, or ``None`` unless every weight is on the CPU, in fp32 outside the
        ``AwqLinear`` (which must have CPU packs), and its attention is full (no sliding window)."""
        config = model.config
        if getattr(config, "use_sliding_window", False) or getattr(config, "_attn_implementation", "") != "sdpa":
            return None
        if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            return None
        if model.model.norm.weight.dtype != torch.float32:  # _rms_norm leaves out RMSNorm's casts to fp32
            return None
        if any(p.device.type != "cpu" for p in model.parameters()) or hasattr(model, "hf_device_map"):
            return None
        if any(getattr(m, "_hf_hook", None) is not None for m in model.modules()):
            return None
        if getattr(config, "hidden_act", "silu") != "silu":
            return None
        dtype = model.model.norm.weight.dtype
        layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            dense = all(type(lin) is nn.Linear and lin.weight.dtype == dtype for lin in linears)
            if not dense and not all(
                callable(getattr(lin, "cpu_pack", None)) and lin.cpu_pack() is not None for lin in linears
            ):
                return None
            qk_norm, qk_eps = None, 0.0
            if hasattr(attn, "q_norm"):
                qk_eps = float(attn.q_norm.variance_epsilon)
                if float(attn.k_norm.variance_epsilon) != qk_eps:
                    return None
                qk_norm = torch.cat(
                    [
                        attn.q_norm.weight.expand(int(config.num_attention_heads), -1),
                        attn.k_norm.weight.expand(int(config.num_key_value_heads), -1),
                    ]
                )
            qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
            gate_up = [mlp.gate_proj, mlp.up_proj]
            layers.append(
                _Layer(
                    norm1=layer.input_layernorm.weight,
                    norm2=layer.post_attention_layernorm.weight,
                    eps1=float(layer.input_layernorm.variance_epsilon),
                    eps2=float(layer.post_attention_layernorm.variance_epsilon),
                    qkv=_dense(qkv) if dense else _fused(qkv, dtype),
                    o=_dense([attn.o_proj])[0] if dense else fuse([attn.o_proj], dtype),
                    gate_up=_dense(gate_up) if dense else _fused(gate_up, dtype),
                    down=_dense([mlp.down_proj])[0] if dense else fuse([mlp.down_proj], dtype),
                    qk_norm=qk_norm,
                    qk_eps=qk_eps,
                )
            )
        return cls(model, layers)

    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits ``[rows, vocab]`` for ``tokens`` ``[rows, 1]`` at ``positions`` ``[rows, 1]``.

        ``cache``: the rows' transformers ``DynamicCache`` (extended by one column here);
        ``mask``: ``None`` without padding, else the 4-D boolean attention mask (True = attend)
        over the cache's columns and the new one. Call it under ``torch.inference_mode()``.
        """
        model = self.model.model
        rows = tokens.shape[0]
        h = model.embed_tokens(tokens)  # [rows, 1, hidden]
        cos, sin = model.rotary_emb(h, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        h = h.view(rows, -1)
        q_width = self.heads * self.head_dim
        kv_width = self.kv_heads * self.head_dim
        for i, layer in enumerate(self.layers):
            x = _rms_norm(h, layer.norm1, layer.eps1)
            if len(layer.qkv) == 1:
                qkv = layer.qkv[0](x)
                qk = qkv[:, : q_width + kv_width].view(rows, 1, -1, self.head_dim)
                if layer.qk_norm is not None:
                    qk = _rms_norm(qk, layer.qk_norm, layer.qk_eps)
                qk = _rotate(qk.transpose(1, 2), cos, sin)
                q, k = qk[:, : self.heads], qk[:, self.heads :]
                v = qkv[:, q_width + kv_width :].view(rows, 1, -1, self.head_dim).transpose(1, 2)
            else:
                q = layer.qkv[0](x).view(rows, 1, -1, self.head_dim)
                k = layer.qkv[1](x).view(rows, 1, -1, self.head_dim)
                if layer.qk_norm is not None:
                    q = _rms_norm(q, layer.qk_norm[: self.heads], layer.qk_eps)
                    k = _rms_norm(k, layer.qk_norm[self.heads :], layer.qk_eps)
                q = _rotate(q.transpose(1, 2), cos, sin)
                k = _rotate(k.transpose(1, 2), cos, sin)
                v = layer.qkv[2](x).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            keys, values = cache.update(k, v, i)
            # enable_gqa with a mask too: the same bits as transformers' repeated keys and values
            # (a test compares them), without copying them every step
            attn = nn.functional.scaled_dot_product_attention(
                q,
                keys,
                values,
                attn_mask=None if mask is None else mask[:, :, :, : keys.shape[-2]],
                dropout_p=0.0,
                scale=self.scaling,
                is_causal=False,
                enable_gqa=True,
            )
            h = h + layer.o(attn.transpose(1, 2).reshape(rows, -1))
            x = _rms_norm(h, layer.norm2, layer.eps2)
            if len(layer.gate_up) == 1:
                gate_up = layer.gate_up[0](x)
                gate, up = gate_up[:, : self.intermediate], gate_up[:, self.intermediate :]
            else:
                gate, up = layer.gate_up[0](x), layer.gate_up[1](x)
            h = h + layer.down(nn.functional.silu(gate) * up)
        h = model.norm(h.view(rows, 1, -1))
        return self.model.lm_head(h).view(rows, -1)


def _dense(linears: list[Any]) -> tuple[DenseMatmul, ...]:
    return tuple(DenseMatmul(lin.weight, lin.bias) for lin in linears)


def _fused(linears: list[Any], dtype: torch.dtype) -> tuple[Int4Matmul, ...]:
    return (fuse(linears, dtype),) if fusable(linears) else tuple(fuse([lin], dtype) for lin in linears)
