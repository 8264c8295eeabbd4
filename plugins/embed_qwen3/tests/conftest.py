"""Fixtures of the embed_qwen3 tests: the tiny Qwen3 embedding model, a loaded backend, the recipe, a server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch  # a missing torch must fail the suite, not skip it
import transformers  # noqa: F401

from embed_qwen3.testing import MODEL, TINY, Recipe, load_backend


def pytest_configure(config: pytest.Config) -> None:
    """Offline, one thread: the tiny model is local and the machine is shared."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The folder of the tiny random-weight Qwen3 embedding model (built once, cached on disk)."""
    from embed_qwen3.demo import TINY

    return TINY.folder()


@pytest.fixture(scope="session")
def backend(tiny_path: Path) -> Iterator[Any]:
    """The backend on the CPU, loaded once.

    Budgets are large enough (and no padding cut) that 65 mixed inputs share one batch.
    """
    loaded = load_backend(batch_tokens_cpu=65536, max_batch_size=128, batch_overhead_tokens_cpu=None)
    yield loaded
    loaded.unload()


@pytest.fixture(scope="session")
def recipe(tiny_path: Path) -> Recipe:
    """The publisher's recipe on the tiny model (fp32)."""
    return Recipe(tiny_path)


@pytest.fixture(scope="session")
def server_url(tiny_path: Path) -> Iterator[str]:
    """A real uvicorn server of the plugin on the tiny model (CPU budgets); yields its base URL."""
    import embed_qwen3
    from host.app import create_app
    from host.testing.pytest_plugin import CPU_ONLY, make_config
    from host.testing.server import serve_in_thread

    config = make_config({"models": {MODEL: {"weights": TINY, "options": {"max_length": 128}}}})
    with serve_in_thread(create_app(config, plugins=[embed_qwen3], budgets=CPU_ONLY)) as url:
        yield url
