"""The demo stand-ins of this plugin: tiny random-weight Qwen2 and Qwen3 models stored as 4-bit AWQ GEMM checkpoints.

:data:`TINY_AWQ` (named by the Qwen2.5 declaration as ``chat_qwen_awq.demo:TINY_AWQ``) is the AWQ
checkpoint of exactly :data:`TINY_FP16`'s model (same seed): the tests compare the two;
:data:`TINY_QWEN3_AWQ` and :data:`TINY_QWEN3_FP16` are the same pair of the Qwen3 shape (per-head q/k
norms, no q/k/v bias, ``head_dim * heads != hidden_size``) with Qwen3's chat template (``enable_thinking``)
and generation defaults. Packing is :func:`chat_qwen_awq.loader.quantize`, the inverse of the loader's
unpacking; the quantised layers are :data:`chat_qwen_awq.sizing.LINEARS`, the list the loader swaps.
Importing this module is cheap; torch and transformers are imported by the builders.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chat_qwen_awq.sizing import LINEARS
from host.demo.chat_template import QWEN2_5_CHAT_TEMPLATE, QWEN3_CHAT_TEMPLATE
from host.demo.shapes import (
    TINY_QWEN2,
    TINY_QWEN3,
    TinyShape,
    check_vocab,
    config_essentials,
    instantiate,
    qwen2_config,
    qwen3_config,
    save_model,
)
from host.demo.tokenizer import ENDOFTEXT, IM_END, build_tokenizer, token_ids
from host.sdk import DemoModel


def awq_group_size(shape: TinyShape) -> int:
    """The AWQ group size for ``shape``: the largest of (128, 64, 32, 16) that divides every
    quantised in_features and leaves at least two groups per column (so group handling is
    exercised). 128 for the real shapes, 32 for the tiny preset."""
    in_features = {shape.hidden_size, shape.intermediate_size, shape.num_attention_heads * shape.resolved_head_dim}
    for g in (128, 64, 32, 16):
        if all(f % g == 0 and f // g >= 2 for f in in_features):
            return g
    raise ValueError(f"no AWQ group size fits in_features {sorted(in_features)}")


def quantization_config(group_size: int) -> dict[str, Any]:
    """``config.json``'s ``quantization_config`` of an AutoAWQ GEMM checkpoint."""
    return {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }


def _generation_config(ids: dict[str, int], arch: str) -> Any:
    """The published generation_config.json: Qwen2.5-Instruct's, or Qwen3's (thinking-mode sampling)."""
    from transformers import GenerationConfig

    common = dict(
        bos_token_id=ids[ENDOFTEXT],
        pad_token_id=ids[ENDOFTEXT],
        do_sample=True,
        eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
        top_k=20,
    )
    if arch == "qwen3":
        return GenerationConfig(**common, temperature=0.6, top_p=0.95)
    return GenerationConfig(**common, repetition_penalty=1.05, temperature=0.7, top_p=0.8)


def _fp16_model(dest: Path, shape: TinyShape, seed: int, arch: str = "qwen2") -> Any:
    """Write the chat tokenizer to ``dest`` and return the fp16 ``Qwen2ForCausalLM`` (or ``Qwen3ForCausalLM``)."""
    from transformers import Qwen2ForCausalLM, Qwen3ForCausalLM

    template = QWEN3_CHAT_TEMPLATE if arch == "qwen3" else QWEN2_5_CHAT_TEMPLATE
    build_tokenizer(dest, eos_token=IM_END, model_max_length=shape.max_position_embeddings, chat_template=template)
    ids = token_ids(dest)
    check_vocab(shape, ids)
    tokens = {"bos_token_id": ids[ENDOFTEXT], "eos_token_id": ids[IM_END]}
    if arch == "qwen3":
        model = instantiate(Qwen3ForCausalLM, qwen3_config(shape, **tokens), seed)
    else:
        model = instantiate(Qwen2ForCausalLM, qwen2_config(shape, **tokens), seed)
    model.generation_config = _generation_config(ids, arch)
    return model


def build_fp16(dest: Path, shape: TinyShape = TINY_QWEN2, seed: int = 0) -> None:
    """Write a random fp16 ``Qwen2ForCausalLM`` chat model folder to ``dest``.

    With the ChatML tokenizer (eos ``<|im_end|>``, pad ``<|endoftext|>``, as in Qwen2.5-Instruct)
    and Qwen2.5-Instruct's generation_config.json (eos ids [im_end, endoftext], do_sample,
    temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05).
    """
    save_model(_fp16_model(Path(dest), shape, seed), Path(dest))


