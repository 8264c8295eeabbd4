"""``POST /v1/embeddings``."""

from __future__ import annotations

import base64

import numpy as np
from litestar import Request, post

from host.errors import decode_body
from host.protocol.embeddings import EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, EmbeddingUsage
from host.routes.deps import ConfigDep, SchedulerDep
from host.spec import Task


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request, scheduler: SchedulerDep, config: ConfigDep) -> EmbeddingsResponse:
    """Embed one or many inputs; ``encoding_format`` float or base64 (little-endian float32)."""
    body = decode_body(await request.body(), EmbeddingsRequest)
    domain = body.to_domain(config.server.max_embedding_inputs)
    with await scheduler.acquire(domain.model, Task.EMBEDDING) as lease:
        result = await lease.backend.embed(domain)
    vectors = np.asarray(result.vectors, dtype=np.float32)
    if body.encoding_format == "base64":
        le = vectors.astype("<f4", copy=False)
        data = [
            EmbeddingData(index=i, embedding=base64.b64encode(row.tobytes()).decode("ascii"))
            for i, row in enumerate(le)
        ]
    else:
        data = [EmbeddingData(index=i, embedding=row) for i, row in enumerate(vectors.tolist())]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingsResponse(data=data, model=lease.model.spec.id, usage=usage)
