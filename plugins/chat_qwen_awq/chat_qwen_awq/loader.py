"""The plugin's own loader: empty Qwen2/Qwen3 model, autoawq ``WQLinear_GEMM`` layers, accelerate dispatch.

Both stock loaders are unusable here: transformers' AWQ integration refuses a device map with
CPU or disk entries, and autoawq's ``from_quantized`` needs kernels that do not exist for this
torch. So:

1. build ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM`` (as ``config.json`` says) with empty (meta)
   weights and, for an AWQ checkpoint, swap every decoder-layer linear for :class:`AwqLinear` (a
   ``WQLinear_GEMM`` that also runs on the CPU); an unquantised checkpoint keeps ``nn.Linear``;
2. read the safetensors and put each tensor where the device map says: on the GPU (or the
   CPU device), into a host-RAM state dict (layers offloaded next to a GPU), or into an
   offload folder on disk (layers offloaded next to the CPU);
3. ``accelerate.dispatch_model(..., offload_buffers=True)``: AWQ weights are *buffers*, and
   without ``offload_buffers`` accelerate would move the "offloaded" layers to the GPU anyway.

The device map comes from :func:`plan_device_map`, a pure function of the config and a GPU
budget that sizes a meta model (nothing is allocated).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from chat_qwen_awq import cpu_kernels, sizing
from chat_qwen_awq.cpu_decode import CpuDecoder
from chat_qwen_awq.head import quantize_head_int8, store_head_as

log = logging.getLogger("plughost.chat_qwen_awq.loader")

_INT4_CPU = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
    torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
)

# Column c of an AWQ pack of 8 lives in nibble AWQ_REVERSE_ORDER[c] (awq.utils.packing_utils).
_AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def awq_gemm() -> ModuleType:
    """``awq.modules.linear.gemm``, imported quietly.

    Importing autoawq prints a deprecation notice and installs a process-wide "default" filter
    for DeprecationWarning; both stay inside this ``catch_warnings`` block.
    """
    with warnings.catch_warnings(record=True):
        from awq.modules.linear import gemm
    return gemm


def disable_triton_without_cuda() -> None:
    """autoawq picks its triton kernels whenever triton imports; they crash without CUDA.

    ``awq.modules.linear.gemm`` decides through the module-level flag ``TRITON_AVAILABLE``;
    clearing it leaves autoawq's plain dequantise-and-matmul path.
    """
    if not torch.cuda.is_available():
        setattr(awq_gemm(), "TRITON_AVAILABLE", False)  # noqa: B010 - a module flag autoawq reads


def _awq_linear_class() -> type[nn.Module]:
    WQLinear_GEMM: Any = awq_gemm().WQLinear_GEMM  # untyped: autoawq ships no annotations

    class AwqLinear(WQLinear_GEMM):
        """``WQLinear_GEMM`` (same buffers, same state dict) that also computes on the CPU.

        On a GPU it is autoawq's own forward. On the CPU it multiplies bf16 activations with a
        copy of the weight repacked once by :meth:`prepare_cpu` (per call when an offload hook
        streams the buffers in), through the plugin's AVX512-BF16 kernel or torch's int4 kernel
        (``_weight_int4pack_mm_for_cpu``), and plain dequantise-and-matmul in fp32 where neither
        exists.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._cpu_pack: cpu_kernels.CpuPack | None = None

        def prepare_cpu(self) -> None:
            """Repack the weight for a CPU kernel once (kept next to the AWQ buffers)."""
            self._cpu_pack = self._new_cpu_pack() if self.qweight.device.type == "cpu" else None

        def _new_cpu_pack(self) -> cpu_kernels.CpuPack | None:
            """This plugin's AVX512-BF16 pack where that kernel serves (:mod:`chat_qwen_awq.cpu_kernels`),
            else torch's int4 pack, else ``None`` (dequantise and multiply in fp32)."""
            kern = cpu_kernels.kernel()
            if kern is not None and kern.usable() and cpu_kernels.packable(*self._shape()):
                codes, zeros = unpack_awq(self.qweight).t(), unpack_awq(self.qzeros)
                return cpu_kernels.pack(codes, zeros, self.scales, self.group_size)
            if _INT4_CPU:
                return int4pack(self.qweight, self.qzeros, self.scales, self.group_size)
            return None

        def _shape(self) -> tuple[int, int, int]:
            return self.out_features, self.in_features, self.group_size

        def cpu_pack(self) -> cpu_kernels.CpuPack | None:
            """The pack made by :meth:`prepare_cpu`, if any."""
            return self._cpu_pack

        def use_cpu_pack(self, pack: cpu_kernels.CpuPack) -> None:
            """Compute from this pack instead (the same values, e.g. a view into a fused pack)."""
            self._cpu_pack = pack

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.device.type != "cpu":
                return super().forward(x)
            flat = x.reshape(-1, self.in_features)
            # Buffers streamed in by an offload hook have no pack: repack them per call.
            pack = self._cpu_pack if self._cpu_pack is not None else self._new_cpu_pack()
            if pack is not None:
                out = cpu_kernels.apply(flat, pack, self.group_size)
            else:
                weight = dequantize(self.qweight, self.qzeros, self.scales, self.group_size, torch.float32)
                out = (flat.to(torch.float32) @ weight).to(x.dtype)
            if self.bias is not None:
                out = out + self.bias.to(out.dtype)
            return out.reshape(*x.shape[:-1], self.out_features)

    return AwqLinear


