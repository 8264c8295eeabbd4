"""Embeddings and lm_head of a CPU-resident chat model: the storage dtypes of ``cpu_head_dtype``.

At small model sizes the head is the largest read of a CPU decode step (151,936 x 896 for the 0.5B
shape: more bytes than all its int4 decoder layers), so how it is stored and multiplied decides
much of the step: :class:`CastHead` keeps it in bf16 (or fp32) and multiplies through oneDNN's
reordered weight, :class:`Int8Head` keeps int8 rows (opt-in, lossy) and multiplies through the
plugin's VNNI kernel (:mod:`chat_qwen_awq.cpu_kernels`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chat_qwen_awq import cpu_kernels


class CastEmbedding(nn.Module):
    """Embedding lookup in a storage dtype, returning the compute dtype."""

    def __init__(self, weight: nn.Parameter, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = weight
        self.out_dtype = out_dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight).to(self.out_dtype)


def onednn_pack(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` ``[out, in]`` reordered by oneDNN for ``x @ weight.T`` (``None`` where torch lacks it).

    On one CPU thread a vocabulary-sized bf16 GEMV with the plain matrix reaches about half the
    memory bandwidth (17.5 ms for 151,936 x 896); with the reordered one 7.4 ms, bitwise the
    same logits in bf16 (fp32 sums in another order: ~1e-4 apart).
    """
    reorder = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    if reorder is None or not torch.backends.mkldnn.is_available() or weight.device.type != "cpu":
        return None
    try:
        packed = reorder(weight.detach(), 1)
        # One row through it now: a CPU or dtype oneDNN reorders for but cannot multiply (bf16
        # without native support) must fail here, at load, not at every step.
        torch.ops.mkldnn._linear_pointwise(weight.new_zeros(1, weight.shape[1]), packed, None, "none", [], "")
    except RuntimeError:
        return None  # the plain matmul serves
    return packed


class CastHead(nn.Module):
    """lm_head whose weight is stored (and multiplied) in another dtype; fp32 logits out.

    On the CPU it multiplies with a oneDNN-reordered copy of the weight (:func:`onednn_pack`).
    An untied head keeps only that copy (its state dict reads the weight back from it); a tied
    one shares the plain matrix with the embeddings and holds the reordered copy besides.
    """

    def __init__(self, weight: nn.Parameter, out_dtype: torch.dtype, *, tied: bool) -> None:
        super().__init__()
        self.out_dtype = out_dtype
        self.packed = onednn_pack(weight)
        self.weight: nn.Parameter | None = weight if tied or self.packed is None else None
        self.dtype = weight.dtype

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        if self.weight is not None:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        else:
            assert self.packed is not None
            destination[prefix + "weight"] = self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A fresh 2-D copy: the last-position slice transformers passes keeps its parent's strides,
        # which sends oneDNN's bf16 GEMM down a path ~60x slower.
        flat = x.reshape(-1, x.shape[-1]).to(self.dtype, memory_format=torch.contiguous_format)
        if self.packed is not None:
            out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, None, "none", [], "")
        else:
            assert self.weight is not None
            out = nn.functional.linear(flat, self.weight)
        out = out.to(self.out_dtype)
        return out.view(*x.shape[:-1], out.shape[-1])


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``(codes [rows, cols] int8, scales [rows] bf16)``, ``w ≈ codes * scale``."""
    w = weight.detach().to(torch.float32)
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return codes.contiguous(), scales.to(torch.bfloat16)


class Int8Rows(nn.Module):
    """A ``[vocab, hidden]`` matrix kept as int8 rows with one scale each.

    Half the bytes of bf16, which is what a memory-bound CPU decode step reads for its head. The
    state dict holds the dequantised matrix under ``weight`` (what relocation reads back), not
    the codes.
    """

    codes: torch.Tensor  # [vocab, hidden] int8
    scales: torch.Tensor  # [vocab] bf16

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.out_dtype = out_dtype

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.codes.to(torch.float32) * self.scales.to(torch.float32)[:, None]


class Int8Embedding(Int8Rows):
    """Embedding lookup: gather int8 rows, scale them, in the compute dtype."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.codes).to(self.out_dtype)
        return rows * self.scales[ids].unsqueeze(-1).to(self.out_dtype)


class Int8Head(Int8Rows):
    """lm_head of int8 rows; fp32 logits. Through the plugin's VNNI kernel where it serves
    (activations quantised per block of 32 inside, :mod:`chat_qwen_awq.cpu_kernels`), else torch's
    ``_weight_int8pack_mm`` (bf16 activations). With the plugin's kernel an untied head keeps only
    the packed rows (its state dict unpacks them); a tied one shares the embeddings' codes besides.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype, *, tied: bool) -> None:
        super().__init__(codes, scales, out_dtype)
        kern = cpu_kernels.kernel()
        self.packed: cpu_kernels.Int8Rows | None = None
        if (
            kern is not None
            and kern.usable()
            and codes.device.type == "cpu"
            and cpu_kernels.rows_packable(*codes.shape)
        ):
            self.packed = cpu_kernels.pack_rows(codes, scales)
            if not tied:
                del self.codes  # the packed rows hold them

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        codes = self.codes if "codes" in self._buffers else self._packed().codes()
        destination[prefix + "weight"] = codes.to(torch.float32) * self.scales.to(torch.float32)[:, None]

    def _packed(self) -> cpu_kernels.Int8Rows:
        assert self.packed is not None
        return self.packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.packed is not None:
            out = cpu_kernels.rows_apply(flat, self.packed).to(self.out_dtype)
        else:
            flat = flat.to(torch.bfloat16, memory_format=torch.contiguous_format)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.codes, self.scales).to(self.out_dtype)
        return out.view(*x.shape[:-1], out.shape[-1])


def quantize_head_int8(model: Any) -> None:
    """Embeddings and lm_head as int8 rows with per-row scales (lossy, opt-in: ``cpu_head_dtype: int8``).

    A tied head shares the embeddings' codes.
    """
    compute = model.model.norm.weight.dtype
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    embed = quantize_rows_int8(model.model.embed_tokens.weight)
    head = embed if tied else quantize_rows_int8(model.lm_head.weight)
    model.model.embed_tokens = Int8Embedding(*embed, compute)
    model.lm_head = Int8Head(*head, compute, tied=tied)


def store_head_as(model: Any, dtype: torch.dtype) -> None:
    """Keep embeddings and lm_head in ``dtype`` (e.g. bf16 on a CPU with bf16 matmuls); activations keep theirs.

    The head multiplies with a oneDNN-reordered matrix (see :class:`CastHead`).
    """
    compute = model.model.norm.weight.dtype
    embed = nn.Parameter(model.model.embed_tokens.weight.detach().to(dtype), requires_grad=False)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    head = embed if tied else nn.Parameter(model.lm_head.weight.detach().to(dtype), requires_grad=False)
    model.model.embed_tokens = CastEmbedding(embed, compute)
    model.lm_head = CastHead(head, compute, tied=tied)
