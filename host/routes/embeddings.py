"""``POST /v1/embeddings``."""

from __future__ import annotations

import base64

import numpy as np
from litestar import post
from litestar.params import JSONBody

from host.contract.spec import Task
from host.protocol.embeddings import EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, EmbeddingUsage
from host.routes.deps import ConfigDep, MetricsDep, SchedulerDep
from host.server.openapi import MODEL_ERRORS, WireBody


@post("/v1/embeddings", status_code=200, dto=WireBody[EmbeddingsRequest], return_dto=None, responses=MODEL_ERRORS)
async def embeddings(
    data: JSONBody[EmbeddingsRequest], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> EmbeddingsResponse:
    """Embed one or many inputs; ``encoding_format`` float or base64 (little-endian float32)."""
    body = data
    domain = body.to_domain(config.server.max_embedding_inputs)
    with await scheduler.acquire(domain.model, Task.EMBEDDING) as lease:
        result = await lease.backend.embed(domain)
    metrics.tokens(lease.model.spec.id, result.prompt_tokens)
    vectors = np.asarray(result.vectors, dtype=np.float32)
    if body.encoding_format == "base64":
        le = vectors.astype("<f4", copy=False)
        items = [
            EmbeddingData(index=i, embedding=base64.b64encode(row.tobytes()).decode("ascii"))
            for i, row in enumerate(le)
        ]
    else:
        items = [EmbeddingData(index=i, embedding=row) for i, row in enumerate(vectors.tolist())]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingsResponse(data=items, model=lease.model.spec.id, usage=usage)
