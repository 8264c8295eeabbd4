"""Torch helpers shared by backends: left padding with per-row positions, relocation, freeing memory.

Only backends import this module (when the scheduler admits their model): the host core never
does, so importing ``host`` stays torch-free.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import torch


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, *, pad_position: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of left-padded rows, on the CPU.

    Positions count real tokens only, so a row gets the positions it has alone whatever the
    padding (the mask keeps pads out of attention; together they make a row's computation the
    same in any batch, up to float rounding of differently shaped kernels). Pads get
    ``pad_position`` (masked out, so any value in range will do).
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(dim=1) - 1).masked_fill_(mask == 0, pad_position)
    return ids, mask, positions


def place(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype | None = None) -> None:
    """Move ``module`` to ``device``, casting its floating parameters (not its buffers) to ``dtype``.

    Parameters travel one at a time, already cast, so a move to a GPU never holds a wider copy
    of the whole model there. Buffers keep their dtype: ``Module.to(dtype)`` would also cast the
    rotary ``inv_freq`` buffer, which transformers keeps in fp32 at every model dtype (in fp16 its
    rounding shifts the phases of distant positions).
    """
    device = torch.device(device)
    for param in module.parameters():
        target = dtype if dtype is not None and param.is_floating_point() else param.dtype
        if param.device != device or param.dtype != target:
            param.data = param.data.to(device=device, dtype=target)
    module.to(device=device)  # the buffers


def cast_parameters(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating parameters of ``module`` in place, where they are (see :func:`place`)."""
    place(module, next(module.parameters()).device, dtype)


def free_device_memory() -> None:
    """Collect dropped tensors and hand cached GPU blocks back to the driver (after unload or a move)."""
    gc.collect()
    if torch.cuda.is_initialized():  # never initialise CUDA just to empty its cache
        torch.cuda.empty_cache()
