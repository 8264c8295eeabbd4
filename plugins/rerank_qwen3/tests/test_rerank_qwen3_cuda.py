"""The reranker on a real GPU: 16-bit scores against the published recipe, batch invariance, parking.

Skipped where torch sees no CUDA device (CI has none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from host.contract.domain import RerankRequest
from host.contract.spec import Grant, PlacementKind
from rerank_qwen3.testing import DOCS, QUERY, Recipe, mixed_documents, tiny_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = Grant(placement=PlacementKind.GPU, device="cuda:0", gpu_bytes=0, host_bytes=0)
PARKED = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0, parked=True)
#: How far fp16 scores may be from fp32 ones (the CPU tests hold fp32 to 1e-4 and 1e-5). On the GPU
#: a batch's shape picks the kernels' tiles, so a score alone and in a batch differ by rounding
#: too: by no more than the fp16-versus-fp32 error itself (seen on an H200: 3.9e-3 between a tiny-model
#: score alone and among 50; 1.3e-3 between served fp16 and the fp16 recipe on the 0.6B shape).
FP16_SCORE_TOLERANCE = 5e-3


def scores(backend: Any, docs: list[str], query: str = QUERY) -> list[float]:
    return asyncio.run(backend.rerank(RerankRequest(model="m", query=query, documents=tuple(docs)))).scores


@pytest.fixture(scope="module", params=[True, False], ids=["share_prefix", "whole_pairs"])
def gpu_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    from rerank_qwen3.backend import Qwen3RerankerBackend

    backend = Qwen3RerankerBackend(tiny_spec(share_prefix=request.param))
    backend.load(GPU)
    yield backend
    backend.unload()


def test_gpu_scores_match_the_published_recipe(gpu_backend: Any, recipe: Recipe) -> None:
    assert next(gpu_backend.base.parameters()).device.type == "cuda"
    assert next(gpu_backend.base.parameters()).dtype == torch.float16
    ours = scores(gpu_backend, DOCS)
    published = recipe.scores(QUERY, DOCS)  # fp32 on the CPU
    assert max(abs(a - b) for a, b in zip(ours, published)) <= FP16_SCORE_TOLERANCE


def test_gpu_scores_are_batch_invariant(gpu_backend: Any) -> None:
    docs = mixed_documents(50, seed=3)
    together = scores(gpu_backend, docs)
    alone = [scores(gpu_backend, [d])[0] for d in docs[:10]]
    assert max(abs(a - b) for a, b in zip(alone, together[:10])) <= FP16_SCORE_TOLERANCE


def test_parking_frees_the_gpu_and_coming_back_restores_the_scores(gpu_backend: Any) -> None:
    before = scores(gpu_backend, DOCS)
    torch.cuda.synchronize()
    on_gpu = torch.cuda.memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in gpu_backend.base.parameters())
    gpu_backend.relocate(PARKED)
    torch.cuda.synchronize()
    assert next(gpu_backend.base.parameters()).device.type == "cpu"
    assert next(gpu_backend.base.parameters()).dtype == torch.float16  # parked as compact as on the GPU
    assert on_gpu - torch.cuda.memory_allocated() >= 0.9 * weights
    gpu_backend.relocate(GPU)
    assert scores(gpu_backend, DOCS) == before
