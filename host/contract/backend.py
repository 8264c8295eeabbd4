"""Backend protocols: what a model's backend class implements, per task.

A backend is constructed cheaply with its :class:`~host.contract.spec.ModelSpec`; the scheduler then
calls :meth:`Backend.load` in a worker thread with a :class:`~host.contract.spec.Grant`. Serving
methods are async and take domain requests (``host.contract.domain``), never wire structs. Backends
raise ``host.contract.errors`` exceptions for client mistakes they detect (e.g. a prompt too long).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from host.contract.domain import (
    ChatDelta,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    RerankRequest,
    RerankResult,
)
from host.contract.errors import InvalidRequest
from host.contract.spec import Grant, ModelSpec, Task


@runtime_checkable
class Backend(Protocol):
    """Lifecycle every backend has. ``load``/``unload``/``relocate`` block and run off the event loop."""

    def __init__(self, spec: ModelSpec) -> None: ...

    def load(self, grant: Grant) -> None:
        """Load weights where ``grant`` says; raise on failure (freeing what was taken)."""

    def unload(self) -> None:
        """Free every byte the backend holds; it may be loaded again later."""


@runtime_checkable
class Relocatable(Protocol):
    """Optional: a backend that can move its loaded weights (offload to host RAM and back)."""

    def relocate(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant``'s placement without reading them from disk."""


@dataclass
class BatcherStats:
    """Counters of a batcher's work (for tests and metrics; written by the compute thread only).

    ``padded_tokens`` counts ``rows × longest row`` per batch, ``real_tokens`` the sum of the
    rows' lengths: ``1 - real/padded`` is the padding waste. ``run_seconds`` is the time spent
    inside ``run`` (the compute thread's busy time: against wall time, its utilisation).
    """

    requests: int = 0
    items: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    failed_batches: int = 0
    max_batch_rows: int = 0
    run_seconds: float = 0.0


@runtime_checkable
class Batching(Protocol):
    """Optional: a backend that batches with :class:`~host.toolkit.batcher.DynamicBatcher` reports its
    counters (exported as ``plughost_batch_*`` metrics)."""

    def batch_stats(self) -> BatcherStats | None:
        """The batcher's counters, ``None`` while not loaded."""


@runtime_checkable
class ChatBackend(Backend, Protocol):
    """Generates chat completions."""

    def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Stream the completion. Validation errors are raised before the first delta."""


@runtime_checkable
class PromptTokens(Protocol):
    """Optional: a chat backend that tells the token ids of a request's prompt without generating
    (``POST /v1/messages/count_tokens`` counts them): the conversation as its chat template renders
    it, tools included unless ``tool_choice`` is "none", or the raw ``prompt``."""

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids; the same 4xx as :meth:`ChatBackend.generate` for bad input."""


def no_prompt_tokens(model_id: str) -> InvalidRequest:
    """The 400 for counting the prompt of a model whose backend is not :class:`PromptTokens`."""
    return InvalidRequest(f"The model '{model_id}' cannot count prompt tokens.", param="model")


@runtime_checkable
class EmbeddingBackend(Backend, Protocol):
    """Embeds texts or token ids."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Return one normalised vector per input."""


@runtime_checkable
class RerankBackend(Backend, Protocol):
    """Scores documents against a query."""

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Return one relevance score per document."""


#: The protocol a backend must implement for each task (checked when the model is admitted).
TASK_PROTOCOLS: dict[Task, Any] = {  # Any: mypy refuses protocols as type[Backend] values
    Task.CHAT: ChatBackend,
    Task.EMBEDDING: EmbeddingBackend,
    Task.RERANK: RerankBackend,
}

# The serving method of each task and how it must be defined: ``generate`` streams (an async
# generator or a function returning an async iterator), ``embed``/``rerank`` are coroutines.
_SERVING: dict[Task, tuple[str, bool]] = {
    Task.CHAT: ("generate", False),
    Task.EMBEDDING: ("embed", True),
    Task.RERANK: ("rerank", True),
}


class BackendContractError(TypeError):
    """A backend class does not implement the protocol of its model's task."""


