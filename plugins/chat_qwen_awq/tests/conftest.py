"""Fixtures of the chat_qwen_awq tests: the tiny AWQ model and a backend loaded on the CPU.

Everything runs offline on one CPU thread with the plugin's random-weight demo model
(:data:`chat_qwen_awq.demo.TINY_AWQ`, built once, cached on disk). Shared helpers live in
:mod:`chat_qwen_awq.testing`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch  # a missing torch must fail the suite, not skip it


def pytest_configure(config: pytest.Config) -> None:
    """Offline, one thread: the tiny model is local and the machine is shared."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    with warnings.catch_warnings(record=True):  # autoawq's import-time notices (the plugin imports it quietly too)
        import awq.modules.linear.gemm  # noqa: F401


@pytest.fixture(scope="session")
def awq_folder() -> Path:
    """The tiny AWQ checkpoint folder."""
    from chat_qwen_awq.demo import TINY_AWQ

    return TINY_AWQ.folder()


@pytest.fixture(scope="session")
def backend(awq_folder: Path) -> Iterator[Any]:
    """A backend with the tiny model loaded on the CPU (shared: tests must leave it idle).

    Embeddings and head in fp32 (not ``auto``): the reference path that exactness tests compare with.
    """
    from chat_qwen_awq import model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend
    from chat_qwen_awq.testing import cpu_grant, tiny_config

    b = QwenAwqChatBackend(model_spec(tiny_config(cpu_head_dtype="float32")))
    b.load(cpu_grant())
    yield b
    b.unload()
