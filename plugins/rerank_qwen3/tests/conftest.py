"""Fixtures of the rerank_qwen3 tests: the tiny Qwen3 reranker, a loaded backend, the publisher's recipe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch  # noqa: F401 - a missing torch must fail the suite, not skip it
import transformers  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerank_qwen3_testkit import Recipe, load_backend


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The folder of the tiny random-weight Qwen3 reranker (built once, cached on disk)."""
    from host.testing.tiny_models import tiny_model_cache

    return tiny_model_cache("qwen3-reranker")


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
