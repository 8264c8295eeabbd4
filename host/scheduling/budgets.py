"""Measure the memory the scheduler may fill: GPUs (through torch, when CUDA is present) and host RAM."""

from __future__ import annotations

import logging
import os

from host.contract.config import HostConfig, parse_bytes
from host.scheduling.policy import Budgets

log = logging.getLogger("plughost.budgets")


def host_total_bytes() -> int:
    """Physical RAM of this machine (or of its cgroup limit, if lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def detect_gpus() -> list[int]:
    """Bytes free on each visible CUDA GPU now (memory other processes hold is not ours to
    plan with); empty when torch or CUDA is absent."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


def resolve_budgets(config: HostConfig) -> Budgets:
    """The budgets from ``budgets:``; unset values are measured on this machine (a GPU's free
    memory at start-up, minus 1 GiB for CUDA contexts when no reserve is configured)."""
    b = config.budgets
    if b.gpus is None:
        gpus = [max(0, total - parse_bytes("1GiB")) for total in detect_gpus()]
    else:
        measured: list[int] | None = None
        gpus = []
        for i, gpu in enumerate(b.gpus):
            if gpu.total is None:
                measured = measured if measured is not None else detect_gpus()
                total = measured[i] if i < len(measured) else 0
            else:
                total = parse_bytes(gpu.total)
            gpus.append(max(0, total - parse_bytes(gpu.reserve)))
    host = parse_bytes(b.host) if b.host is not None else host_total_bytes()
    host = max(0, host - parse_bytes(b.host_reserve))
    budgets = Budgets(gpus=tuple(gpus), host=host)
    log.info(
        "memory budgets: %s GPU(s) %s, host %.1f GiB", len(gpus), [f"{g / 2**30:.1f} GiB" for g in gpus], host / 2**30
    )
    return budgets
