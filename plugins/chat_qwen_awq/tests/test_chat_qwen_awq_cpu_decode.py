"""The lean CPU decode step and the oneDNN-packed head: bitwise what transformers' forward computes."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from host.demo.shapes import TinyShape

#: A tiny Qwen2 whose q, k and v (and gate, up) fill whole blocks of torch's int4 pack, so they fuse
#: with torch's kernel too (the default tiny model's 32-wide k and v do not: it covers the unfused
#: path there; the plugin's kernel fuses both).
FUSABLE = TinyShape(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=2048,
    tie_word_embeddings=True,
)


def _load(folder: Path, head: torch.dtype) -> Any:
    from chat_qwen_awq.loader import checkpoint_tensors, load_model, plan_device_map
    from chat_qwen_awq.sizing import ChatOptions, ModelShape, limits_from_options

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    limits = limits_from_options(ModelShape.from_config(config), ChatOptions())
    plan = plan_device_map(config, limits, None, device="cpu")
    return load_model(config, checkpoint_tensors(folder), plan, head_dtype=head)


@pytest.fixture(
    scope="module",
    params=["tiny-ours", "fusable-ours", "tiny-torch", "fusable-torch", "qwen3-ours", "qwen3-torch", "qwen3dense-none"],
)
def loaded(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The tiny AWQ model and a fusable one on the CPU (bf16 head), packed for the plugin's
    AVX512-BF16 kernel ("ours", skipped where it cannot run) or for torch's int4 kernel; the tiny
    Qwen3 (per-head q/k norms, attention wider than the hidden state) AWQ and unquantised."""
    from chat_qwen_awq import cpu_kernels
    from chat_qwen_awq.demo import TINY_AWQ, TINY_QWEN3_AWQ, TINY_QWEN3_FP16

    shape, kernel = request.param.split("-")
    demo = {
        "tiny": TINY_AWQ,
        "fusable": TINY_AWQ.with_shape(FUSABLE),
        "qwen3": TINY_QWEN3_AWQ,
        "qwen3dense": TINY_QWEN3_FP16,
    }[shape]
    if kernel == "ours" and cpu_kernels.kernel() is None:
        pytest.skip("the AVX512-BF16 kernel does not run on this machine")
    with pytest.MonkeyPatch.context() as patch:
        if kernel == "torch":
            patch.setenv("PLUGHOST_AWQ_CPU_KERNEL", "torch")
        cpu_kernels.kernel.cache_clear()
        try:
            model = _load(demo.folder(), torch.bfloat16)
        finally:
            cpu_kernels.kernel.cache_clear()
    yield model
    model.close()


