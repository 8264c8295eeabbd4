"""The face of plughost for plugin authors: everything a plugin imports, from one module.

``from host.sdk import ModelSpec, ChatRequest, InvalidRequest, BatchedBackend, ...``. Cheap: no
torch (``host.toolkit.torch_utils`` imports torch; backends import it inside ``load``). The
modules behind these names are :mod:`host.contract` (what a plugin declares and implements) and
:mod:`host.toolkit` (building blocks for backends); the server's internals are not exported.
"""

from __future__ import annotations

from host import hookimpl
from host.contract.backend import Backend, ChatBackend, EmbeddingBackend, PromptTokens, Relocatable, RerankBackend
from host.contract.capabilities import Capabilities, Feature
from host.contract.config import HostConfig
from host.contract.domain import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    OutputFormat,
    RerankRequest,
    RerankResult,
    SamplingParams,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolChoice,
    TopLogprob,
)
from host.contract.errors import (
    BackendError,
    EngineUnavailable,
    InvalidRequest,
    PlughostError,
    QueueFull,
    RequestTooLarge,
    ShuttingDown,
    internal_error_message,
)
from host.contract.spec import (
    GiB,
    Grant,
    MiB,
    ModelSpec,
    NonNegativeInt,
    Options,
    Placement,
    PlacementKind,
    PositiveInt,
    Task,
)
from host.demo import DemoModel, demo_weights
from host.toolkit.batched import BatchBudgets, BatchedBackend
from host.toolkit.batcher import BatcherClosed
from host.toolkit.chat import ChatEngineBackend, queued_deltas
from host.toolkit.json_schemas import close_objects
from host.toolkit.textlimits import over_limit_prefix
from host.toolkit.tokenizing import TokenizerEndpoints
from host.toolkit.weights import WeightsError, peek_config, resolve_weights

__all__ = [
    "Backend",
    "BackendError",
    "BatchBudgets",
    "BatchedBackend",
    "BatcherClosed",
    "Capabilities",
    "ChatBackend",
    "ChatDelta",
    "ChatEngineBackend",
    "ChatMessage",
    "ChatRequest",
    "DemoModel",
    "EmbeddingBackend",
    "EmbeddingRequest",
    "EmbeddingResult",
    "EngineUnavailable",
    "Feature",
    "GiB",
    "Grant",
    "HostConfig",
    "InvalidRequest",
    "MiB",
    "ModelSpec",
    "NonNegativeInt",
    "Options",
    "OutputFormat",
    "Placement",
    "PlacementKind",
    "PlughostError",
    "PositiveInt",
    "PromptTokens",
    "QueueFull",
    "Relocatable",
    "RequestTooLarge",
    "RerankBackend",
    "RerankRequest",
    "RerankResult",
    "SamplingParams",
    "ShuttingDown",
    "Task",
    "TokenLogprob",
    "TokenizerEndpoints",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "TopLogprob",
    "WeightsError",
    "close_objects",
    "demo_weights",
    "hookimpl",
    "internal_error_message",
    "over_limit_prefix",
    "peek_config",
    "queued_deltas",
    "resolve_weights",
]
