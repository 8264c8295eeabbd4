"""The plugin's CPU kernels (``awq_gemm.c``, ``head_int8.c``): built on first use, weights packed for them, called.

- ``awq_gemm.c``, the AWQ int4 GEMM: torch's CPU int4 kernel (``_weight_int4pack_mm_for_cpu``)
  turns every 4-bit code into an fp32 weight with one FMA and multiplies in fp32 — again for each
  block of 4 rows — so a decode step of 8 rows costs ~3.5x one of 1 row, and it rounds scales, zeros
  and outputs to bf16. ``awq_gemm.c`` multiplies bf16 activations by the codes themselves with bf16
  dot products (exact products, fp32 sums) and applies AWQ's fp16 scales and zeros per group. One
  thread, the 24 layers of the 0.5B shape: 1 row 8.5 ms vs 11.7 ms, 8 rows 15.6 ms vs 34 ms;
  relative error against fp64 8e-7 vs 2.4e-3.
- ``head_int8.c``, the lm_head of ``cpu_head_dtype: int8`` (lossy, opt-in): per-row int8 codes times
  activations quantised per block of 32 (as llama.cpp's Q8_0), with VNNI integer dot products: one
  byte per weight read at memory speed (151,936 x 896: 3.3 ms for 1 row, 4.7 ms for 8, vs 7.3 ms /
  11.4 ms for the oneDNN bf16 head and 7.3 ms for torch's ``_weight_int8pack_mm``).

They serve where :func:`kernel` finds Linux on x86-64, a CPU with AVX512-F/BW/VL/BF16/VNNI and a C
compiler (``$CC``, else ``cc`` or ``gcc``); the shared library is cached under
``$PLUGHOST_KERNEL_DIR`` (default ``~/.cache/plughost/kernels``), keyed by sources and flags.
Elsewhere, or with ``PLUGHOST_AWQ_CPU_KERNEL=torch``, :func:`kernel` is ``None`` and torch's kernels
serve. Built with OpenMP they run on ``torch.get_num_threads()`` threads of torch's own OpenMP
runtime; a build without OpenMP is used only by models loaded while torch has one thread.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("plughost.chat_qwen_awq.cpu_kernels")

SOURCES = (Path(__file__).with_name("awq_gemm.c"), Path(__file__).with_name("head_int8.c"))
_ISA = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx512vnni", "-mfma")
_NEEDED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni")
#: Output columns per tile of the packed layout.
TILE = 16


@dataclass(frozen=True)
class Kernel:
    """The loaded library: ``parallel`` when built with OpenMP."""

    lib: ctypes.CDLL
    parallel: bool

    def usable(self) -> bool:
        """Whether weights should be packed for it now: a serial build only when torch has one
        thread (a model packed then keeps using it, on one thread, if torch gets more later)."""
        return self.parallel or torch.get_num_threads() == 1


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def _cache_dirs() -> list[Path]:
    """Where built libraries are kept: ``$PLUGHOST_KERNEL_DIR`` or ``~/.cache/plughost/kernels``,
    else (not writable) a folder of this user's in the temp directory."""
    env = os.environ.get("PLUGHOST_KERNEL_DIR")
    home = Path(env) if env else Path.home() / ".cache" / "plughost" / "kernels"
    return [home, Path(tempfile.gettempdir()) / f"plughost-kernels-{os.getuid()}"]


