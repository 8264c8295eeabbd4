"""Fixtures of the chat_qwen_awq tests: the tiny AWQ model and a backend loaded on the CPU.

Everything runs offline on one CPU thread with the random-weight tiny Qwen2 AWQ model from
:mod:`host.testing.tiny_models` (built once, cached on disk). Shared helpers live in
``chat_qwen_awq_testing`` (``conftest`` module names clash between plugins).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

_PLUGIN_ROOT = str(Path(__file__).resolve().parents[1])
if _PLUGIN_ROOT not in sys.path:  # the plugin is used from its folder, not installed
    sys.path.insert(0, _PLUGIN_ROOT)

import torch  # noqa: E402 - a missing torch must fail the suite, not skip it

torch.set_num_threads(1)

with warnings.catch_warnings(record=True):  # autoawq's import-time notices (the plugin imports it quietly too)
    import awq.modules.linear.gemm  # noqa: F401


@pytest.fixture(scope="session")
def awq_folder() -> Path:
    """The tiny AWQ checkpoint folder."""
    from host.testing.tiny_models import tiny_model_cache

    return tiny_model_cache("qwen2-awq")


@pytest.fixture(scope="session")
def backend(awq_folder: Path) -> Iterator[Any]:
    """A backend with the tiny model loaded on the CPU (shared: tests must leave it idle).

    Embeddings and head in fp32 (not ``auto``): the reference path that exactness tests compare with.
    """
    from chat_qwen_awq_testing import cpu_grant, tiny_config

    from chat_qwen_awq import model_spec
    from chat_qwen_awq.backend import QwenAwqChatBackend

    b = QwenAwqChatBackend(model_spec(tiny_config(cpu_head_dtype="float32")))
    b.load(cpu_grant())
    yield b
    b.unload()