@functools.cache
def awq_linear_class() -> type[nn.Module]:
    """The :class:`AwqLinear` class (built on first use: importing autoawq is slow)."""
    return _awq_linear_class()


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """int32 ``[rows, cols/8]`` in AWQ's GEMM order → int32 codes ``[rows, cols]`` (0..15)."""
    shifts = torch.tensor([4 * n for n in _AWQ_REVERSE_ORDER], dtype=torch.int32, device=packed.device)
    rows, packs = packed.shape
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).reshape(rows, packs * 8)


def pack_awq(codes: torch.Tensor) -> torch.Tensor:
    """int codes ``[rows, cols]`` (0..15) → int32 ``[rows, cols/8]`` in AWQ's GEMM order; inverts :func:`unpack_awq`."""
    rows, cols = codes.shape
    if cols % 8:
        raise ValueError(f"{cols} columns is not a multiple of 8")
    v = codes.to(torch.int64).reshape(rows, cols // 8, 8)
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for col, nibble in enumerate(_AWQ_REVERSE_ORDER):
        packed |= (v[:, :, col] & 0xF) << (4 * nibble)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # reinterpret as signed int32
    return packed.to(torch.int32)


def quantize(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack an ``nn.Linear`` weight ``[out, in]`` as AutoAWQ does (asymmetric 4 bits per group).

    Returns ``(qweight int32 [in, out/8], qzeros int32 [in/G, out/8], scales fp16 [in/G, out])``, the
    buffers :func:`dequantize` reads. Scales are rounded to fp16 before the codes are computed, so the
    checkpoint dequantises to the nearest grid point.
    """
    out_f, in_f = weight.shape
    if in_f % group_size:
        raise ValueError(f"in_features {in_f} is not a multiple of group_size {group_size}")
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    max_val = w.amax(dim=2, keepdim=True)
    min_val = w.amin(dim=2, keepdim=True)
    scales = ((max_val - min_val).clamp(min=1e-5) / 15).half().float()
    zeros = (-torch.round(min_val / scales)).clamp(0, 15)
    q = (torch.round(w / scales) + zeros).clamp(0, 15)
    return (
        pack_awq(q.reshape(out_f, in_f).t().contiguous()),
        pack_awq(zeros.squeeze(2).t().contiguous()),
        scales.squeeze(2).t().contiguous().half(),
    )


def dequantize(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """``[in, out]`` weight ``(q - z) * s`` in ``dtype`` (the transpose of ``nn.Linear.weight``)."""
    in_f = qweight.shape[0]
    groups = in_f // group_size
    q = unpack_awq(qweight).view(groups, group_size, -1)
    z = unpack_awq(qzeros).view(groups, 1, -1)
    return ((q - z).to(dtype) * scales.to(dtype).view(groups, 1, -1)).view(in_f, -1)


def int4pack(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repack AWQ buffers for ``_weight_int4pack_mm_for_cpu``.

    That kernel computes ``w = (q - 8) * scale + zero`` per group; AWQ stores ``w = (q - z) * s``,
    so ``zero = (8 - z) * s``. Returns ``(packed weight, scales_and_zeros [in/G, out, 2] bf16)``.
    """
    q = unpack_awq(qweight).t().contiguous()  # [out, in]
    weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    s = scales.to(torch.float32)
    zero = (8 - unpack_awq(qzeros).to(torch.float32)) * s
    return weight, torch.stack([s, zero], dim=-1).to(torch.bfloat16).contiguous()


# ------------------------------------------------------------------------------------ the model


def model_classes(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(config class, causal LM class)`` of transformers for the checkpoint's architecture."""
    import transformers

    if sizing.architecture(config) == "qwen3":
        return transformers.Qwen3Config, transformers.Qwen3ForCausalLM
    return transformers.Qwen2Config, transformers.Qwen2ForCausalLM


def hf_config(config: Mapping[str, Any]) -> Any:
    """A ``transformers.Qwen2Config`` or ``Qwen3Config`` from a ``config.json`` mapping."""
    data = dict(config)
    data.pop("quantization_config", None)  # only from_pretrained acts on it; we load ourselves
    return model_classes(config)[0].from_dict(data)


def build_empty_model(config: Mapping[str, Any], dtype: torch.dtype) -> Any:
    """The causal LM on the meta device, with :class:`AwqLinear` decoder linears for an AWQ checkpoint."""
    from accelerate import init_empty_weights

    shape = sizing.ModelShape.from_config(config)
    built = hf_config(config)
    built._attn_implementation = "sdpa"
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init_empty_weights():  # parameters on meta; rotary inv_freq stays a real buffer
            model = model_classes(config)[1](built)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    model.requires_grad_(False)
    if shape.group_size is None:
        return model
    cls = awq_linear_class()
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if name in sizing.LINEARS and isinstance(child, nn.Linear):
                    setattr(
                        parent,
                        name,
                        cls(4, shape.group_size, child.in_features, child.out_features, child.bias is not None, "meta"),
                    )
    return model


# ------------------------------------------------------------------------------------ placement


@dataclass(frozen=True)
class DevicePlan:
    """Where each top-level module goes: ``device`` computes, ``overflow`` holds the rest.

    ``overflow`` is ``"cpu"`` (host RAM next to a GPU: streamed to the GPU per forward) or
    ``"disk"`` (next to the CPU: read from the offload folder per forward).
    """

    device: str
    overflow: str
    device_map: dict[str, str]
    gpu_layers: int
    device_bytes: int
    overflow_bytes: int

    @property
    def offloaded(self) -> bool:
        """Whether any layer is outside ``device``."""
        return self.gpu_layers < sum(1 for k in self.device_map if k.startswith("model.layers."))


def compute_dtype(device: str) -> torch.dtype:
    """fp32 on the CPU, fp16 on a GPU."""
    return torch.float32 if device == "cpu" else torch.float16


def plan_device_map(
    config: Mapping[str, Any],
    limits: sizing.Limits,
    budget: int | None,
    *,
    device: str = "cuda:0",
    overflow: str = "cpu",
) -> DevicePlan:
    """The device map for ``config`` with ``budget`` bytes on ``device`` (``None``: everything fits).

    Pure: module sizes come from a meta model (nothing is allocated). Embeddings, final norm,
    lm_head, KV cache and working set are on ``device``; decoder layers follow in order while
    they fit, the rest go to ``overflow``. Raises ``ValueError`` when even the fixed part does not fit.
    """
    from accelerate.utils import compute_module_sizes

    shape = sizing.ModelShape.from_config(config)
    cpu = device == "cpu"
    model = build_empty_model(config, compute_dtype(device))
    sizes = compute_module_sizes(model)
    layers = [sizes[f"model.layers.{i}"] for i in range(shape.num_hidden_layers)]
    if cpu and shape.group_size is not None:  # the CPU keeps a repacked copy of each AWQ weight next to the buffers
        extra = sum(sizing.int4pack_bytes(i, o, shape.group_size) for _, i, o, _ in shape.linears())
        layers = [b + extra for b in layers]
    # The same arithmetic as the declared footprint, so the split matches what the scheduler granted.
    head = sizing.head_bytes(shape, cpu=cpu, cpu_head_dtype=limits.cpu_head_dtype)
    kv = limits.kv_tokens_held * sizing.kv_bytes_per_token(shape, cpu=cpu)
    fixed = head + kv + sizing.working_bytes(shape, limits, cpu=cpu, streamed_layer=budget is not None)
    on_device = shape.num_hidden_layers
    if budget is not None:
        if fixed > budget:
            raise ValueError(
                f"a budget of {budget / 2**30:.2f} GiB on {device} does not hold the fixed part of "
                f"the model ({fixed / 2**30:.2f} GiB: embeddings, head, KV cache, working set)"
            )
        room, on_device = budget - fixed, 0
        while on_device < len(layers) and layers[on_device] <= room:
            room -= layers[on_device]
            on_device += 1
    device_map = {"model.embed_tokens": device, "model.rotary_emb": device}
    for i in range(shape.num_hidden_layers):
        device_map[f"model.layers.{i}"] = device if i < on_device else overflow
    device_map["model.norm"] = device
    device_map["lm_head"] = device
    return DevicePlan(
        device=device,
        overflow=overflow,
        device_map=device_map,
        gpu_layers=on_device,
        device_bytes=fixed + sum(layers[:on_device]),
        overflow_bytes=sum(layers[on_device:]),
    )


# ------------------------------------------------------------------------------------ loading


def _is_awq_tensor(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2] in sizing.LINEARS


def _owner(key: str, device_map: Mapping[str, str]) -> str:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in device_map:
            return prefix
    raise KeyError(f"checkpoint tensor {key!r} belongs to no module of the device map")


def checkpoint_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the safetensors checkpoint in ``folder`` (sharded or not), one at a time."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    for name in files:
        with safe_open(str(folder / name), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                yield key, f.get_tensor(key)


@dataclass
class LoadedModel:
    """A dispatched model and what relocation needs to find its weights again."""

    model: Any  # a transformers Qwen2ForCausalLM or Qwen3ForCausalLM (its submodules are reached by name)
    plan: DevicePlan
    dtype: torch.dtype
    host_state: dict[str, torch.Tensor] = field(default_factory=dict)  # layers offloaded to host RAM
    offload_dir: Path | None = None
    offload_index: dict[str, Any] = field(default_factory=dict)
    owns_offload_dir: bool = False
    #: The lean decode step where it applies (a wholly CPU-resident model), else ``None``.
    decoder: CpuDecoder | None = None

    @property
    def device(self) -> torch.device:
        """Where forward passes compute (inputs and KV cache live here)."""
        return torch.device(self.plan.device)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every weight, wherever it is now (device, host RAM or offload folder), for relocation."""
        from accelerate.utils import load_offloaded_weight

        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        for key, tensor in self.model.state_dict().items():
            if key in tied:
                continue
            if tensor.device.type != "meta":
                yield key, tensor
            elif key in self.host_state:
                yield key, self.host_state[key]
            elif key in self.offload_index and self.offload_dir is not None:
                yield key, load_offloaded_weight(str(self.offload_dir / f"{key}.dat"), self.offload_index[key])
            else:
                raise RuntimeError(f"weight {key} is on no device, in no host state and no offload folder")

    def close(self) -> None:
        """Drop hooks, weights and the offload folder (if we made it)."""
        from accelerate.hooks import remove_hook_from_submodules

        remove_hook_from_submodules(self.model)
        self.host_state.clear()
        if self.owns_offload_dir and self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)
        self.offload_dir = None


def _kind(config: Mapping[str, Any]) -> str:
    shape = sizing.ModelShape.from_config(config)
    return f"{'Qwen3' if shape.arch == 'qwen3' else 'Qwen2'} {'AWQ GEMM' if shape.quantized else 'unquantised'}"


def load_model(
    config: Mapping[str, Any],
    tensors: Iterable[tuple[str, torch.Tensor]],
    plan: DevicePlan,
    *,
    offload_dir: Path | None = None,
    head_dtype: torch.dtype | Literal["int8"] | None = None,
) -> LoadedModel:
    """Build the model and place ``tensors`` as ``plan`` says; returns the dispatched model.

    Floating tensors outside the AWQ linears are cast to the compute dtype (an unquantised
    checkpoint's linears too); AWQ buffers keep theirs (int32 codes, fp16 scales and bias).
    Missing or unexpected weights are errors.
    ``head_dtype`` (CPU only) stores embeddings and lm_head in that dtype (see :func:`store_head_as`),
    or as int8 rows with ``"int8"`` (see :func:`quantize_head_int8`).
    """
    from accelerate import dispatch_model
    from accelerate.utils import offload_weight, save_offload_index, set_module_tensor_to_device

    disable_triton_without_cuda()
    dtype = compute_dtype(plan.device)
    model = build_empty_model(config, dtype)
    quantized = sizing.ModelShape.from_config(config).quantized
    expected = set(model.state_dict())
    tied = bool(config.get("tie_word_embeddings", False))
    if tied:
        expected.discard("lm_head.weight")
    loaded = LoadedModel(model=model, plan=plan, dtype=dtype)
    if plan.overflow == "disk" and plan.offloaded:
        if offload_dir is None:
            offload_dir, loaded.owns_offload_dir = Path(tempfile.mkdtemp(prefix="plughost-awq-offload-")), True
        offload_dir.mkdir(parents=True, exist_ok=True)
        loaded.offload_dir = offload_dir
    try:
        seen: set[str] = set()
        for key, stored in tensors:
            if key not in expected:
                if tied and key == "lm_head.weight":
                    continue
                raise ValueError(f"unexpected weight {key!r} in the checkpoint (is it a {_kind(config)} checkpoint?)")
            keep = quantized and _is_awq_tensor(key)  # AWQ buffers keep their dtypes
            tensor = stored.to(dtype) if stored.is_floating_point() and not keep else stored
            target = plan.device_map[_owner(key, plan.device_map)]
            if target == plan.device:
                set_module_tensor_to_device(model, key, plan.device, value=tensor)
            elif target == "disk":
                assert loaded.offload_dir is not None
                offload_weight(tensor.cpu(), key, str(loaded.offload_dir), loaded.offload_index)
            else:  # host RAM next to a GPU
                loaded.host_state[key] = tensor.to("cpu").contiguous()
            seen.add(key)
        missing = sorted(expected - seen)
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} weight(s), e.g. {missing[:3]}")
        model.model.rotary_emb.to(plan.device)
        if tied:
            model.tie_weights()
        if plan.device == "cpu" and head_dtype == "int8":
            quantize_head_int8(model)
        elif plan.device == "cpu" and isinstance(head_dtype, torch.dtype):
            store_head_as(model, head_dtype)
        if plan.offloaded:
            if loaded.offload_dir is not None:
                save_offload_index(loaded.offload_index, str(loaded.offload_dir))
            dispatch_model(
                model,
                device_map=plan.device_map,
                main_device=plan.device,
                state_dict=loaded.host_state or None,
                offload_dir=str(loaded.offload_dir) if loaded.offload_dir is not None else None,
                offload_buffers=True,
            )
        if plan.device == "cpu":
            for module in model.modules():
                prepare = getattr(module, "prepare_cpu", None)
                if prepare is not None and module.qweight.device.type == "cpu":
                    prepare()
            if not plan.offloaded:
                loaded.decoder = CpuDecoder.build(model)
    except BaseException:
        loaded.close()
        raise
    return loaded
