"""Fixtures of the rerank_qwen3 tests: the tiny Qwen3 reranker, a loaded backend, the publisher's recipe."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch  # a missing torch must fail the suite, not skip it
import transformers  # noqa: F401

from rerank_qwen3.testing import Recipe, load_backend


def pytest_configure(config: pytest.Config) -> None:
    """Offline, one thread: the tiny model is local and the machine is shared."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The folder of the tiny random-weight Qwen3 reranker (built once, cached on disk)."""
    from rerank_qwen3.demo import TINY

    return TINY.folder()


@pytest.fixture(scope="session")
def backend(tiny_path: Path) -> Iterator[Any]:
    """The backend with default options on the CPU, loaded once for the session."""
    loaded = load_backend()
    yield loaded
    loaded.unload()


@pytest.fixture(scope="session")
def recipe(tiny_path: Path) -> Recipe:
    """The publisher's full-logits recipe on the tiny model (fp32)."""
    return Recipe(tiny_path)
