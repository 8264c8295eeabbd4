"""``GET /v1/models`` and the model management routes."""

from __future__ import annotations

import msgspec

from host.scheduling.status import ModelStatus


class ModelCard(msgspec.Struct, kw_only=True):
    """One model in OpenAI's list shape, plus plughost's task and residency."""

    id: str
    created: int
    owned_by: str
    task: str
    aliases: list[str]
    description: str
    status: ModelStatus
    object: str = "model"


class ModelList(msgspec.Struct):
    """OpenAI's list envelope."""

    data: list[ModelCard]
    object: str = "list"


class Health(msgspec.Struct, kw_only=True):
    """Liveness, readiness and a summary of resident models."""

    status: str
    ready: bool
    models: int
    resident: list[str]
    loading: list[str]
    failed: list[str]