def _compile(compiler: str, flags: list[str]) -> Path | None:
    """The shared library for ``flags`` (cached; built atomically), or ``None`` if it does not build."""
    digest = hashlib.sha256(" ".join([compiler, *flags]).encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    name = f"plughost-cpu-{digest.hexdigest()[:16]}.so"
    for folder in _cache_dirs():
        target = folder / name
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.TemporaryDirectory(dir=folder)
        except OSError as exc:
            log.info("cannot keep built CPU kernels in %s: %s", folder, exc)
            continue
        with scratch as tmp:
            built = Path(tmp) / name
            command = [compiler, *flags, "-shared", "-fPIC", "-o", str(built), *map(str, SOURCES), "-lm"]
            try:
                subprocess.run(command, check=True, capture_output=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as exc:
                why = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")
                log.info("the CPU kernels did not build with %s %s: %s %s", compiler, flags, exc, why)
                return None
            os.replace(built, target)  # atomic: concurrent builders each publish a whole file
        return target
    return None


@functools.cache
def kernel() -> Kernel | None:
    """The CPU kernels' library, or ``None`` where this machine cannot build or run it (logged once)."""
    found, why = _load()
    if found is None:
        log.info("the plugin's CPU kernels are not used (%s): torch's kernels serve", why)
    else:
        log.info("the plugin's CPU kernels serve (%s, OpenMP: %s)", found.lib._name, found.parallel)
    return found


def _load() -> tuple[Kernel | None, str]:
    if os.environ.get("PLUGHOST_AWQ_CPU_KERNEL", "auto") == "torch":  # an operator's way back to torch's kernels
        return None, "PLUGHOST_AWQ_CPU_KERNEL=torch"
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None, f"{platform.system()} on {platform.machine()}, not Linux on x86-64"
    missing = sorted(set(_NEEDED_FLAGS) - _cpu_flags())
    if missing:
        return None, f"the CPU lacks {', '.join(missing)}"
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc") if c and shutil.which(c)), None)
    if compiler is None:
        return None, "no C compiler: set $CC or install cc/gcc"
    base = ["-O3", "-Wno-unknown-pragmas", *_ISA]
    for parallel, flags in ((True, [*base, "-fopenmp"]), (False, base)):
        path = _compile(compiler, flags)
        if path is None:
            continue
        try:
            lib = ctypes.CDLL(str(path))  # torch is imported: its libgomp.so.1 is the one OpenMP binds to
        except OSError as exc:
            log.info("the CPU kernels' library %s did not load: %s", path, exc)
            continue
        p, i = ctypes.c_void_p, ctypes.c_int64
        lib.awq_gemm.argtypes = [p, i, i, p, p, p, i, i, i, p, p, i]
        lib.awq_gemm.restype = None
        lib.head_int8_gemm.argtypes = [p, i, i, p, p, i, p, p, p, p, i]
        lib.head_int8_gemm.restype = None
        return Kernel(lib, parallel), ""
    return None, f"they did not build with {compiler} (see the log above)"


@dataclass(frozen=True)
class Int4Pack:
    """An AWQ linear's weight in ``awq_gemm.c``'s layout (see its header comment).

    ``scales`` and ``zeros`` may be column slices of a wider pack's (rows of ``stride(0)`` elements).
    """

    weight: torch.Tensor  # uint8 [out/16, in/4, 32]
    scales: torch.Tensor  # fp16 [in/G, out] (AWQ's own)
    zeros: torch.Tensor  # uint8 [in/G, out] (the zero codes)
    group_size: int

    def __post_init__(self) -> None:
        # awq_gemm.c trusts every size and stride it is given: check them all once, here.
        w, s, z = self.weight, self.scales, self.zeros
        tiles, chunks = (w.shape[0], w.shape[1]) if w.dim() == 3 else (-1, -1)
        ok = (
            w.dtype == torch.uint8
            and w.dim() == 3
            and w.shape[2] == 2 * TILE
            and w.is_contiguous()
            and s.dtype == torch.float16
            and z.dtype == torch.uint8
            and s.dim() == 2
            and s.shape == z.shape
            and s.stride() == z.stride()
            and s.stride(1) == 1
            and s.shape[1] == tiles * TILE
            and self.group_size > 0
            and self.group_size % 4 == 0
            and s.shape[0] * self.group_size == chunks * 4
            and w.device.type == s.device.type == z.device.type == "cpu"
        )
        if not ok:
            raise ValueError(
                f"inconsistent int4 pack: codes {tuple(w.shape)} {w.dtype}, scales {tuple(s.shape)} {s.dtype}, "
                f"zeros {tuple(z.shape)} {z.dtype}, groups of {self.group_size}"
            )

    @property
    def out_features(self) -> int:
        """Output columns."""
        return int(self.scales.shape[1])

    @property
    def in_features(self) -> int:
        """Input columns."""
        return int(self.weight.shape[1]) * 4

    def columns(self, start: int, stop: int) -> Int4Pack:
        """Output columns ``start:stop`` (multiples of :data:`TILE`), as views: nothing is copied."""
        if start % TILE or stop % TILE or not 0 <= start < stop <= self.out_features:
            raise ValueError(f"columns {start}:{stop} are not whole tiles of {TILE} within {self.out_features}")
        return Int4Pack(
            self.weight[start // TILE : stop // TILE],
            self.scales[:, start:stop],
            self.zeros[:, start:stop],
            self.group_size,
        )


def packable(out_features: int, in_features: int, group_size: int) -> bool:
    """Whether a linear of this shape fits the packed layout."""
    return out_features % TILE == 0 and group_size % 4 == 0 and in_features % group_size == 0


def pack(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> Int4Pack:
    """Pack ``codes`` ``[out, in]`` (0..15) with zero codes and fp16 scales ``[in/G, out]`` (AWQ's orientation)."""
    n, k = codes.shape
    if not packable(n, k, group_size):
        raise ValueError(f"a {n} x {k} weight with groups of {group_size} does not fit the packed layout")
    q = codes.to(torch.uint8).reshape(n // TILE, TILE, k // 4, 2, 2)  # [tile, column, chunk, high, parity]
    packed = q[:, :, :, 0, :] | (q[:, :, :, 1, :] << 4)
    weight = packed.permute(0, 2, 1, 3).contiguous().reshape(n // TILE, k // 4, 2 * TILE)
    return Int4Pack(weight, scales.to(torch.float16).contiguous(), zeros.to(torch.uint8).contiguous(), group_size)


def concat(packs: list[Int4Pack]) -> Int4Pack:
    """One pack whose output columns are ``packs``' side by side (a fused matmul of one input)."""
    return Int4Pack(
        torch.cat([p.weight for p in packs]),
        torch.cat([p.scales for p in packs], dim=1),
        torch.cat([p.zeros for p in packs], dim=1),
        packs[0].group_size,
    )


def matmul(kern: Kernel, x: torch.Tensor, packed: Int4Pack) -> torch.Tensor:
    """``x`` ``[rows, in]`` (any float dtype; bf16 inside) times the packed weight → fp32 ``[rows, out]``."""
    if x.dim() != 2 or x.shape[1] != packed.in_features or x.device.type != "cpu":
        raise ValueError(f"expected CPU activations [rows, {packed.in_features}], got {tuple(x.shape)} on {x.device}")
    # The C side trusts these: a wrong stride would read out of bounds, not fail.
    ld = packed.scales.stride(0)
    if (
        packed.scales.stride(1) != 1
        or packed.zeros.stride() != packed.scales.stride()
        or not packed.weight.is_contiguous()
    ):
        raise ValueError("a pack's scales and zeros must be row slices of one width, its codes contiguous")
    a = x.to(torch.bfloat16).contiguous()
    rows = a.shape[0]
    out = torch.empty(rows, packed.out_features, dtype=torch.float32)
    scratch = torch.empty(rows * (packed.in_features // packed.group_size), dtype=torch.float32)
    kern.lib.awq_gemm(
        a.data_ptr(),
        rows,
        packed.in_features,
        packed.weight.data_ptr(),
        packed.scales.data_ptr(),
        packed.zeros.data_ptr(),
        ld,
        packed.out_features,
        packed.group_size,
        scratch.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads() if kern.parallel else 1,
    )
    return out


#: What a CPU AWQ linear multiplies with: this module's pack, or torch's ``(int4 pack, scales_and_zeros)``.
CpuPack = Int4Pack | tuple[torch.Tensor, torch.Tensor]


def apply(x: torch.Tensor, pack: CpuPack, group_size: int) -> torch.Tensor:
    """``x`` ``[rows, in]`` times a CPU pack, in ``x``'s dtype: the one product both the model's
    ``forward`` and the lean decode step use (so the two agree bit for bit)."""
    if isinstance(pack, Int4Pack):
        kern = kernel()
        if kern is None:
            raise RuntimeError("the AVX512-BF16 AWQ kernel is not available in this process")
        return matmul(kern, x, pack).to(x.dtype)
    weight, scales_zeros = pack
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.to(torch.bfloat16).contiguous(), weight, group_size, scales_zeros
    )
    return out.to(x.dtype)


@dataclass(frozen=True)
class Int8Rows:
    """A ``[rows, in]`` int8 matrix with one scale per row (the int8 lm_head) in ``head_int8.c``'s layout."""

    weight: torch.Tensor  # uint8 [rows/16, in/4, 64]: codes + 128
    scales: torch.Tensor  # fp32 [rows]

    def __post_init__(self) -> None:
        # head_int8.c trusts every size it is given: check them once, here.
        w, s = self.weight, self.scales
        ok = (
            w.dtype == torch.uint8
            and w.dim() == 3
            and w.shape[2] == 4 * TILE
            and w.shape[1] % 8 == 0  # whole blocks of 32 inputs
            and w.is_contiguous()
            and s.dtype == torch.float32
            and s.dim() == 1
            and s.is_contiguous()
            and s.shape[0] == w.shape[0] * TILE
            and w.device.type == s.device.type == "cpu"
        )
        if not ok:
            raise ValueError(
                f"inconsistent int8 rows: codes {tuple(w.shape)} {w.dtype}, scales {tuple(s.shape)} {s.dtype}"
            )

    @property
    def rows(self) -> int:
        """Rows (the head's output columns)."""
        return int(self.scales.shape[0])

    @property
    def in_features(self) -> int:
        """Input columns."""
        return int(self.weight.shape[1]) * 4

    def codes(self) -> torch.Tensor:
        """The int8 codes ``[rows, in]`` back (for a state dict)."""
        tiles, chunks = self.weight.shape[:2]
        u = self.weight.reshape(tiles, chunks, TILE, 4).permute(0, 2, 1, 3).reshape(tiles * TILE, chunks * 4)
        return (u ^ 0x80).view(torch.int8)  # code + 128 (mod 256) and back, without a wider temporary


def rows_packable(rows: int, in_features: int) -> bool:
    """Whether an int8 matrix of this shape fits ``head_int8.c``'s layout (whole tiles and blocks of 32)."""
    return rows % TILE == 0 and in_features % 32 == 0


def pack_rows(codes: torch.Tensor, scales: torch.Tensor) -> Int8Rows:
    """Pack int8 ``codes`` ``[rows, in]`` with per-row ``scales``."""
    rows, k = codes.shape
    if not rows_packable(rows, k):
        raise ValueError(f"a {rows} x {k} int8 matrix does not fit the packed layout")
    # code + 128 (mod 256) is the code's byte with its top bit flipped: no wider temporary for a
    # vocabulary-sized matrix (the xor is the one copy; the permute makes the second)
    u = (codes.contiguous().view(torch.uint8) ^ 0x80).reshape(rows // TILE, TILE, k // 4, 4)
    weight = u.permute(0, 2, 1, 3).contiguous().reshape(rows // TILE, k // 4, 4 * TILE)
    return Int8Rows(weight, scales.to(torch.float32).contiguous())


def rows_matmul(kern: Kernel, x: torch.Tensor, packed: Int8Rows) -> torch.Tensor:
    """``x`` ``[n, in]`` (activations quantised to int8 per block of 32 inside) times the rows → fp32 ``[n, rows]``."""
    if x.dim() != 2 or x.shape[1] != packed.in_features or x.device.type != "cpu":
        raise ValueError(f"expected CPU activations [n, {packed.in_features}], got {tuple(x.shape)} on {x.device}")
    a = x.to(torch.float32).contiguous()
    n, k = a.shape
    out = torch.empty(n, packed.rows, dtype=torch.float32)
    quantised = torch.empty(n * k, dtype=torch.int8)
    block_scales = torch.empty(n * k // 32, dtype=torch.float32)
    block_sums = torch.empty(n * k // 32, dtype=torch.int32)
    kern.lib.head_int8_gemm(
        a.data_ptr(),
        n,
        k,
        packed.weight.data_ptr(),
        packed.scales.data_ptr(),
        packed.rows,
        quantised.data_ptr(),
        block_scales.data_ptr(),
        block_sums.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads() if kern.parallel else 1,
    )
    return out


def rows_apply(x: torch.Tensor, packed: Int8Rows) -> torch.Tensor:
    """:func:`rows_matmul` with this process's kernel (packed rows exist only where it serves)."""
    kern = kernel()
    if kern is None:
        raise RuntimeError("the CPU kernels are not available in this process")
    return rows_matmul(kern, x, packed)