def _decode_both(loaded: Any, rows: int, padded: bool, steps: int = 4) -> None:
    """Prefill ``rows`` prompts, then decode ``steps`` tokens through forward and through the lean
    step on copies of one cache; every step's logits must be identical."""
    from transformers import DynamicCache

    model, decoder = loaded.model, loaded.decoder
    g = torch.Generator().manual_seed(rows * 10 + padded)
    ids = torch.randint(0, 2000, (rows, 9), generator=g)
    mask = torch.ones(rows, 9, dtype=torch.long)
    if padded:
        for r in range(1, rows):
            mask[r, : 2 * r] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=1)
    with torch.inference_mode():
        ours = DynamicCache(config=model.config)
        model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=ours, use_cache=True)
        theirs = copy.deepcopy(ours)
        lengths = mask.sum(-1)
        for _ in range(steps):
            tokens = torch.randint(0, 2000, (rows, 1), generator=g)
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            width = mask.shape[1] - 1
            four_d = None
            attention: Any = mask
            if padded:
                keys = mask.shape[1]
                causal = torch.arange(keys)[None, :] <= torch.arange(width, keys)[:, None]
                four_d = causal[None, None] & mask.bool()[:, None, None, :]
                attention = {"full_attention": four_d}
            expected = model(
                input_ids=tokens,
                attention_mask=attention,
                position_ids=lengths.unsqueeze(1),
                past_key_values=theirs,
                cache_position=torch.tensor([width]),
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
            got = decoder.step(tokens, lengths.unsqueeze(1), ours, four_d)
            assert torch.equal(got, expected), (got - expected).abs().max()
            lengths = lengths + 1
        for a, b in zip(ours.layers, theirs.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize(("rows", "padded"), [(1, False), (3, False), (3, True)])
def test_lean_step_is_bitwise_forward(loaded: Any, rows: int, padded: bool) -> None:
    assert loaded.decoder is not None
    _decode_both(loaded, rows, padded)


def test_fused_packs_are_views_not_copies(loaded: Any) -> None:
    """q/k/v (and gate/up) compute from slices of one fused pack where the packs allow it; an
    unquantised model's projections stay apart (a wider dense GEMM may sum in another order)."""
    from chat_qwen_awq.cpu_decode import DenseMatmul
    from chat_qwen_awq.cpu_kernels import Int4Pack

    attn, mlp = loaded.model.model.layers[0].self_attn, loaded.model.model.layers[0].mlp
    layer = loaded.decoder.layers[0]
    if type(attn.q_proj) is torch.nn.Linear:
        assert len(layer.qkv) == 3 and len(layer.gate_up) == 2
        assert all(isinstance(m, DenseMatmul) for m in (*layer.qkv, *layer.gate_up, layer.o, layer.down))
        assert layer.qkv[0].weight is attn.q_proj.weight  # the model's own weights, no copies
        return
    ours = isinstance(attn.q_proj.cpu_pack(), Int4Pack)
    fused_qkv = ours or attn.k_proj.out_features % 64 == 0  # torch's packs: whole 64-row blocks
    assert len(layer.qkv) == (1 if fused_qkv else 3)
    assert len(layer.gate_up) == 1  # 128- and 256-wide gates fill whole blocks in both models

    def codes(pack: Any) -> int:
        return (pack.weight if isinstance(pack, Int4Pack) else pack[0]).untyped_storage().data_ptr()

    assert codes(mlp.gate_proj.cpu_pack()) == codes(mlp.up_proj.cpu_pack()) == codes(layer.gate_up[0].pack)
    if fused_qkv:
        assert codes(attn.q_proj.cpu_pack()) == codes(attn.v_proj.cpu_pack()) == codes(layer.qkv[0].pack)


def test_torch_packs_fuse_only_whole_blocks() -> None:
    from types import SimpleNamespace

    from chat_qwen_awq.cpu_decode import fusable

    def lin(out: int, in_features: int = 64, group: int = 32) -> Any:
        pack = (torch.zeros(out, in_features // 2, dtype=torch.uint8), torch.zeros(1))
        return SimpleNamespace(out_features=out, in_features=in_features, group_size=group, cpu_pack=lambda: pack)

    assert fusable([lin(128), lin(64), lin(64)])
    assert fusable([lin(128), lin(64), lin(40)])  # the last part may end in a partial block
    assert not fusable([lin(128), lin(32), lin(32)])
    assert not fusable([lin(64), lin(64, in_features=128)])
    assert not fusable([lin(64), lin(64, group=64)])


def test_the_engine_decodes_through_the_lean_step(backend: Any) -> None:
    """The served CPU model decodes through the lean step (the engine-equals-generate tests then
    compare it with transformers' ``generate``); a decode step runs it."""
    from chat_qwen_awq.testing import assert_engine_equals_generate

    assert backend.engine.decoder is backend.loaded.decoder is not None
    calls = []
    step = backend.engine.decoder.step

    def counting(*args: Any) -> torch.Tensor:
        calls.append(args[0].shape[0])
        return step(*args)

    backend.engine.decoder.step = counting
    try:
        assert_engine_equals_generate(backend)
    finally:
        del backend.engine.decoder.step
    assert calls


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_packed_head(dtype: torch.dtype) -> None:
    """The reordered head: bf16 logits bitwise those of the plain matrix (fp32: the same sums in
    another order); an untied head's state dict gives the matrix back exactly."""
    from chat_qwen_awq.head import CastHead

    weight = torch.nn.Parameter(torch.randn(3000, 64, generator=torch.Generator().manual_seed(1)).to(dtype))
    head = CastHead(weight, torch.float32, tied=False)
    assert head.packed is not None and head.weight is None
    x = torch.randn(3, 1, 64, generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.linear(x.to(dtype), weight).float()
    got = head(x)
    assert got.dtype == torch.float32 and got.shape == (3, 1, 3000)
    if dtype == torch.bfloat16:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(head.state_dict()["weight"], weight.detach())
    tied = CastHead(weight, torch.float32, tied=True)
    assert tied.weight is weight and torch.equal(tied(x), got)
