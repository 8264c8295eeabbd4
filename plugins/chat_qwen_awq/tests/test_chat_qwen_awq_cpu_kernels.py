"""The AVX512-BF16 AWQ kernel: AWQ's arithmetic to fp32 rounding, any rows, views, threads, misuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from chat_qwen_awq import cpu_kernels


@pytest.fixture(scope="module")
def kern() -> cpu_kernels.Kernel:
    k = cpu_kernels.kernel()
    if k is None:
        pytest.skip("the AVX512-BF16 kernel does not build or run on this machine")
    return k


def _awq(n: int, k: int, group: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)
    zeros = torch.randint(0, 16, (k // group, n), generator=g, dtype=torch.int32)
    scales = (torch.rand(k // group, n, generator=g) * 0.02 + 1e-3).half()
    return codes, zeros, scales


def _on_two_threads(run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``run()`` with torch (and so the kernels' OpenMP) on two threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def _reference(x: torch.Tensor, codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """AWQ's w = (q - z) * s in fp64, times the bf16 activations."""
    n, k = codes.shape
    groups = zeros.shape[0]
    weight = (codes.double().t().reshape(groups, k // groups, n) - zeros.double()[:, None]) * scales.double()[:, None]
    return x.double() @ weight.reshape(k, n)


@pytest.mark.parametrize(("n", "k", "group"), [(9728 // 8, 896, 128), (80, 64, 32), (48, 128, 64), (16, 256, 128)])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 17])
def test_matches_awq_arithmetic(kern: cpu_kernels.Kernel, n: int, k: int, group: int, rows: int) -> None:
    """Every row count (blocks of 8 and their tails) and tile count (blocks of 1-4 tiles and tails):
    within fp32 rounding of AWQ's own arithmetic — torch's int4 kernel is ~2e-3 off (bf16 rounding)."""
    codes, zeros, scales = _awq(n, k, group, seed=rows)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    got = cpu_kernels.matmul(kern, x, cpu_kernels.pack(codes, zeros, scales, group))
    expected = _reference(x, codes, zeros, scales)
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    assert ((got.double() - expected).norm() / expected.norm()).item() < 1e-5


def test_each_row_and_column_is_computed_alone(kern: cpu_kernels.Kernel) -> None:
    """A row's result does not depend on the rows beside it, a column's not on the columns packed
    with it (fused q/k/v stay bitwise equal to separate products), nor on the thread count."""
    codes, zeros, scales = _awq(96, 128, 32)
    packed = cpu_kernels.pack(codes, zeros, scales, 32)
    x = torch.randn(11, 128, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    whole = cpu_kernels.matmul(kern, x, packed)
    assert torch.equal(cpu_kernels.matmul(kern, x[4:5], packed), whole[4:5])
    part = cpu_kernels.pack(codes[32:80], zeros[:, 32:80], scales[:, 32:80], 32)
    assert torch.equal(cpu_kernels.matmul(kern, x, part), whole[:, 32:80])
    assert torch.equal(cpu_kernels.matmul(kern, x, packed.columns(32, 80)), whole[:, 32:80])
    fused = cpu_kernels.concat([packed.columns(0, 32), part])
    assert torch.equal(cpu_kernels.matmul(kern, x, fused), torch.cat([whole[:, :32], whole[:, 32:80]], dim=1))
    if kern.parallel:
        assert torch.equal(_on_two_threads(lambda: cpu_kernels.matmul(kern, x, packed)), whole)


def test_apply_takes_any_float_activations(kern: cpu_kernels.Kernel) -> None:
    codes, zeros, scales = _awq(32, 64, 32)
    packed = cpu_kernels.pack(codes, zeros, scales, 32)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    out = cpu_kernels.apply(x, packed, 32)
    assert out.dtype == torch.float32
    assert torch.equal(out, cpu_kernels.matmul(kern, x.to(torch.bfloat16), packed))
    expected = _reference(x.to(torch.bfloat16), codes, zeros, scales)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "x",
    [torch.zeros(2, 32), torch.zeros(64), torch.zeros(2, 2, 64)],
    ids=["narrow", "one-dimensional", "three-dimensional"],
)
def test_misshapen_activations_are_refused(kern: cpu_kernels.Kernel, x: torch.Tensor) -> None:
    """The C side trusts the sizes it is given: a wrong shape must fail in Python, not read past memory."""
    packed = cpu_kernels.pack(*_awq(32, 64, 32), 32)
    with pytest.raises(ValueError, match="expected CPU activations"):
        cpu_kernels.matmul(kern, x, packed)


def test_unpackable_shapes_are_refused() -> None:
    assert not cpu_kernels.packable(40, 64, 32)  # not whole tiles of 16 columns
    assert not cpu_kernels.packable(32, 96, 64)  # not whole groups
    codes, zeros, scales = _awq(32, 64, 32)
    with pytest.raises(ValueError, match="does not fit"):
        cpu_kernels.pack(codes[:24], zeros[:, :24], scales[:, :24], 32)


def test_operators_can_turn_it_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """``PLUGHOST_AWQ_CPU_KERNEL=torch`` leaves torch's kernels, and nothing is compiled."""
    monkeypatch.setenv("PLUGHOST_AWQ_CPU_KERNEL", "torch")
    monkeypatch.setenv("PLUGHOST_KERNEL_DIR", str(tmp_path))
    cpu_kernels.kernel.cache_clear()
    try:
        assert cpu_kernels.kernel() is None
        assert not any(tmp_path.iterdir())
    finally:
        monkeypatch.undo()
        cpu_kernels.kernel.cache_clear()


def test_an_unwritable_cache_folder_falls_back_to_a_temp_one(
    kern: cpu_kernels.Kernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("PLUGHOST_KERNEL_DIR", str(blocked / "kernels"))
    cpu_kernels.kernel.cache_clear()
    try:
        found = cpu_kernels.kernel()
        assert found is not None and "plughost-kernels-" in str(found.lib._name)
    finally:
        monkeypatch.undo()
        cpu_kernels.kernel.cache_clear()


def test_inconsistent_packs_are_refused() -> None:
    """The C kernels trust sizes and strides: a pack that does not add up fails when it is made."""
    codes, zeros, scales = _awq(32, 128, 32)
    good = cpu_kernels.pack(codes, zeros, scales, 32)
    with pytest.raises(ValueError, match="inconsistent int4 pack"):
        cpu_kernels.Int4Pack(good.weight, good.scales[:2], good.zeros[:2], 32)  # too few groups
    with pytest.raises(ValueError, match="inconsistent int4 pack"):
        cpu_kernels.Int4Pack(good.weight, good.scales.float(), good.zeros, 32)  # fp32 scales
    with pytest.raises(ValueError, match="inconsistent int4 pack"):
        cpu_kernels.Int4Pack(good.weight[:1], good.scales, good.zeros, 32)  # fewer columns than scales
    with pytest.raises(ValueError, match="whole tiles"):
        good.columns(8, 24)
    with pytest.raises(ValueError, match="whole tiles"):
        good.columns(16, 48)
    rows = cpu_kernels.pack_rows(*_int8_rows(32, 64))
    with pytest.raises(ValueError, match="inconsistent int8 rows"):
        cpu_kernels.Int8Rows(rows.weight, rows.scales[:16])


def test_no_kernel_without_the_cpu_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A CPU without AVX512-BF16 gets torch's kernels: nothing is compiled, and the log says why."""
    monkeypatch.setattr(cpu_kernels, "_cpu_flags", lambda: {"avx512f", "avx512bw", "avx512vl"})
    monkeypatch.setenv("PLUGHOST_KERNEL_DIR", str(tmp_path))
    cpu_kernels.kernel.cache_clear()
    try:
        with caplog.at_level("INFO", logger="plughost.chat_qwen_awq.cpu_kernels"):
            assert cpu_kernels.kernel() is None
        assert not any(tmp_path.iterdir())
        assert "the CPU lacks avx512_bf16, avx512_vnni" in caplog.text
    finally:
        monkeypatch.undo()
        cpu_kernels.kernel.cache_clear()


def test_the_library_is_built_once_per_source(
    kern: cpu_kernels.Kernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Built into the cache folder on first use; later processes load the cached file."""
    monkeypatch.setenv("PLUGHOST_KERNEL_DIR", str(tmp_path))
    cpu_kernels.kernel.cache_clear()
    try:
        assert cpu_kernels.kernel() is not None
        built = sorted(tmp_path.glob("plughost-cpu-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        cpu_kernels.kernel.cache_clear()
        assert cpu_kernels.kernel() is not None
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        monkeypatch.undo()
        cpu_kernels.kernel.cache_clear()


def _int8_rows(rows: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from chat_qwen_awq.head import quantize_rows_int8

    weight = torch.randn(rows, k, generator=torch.Generator().manual_seed(seed)) * 0.02
    return quantize_rows_int8(weight)


@pytest.mark.parametrize("n", [1, 3, 8, 11])
def test_int8_rows_match_the_int8_head(kern: cpu_kernels.Kernel, n: int) -> None:
    """The int8 head kernel: the int8 rows times activations quantised per block of 32 — within the
    activations' int8 error (~0.5 %) of the exact product with the int8 rows, any row count."""
    codes, scales = _int8_rows(160, 96, seed=n)
    packed = cpu_kernels.pack_rows(codes, scales)
    assert torch.equal(packed.codes(), codes)  # what the state dict reads back
    x = torch.randn(n, 96, generator=torch.Generator().manual_seed(n))
    got = cpu_kernels.rows_matmul(kern, x, packed)
    expected = x.double() @ (codes.double() * scales.double()[:, None]).t()
    assert got.shape == (n, 160) and got.dtype == torch.float32
    assert ((got.double() - expected).norm() / expected.norm()).item() < 0.01
    assert torch.equal(cpu_kernels.rows_matmul(kern, x[n - 1 :], packed), got[n - 1 :])  # rows are independent


def test_int8_rows_refuse_what_does_not_fit(kern: cpu_kernels.Kernel) -> None:
    codes, scales = _int8_rows(160, 96)
    assert not cpu_kernels.rows_packable(150, 96) and not cpu_kernels.rows_packable(160, 80)
    with pytest.raises(ValueError, match="does not fit"):
        cpu_kernels.pack_rows(codes[:150], scales[:150])
    with pytest.raises(ValueError, match="expected CPU activations"):
        cpu_kernels.rows_matmul(kern, torch.zeros(2, 64), cpu_kernels.pack_rows(codes, scales))


def test_int8_rows_threads_and_non_finite_activations(kern: cpu_kernels.Kernel) -> None:
    """Bitwise the same on 2 threads; a NaN or infinity in a row makes that row's logits NaN (as a
    float head would), not a finite guess; other rows are untouched; subnormal blocks are zeros."""
    codes, scales = _int8_rows(96, 64, seed=7)
    packed = cpu_kernels.pack_rows(codes, scales)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(7))
    one = cpu_kernels.rows_matmul(kern, x, packed)
    if kern.parallel:
        assert torch.equal(_on_two_threads(lambda: cpu_kernels.rows_matmul(kern, x, packed)), one)
    bad = x.clone()
    bad[1, 40] = float("nan")
    bad[3, 2] = float("inf")
    bad[4, :32] = 1e-41  # a block of subnormals counts as zeros (127 / max would overflow)
    out = cpu_kernels.rows_matmul(kern, bad, packed)
    assert out[1].isnan().all() and out[3].isnan().all()
    assert torch.equal(out[[0, 2]], one[[0, 2]]) and out[4].isfinite().all()
    zeroed = x[4:5].clone()
    zeroed[0, :32] = 0
    assert torch.equal(out[4:5], cpu_kernels.rows_matmul(kern, zeroed, packed))


def test_int4_nan_activations_propagate(kern: cpu_kernels.Kernel) -> None:
    codes, zeros, scales = _awq(32, 64, 32)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(8))
    x[0, 5] = float("nan")
    out = cpu_kernels.matmul(kern, x, cpu_kernels.pack(codes, zeros, scales, 32))
    assert out[0].isnan().all() and out[1].isfinite().all()
