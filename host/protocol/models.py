"""``GET /v1/models`` and the model management routes."""

from __future__ import annotations

import msgspec

from host.contract.capabilities import Capabilities
from host.downloads.inventory import WeightsInfo
from host.scheduling.status import ModelStatus


class ModelCard(msgspec.Struct, kw_only=True):
    """One model in OpenAI's list shape, plus plughost's task, residency, declared capabilities and
    weights on disk.

    The context length is given under the names clients read: ``context_length`` (OpenRouter,
    Cline, AnythingLLM) and ``max_model_len`` (vLLM's)."""

    id: str
    created: int
    owned_by: str
    task: str
    aliases: list[str]
    description: str
    status: ModelStatus
    context_length: int | None = None
    max_model_len: int | None = None
    capabilities: Capabilities | None = None
    weights: WeightsInfo | None = None
    object: str = "model"


class ModelList(msgspec.Struct):
    """OpenAI's list envelope."""

    data: list[ModelCard]
    object: str = "list"


class Download(msgspec.Struct, kw_only=True):
    """A pull running on the server (``/health``)."""

    id: str
    repo: str
    percent: float
    done_bytes: int
    total_bytes: int


class Health(msgspec.Struct, kw_only=True):
    """Liveness, readiness and a summary of resident models and running downloads."""

    status: str
    ready: bool
    models: int
    resident: list[str]
    loading: list[str]
    failed: list[str]
    downloading: list[Download] = msgspec.field(default_factory=list)