def check_backend(cls: type, task: Task, plugin: str) -> None:
    """Raise :class:`BackendContractError` naming ``plugin`` and what ``cls`` lacks for ``task``.

    ``runtime_checkable`` protocols only test that attributes exist on instances; this checks the
    class before it is constructed, so a plugin mistake fails the load with a clear message
    instead of an ``AttributeError`` in the middle of a request.
    """
    method, must_be_coroutine = _SERVING[task]
    protocol = TASK_PROTOCOLS[task].__name__
    where = f"plugin '{plugin}': backend {cls.__module__}.{cls.__qualname__}"
    missing = [name for name in ("load", "unload", method) if not callable(getattr(cls, name, None))]
    if missing:
        names = ", ".join(f"{name}()" for name in missing)
        raise BackendContractError(f"{where} does not implement {protocol} for task '{task}': missing {names}")
    fn = getattr(cls, method)
    if must_be_coroutine and not inspect.iscoroutinefunction(fn):
        raise BackendContractError(f"{where}: {protocol}.{method}() must be 'async def'")
    if not must_be_coroutine and inspect.iscoroutinefunction(fn):
        raise BackendContractError(
            f"{where}: {protocol}.{method}() must return an async iterator (an 'async def' with 'yield'), "
            "not a coroutine"
        )


def import_backend(path: str) -> type[Backend]:
    """Import ``"package.module:Class"``; errors name the import string."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{module_name!r} has no attribute {attr!r} (backend {path!r})") from None


#: Held while a backend module is imported and while a backend class loads for the first time on a
#: kind of placement in this process. Libraries that import lazily (transformers' ``_LazyModule``
#: resolves ``AutoTokenizer`` on first access) are not safe to first-use from two threads: two models
#: loading at once on the scheduler's threads saw half-initialised modules ("cannot import name
#: 'AutoTokenizer' from 'transformers'"). Once a class has loaded on a placement, its imports are done
#: and later loads and swaps run in parallel again.
_FIRST_USE = threading.Lock()
_used: set[tuple[str, str]] = set()


@contextlib.contextmanager
def first_use(backend: str, placement: str) -> Iterator[None]:
    """Serialise the first import and load of ``backend`` (an import string) on ``placement``
    (e.g. ``"cpu"``, ``"gpu"``) with every other first one; free once it has succeeded."""
    key = (backend, placement)
    if key in _used:
        yield
        return
    with _FIRST_USE:
        yield
        _used.add(key)


def load_backend(spec: ModelSpec, grant: Grant, *, plugin: str) -> Backend:
    """Import, check and construct ``spec``'s backend, then load it with ``grant`` (blocking).

    A failed load is unloaded before the error propagates, so nothing it took stays held. The
    scheduler calls this on admission; a Ray Serve replica (``host.ray``) in its constructor. The
    first load of each backend class on each placement kind runs alone (:func:`first_use`).
    """
    with first_use(spec.backend, str(grant.placement)):
        cls = import_backend(spec.backend)
        check_backend(cls, spec.task, plugin)
        backend = cls(spec)
        try:
            backend.load(grant)
        except BaseException:
            try:
                backend.unload()
            except Exception:
                logging.getLogger("plughost.backend").warning(
                    "%s: unload after failed load also failed", spec.id, exc_info=True
                )
            raise
    return backend


def relocate_backend(spec: ModelSpec, backend: Relocatable, grant: Grant) -> None:
    """``backend.relocate(grant)`` (blocking); the first move of a class to a placement kind runs alone,
    as a first load does (:func:`first_use`): a move may import what the load did not (offload hooks)."""
    with first_use(spec.backend, f"relocate to {grant.placement}{' (parked)' if grant.parked else ''}"):
        backend.relocate(grant)