def build_qwen3_fp16(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> None:
    """Write a random fp16 ``Qwen3ForCausalLM`` chat model folder to ``dest``: Qwen3's chat template
    and generation_config.json (do_sample, temperature 0.6, top_p 0.95, top_k 20, no repetition penalty)."""
    save_model(_fp16_model(Path(dest), shape, seed, "qwen3"), Path(dest))


def _write_awq(dest: Path, shape: TinyShape, seed: int, arch: str) -> None:
    """The 4-bit AWQ GEMM checkpoint of the fp16 model of ``arch`` (same seed) in ``dest``."""
    from safetensors.torch import save_file

    from chat_qwen_awq.loader import quantize

    dest = Path(dest)
    group_size = awq_group_size(shape)
    model = _fp16_model(dest, shape, seed, arch)
    tensors: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in LINEARS and parts[-1] == "weight":
            prefix = name[: -len(".weight")]
            tensors[prefix + ".qweight"], tensors[prefix + ".qzeros"], tensors[prefix + ".scales"] = quantize(
                tensor, group_size
            )
        else:
            tensors[name] = tensor.detach().contiguous()
    if shape.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    model.config.quantization_config = quantization_config(group_size)
    model.config.save_pretrained(str(dest))
    model.generation_config.save_pretrained(str(dest))


def build_awq(dest: Path, shape: TinyShape = TINY_QWEN2, seed: int = 0) -> None:
    """Write the 4-bit AWQ GEMM checkpoint of :func:`build_fp16`'s model (same seed) to ``dest``.

    Every decoder-layer linear of :data:`LINEARS` is stored as ``qweight``/``qzeros``/``scales``
    (+ fp16 ``bias`` where the layer has one); embeddings, norms and lm_head stay fp16.
    """
    _write_awq(dest, shape, seed, "qwen2")


def build_qwen3_awq(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> None:
    """Write the 4-bit AWQ GEMM checkpoint of :func:`build_qwen3_fp16`'s model (same seed) to ``dest``
    (as :func:`build_awq`; the q/k norms stay fp16)."""
    _write_awq(dest, shape, seed, "qwen3")


def _fp16_config(shape: TinyShape) -> dict[str, Any]:
    return config_essentials(shape, "qwen2")


def _awq_config(shape: TinyShape) -> dict[str, Any]:
    return {**config_essentials(shape, "qwen2"), "quantization_config": quantization_config(awq_group_size(shape))}


def _qwen3_fp16_config(shape: TinyShape) -> dict[str, Any]:
    return config_essentials(shape, "qwen3")


def _qwen3_awq_config(shape: TinyShape) -> dict[str, Any]:
    return {**config_essentials(shape, "qwen3"), "quantization_config": quantization_config(awq_group_size(shape))}


#: The fp16 model the AWQ stand-in is quantised from (tests compare the two).
TINY_FP16 = DemoModel("qwen2-chat", build_fp16, _fp16_config, TINY_QWEN2)
#: The demo stand-in of Qwen2.5-7B-Instruct-AWQ.
TINY_AWQ = DemoModel("qwen2-awq", build_awq, _awq_config, TINY_QWEN2)
#: The tiny shape with 32-wide attention heads (hidden 128, 4 heads; AWQ group size 64): vLLM's CPU
#: attention needs head_dim >= 32, so the vLLM test tier serves this one (with both engines).
#: Its 32k positions let the tier's long generations outlast any client lag (the KV cache stays small).
TINY_QWEN2_HEAD32 = dataclasses.replace(
    TINY_QWEN2, hidden_size=128, intermediate_size=256, head_dim=32, max_position_embeddings=32768
)
#: The AWQ stand-in at :data:`TINY_QWEN2_HEAD32`.
TINY_AWQ_HEAD32 = TINY_AWQ.with_shape(TINY_QWEN2_HEAD32)
#: The unquantised Qwen3 the Qwen3 AWQ stand-in is quantised from (also served as an unquantised checkpoint).
TINY_QWEN3_FP16 = DemoModel("qwen3-chat", build_qwen3_fp16, _qwen3_fp16_config, TINY_QWEN3)
#: The demo stand-in of Qwen3-8B-AWQ.
TINY_QWEN3_AWQ = DemoModel("qwen3-awq", build_qwen3_awq, _qwen3_awq_config, TINY_QWEN3)
