"""A base for backends that serve through a :class:`~host.toolkit.batcher.DynamicBatcher` (embeddings, rerank).

Infinity's pre / core / post split with TGI's permit. A plugin's backend subclasses
:class:`BatchedBackend` and supplies:

- :meth:`~BatchedBackend.load_model`, :meth:`~BatchedBackend.unload_model`,
  :meth:`~BatchedBackend.move_model`: its weights (no batcher work in them);
- :attr:`~BatchedBackend.budgets_by_device`: batch bounds on ``"cpu"`` and ``"gpu"`` (read from
  its options; or override :meth:`~BatchedBackend.budgets`);
- :meth:`~BatchedBackend.prepare` (the prepare thread: tokenise, validate),
  :meth:`~BatchedBackend.length` (an item's tokens), optionally :meth:`~BatchedBackend.tokens`
  (what an item counts against ``max_request_tokens``), :meth:`~BatchedBackend.batch_cost`
  (a batch's tokens, when more than ``rows × longest``), and :meth:`~BatchedBackend.run`
  (the compute thread: forward pass and post-processing);
- its serving method (``embed``/``rerank``), which validates a request and awaits :meth:`submit`.

The base owns the rest: the batcher's life cycle across load / unload / relocate, the budgets
(re-read on relocation), the bound of one request's input tokens
(:attr:`BatchedBackend.max_request_tokens`: over it a :class:`~host.contract.errors.RequestTooLarge`
before any batch of the request runs), error mapping (client mistakes stay 4xx; any other failure
of a batch fails only that batch's requests, as a 500 naming the model) and the permit: :meth:`submit` does
not return or raise — not even when its caller is cancelled — while an item of its request is in
a running batch, so a lease held around it is released only once the model has stopped working
for it. The scheduler never unloads or moves a model with a lease out, so no lock between
forward passes and relocation is needed. Torch-free: tested with a pure-Python fake
(``tests/test_batched.py``).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from host.contract import request_id
from host.contract.errors import BackendError, PlughostError, RequestTooLarge, internal_error_message
from host.contract.spec import Grant, ModelSpec
from host.toolkit.batcher import BatcherStats, Budget, DynamicBatcher

log = logging.getLogger("plughost.batched")

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


class ModelNotLoaded(BackendError, RuntimeError):
    """A request reached a backend that is not loaded (a 500: the scheduler leases loaded models only)."""


@dataclass(frozen=True)
class BatchBudgets:
    """Batch bounds on one device (see :class:`~host.toolkit.batcher.DynamicBatcher`)."""

    max_batch_tokens: int
    max_batch_size: int
    batch_overhead_tokens: int | None = None


class BatchedBackend(abc.ABC, Generic[Item, Prepared, Result]):
    """Life cycle, budgets, errors and the permit of a batched backend; see the module docstring.

    A subclass sets, while reading its options, :attr:`budgets_by_device` (batch bounds keyed
    ``"cpu"`` and ``"gpu"``), :attr:`max_pending` (items that may wait in the batcher; beyond
    it requests get 429; ``None``: unbounded) and :attr:`max_request_tokens` (the tokens of one
    request's items in all, ``tokens`` each; beyond it a 400 naming the option ``max_request_tokens``;
    ``None``: unbounded). :attr:`kind` names the threads and errors, :attr:`items_param` the
    request field that holds the items (for errors).
    """

    kind = "batched"
    items_param = "input"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.grant: Grant | None = None
        self.batcher: DynamicBatcher[Item, Prepared, Result] | None = None
        self.budgets_by_device: dict[str, BatchBudgets] = {}
        self.max_pending: int | None = None
        self.max_request_tokens: int | None = None

    # -- what a plugin supplies -------------------------------------------------------------------
    @abc.abstractmethod
    def load_model(self, grant: Grant) -> None:
        """Load tokenizer and weights where ``grant`` says (a worker thread; raise on failure)."""

    @abc.abstractmethod
    def unload_model(self) -> None:
        """Drop every tensor (the batcher is already stopped)."""

    @abc.abstractmethod
    def move_model(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant`` without reading them from disk (no batch is running)."""

    def budgets(self, grant: Grant) -> BatchBudgets:
        """Batch bounds on ``grant``'s device: ``budgets_by_device["gpu"]`` on a GPU, else ``["cpu"]``."""
        return self.budgets_by_device["gpu" if grant.device.startswith("cuda") else "cpu"]

    @abc.abstractmethod
    def prepare(self, items: Sequence[Item]) -> Sequence[Prepared]:
        """Prepared items (same order), on the prepare thread; raise InvalidRequest for bad input."""

    @abc.abstractmethod
    def length(self, prepared: Prepared) -> int:
        """An item's tokens in a batch (its padded width; the batcher sorts by it)."""

    def tokens(self, prepared: Prepared) -> int:
        """What an item counts against :attr:`max_request_tokens` (default: :meth:`length`)."""
        return self.length(prepared)

    def batch_cost(self) -> Callable[[Prepared], int] | None:
        """A new batch's cost: a function fed the batch's items one by one that returns its tokens so far.

        Bounded by ``max_batch_tokens``. ``None`` (the default): ``rows × longest length``.
        Override when a batch holds more than its padded rows (e.g. shared key/value states).
        """
        return None

    @abc.abstractmethod
    def run(self, batch: list[Prepared]) -> Sequence[Result]:
        """One result per item (same order), on the compute thread."""

    # -- what the base does -----------------------------------------------------------------------
    def _cost_of_new_batch(self) -> Callable[[Prepared], int]:
        add = self.batch_cost()
        assert add is not None  # only used when the subclass overrides batch_cost
        return add

    def load(self, grant: Grant) -> None:
        """Load the model and start the batcher with ``grant``'s budgets."""
        self.load_model(grant)
        try:
            budgets = self.budgets(grant)
            self.batcher = DynamicBatcher(
                prepare=self.prepare,
                length=self.length,
                run=self.run,
                tokens=self.tokens,
                cost=self._cost_of_new_batch if self.batch_cost() is not None else None,
                max_batch_tokens=budgets.max_batch_tokens,
                max_batch_size=budgets.max_batch_size,
                batch_overhead_tokens=budgets.batch_overhead_tokens,
                max_pending=self.max_pending,
                name=f"{self.kind}:{self.spec.id}",
            )
        except BaseException:
            self.unload_model()
            raise
        self.grant = grant

    def unload(self) -> None:
        """Stop the batcher (failing what still waits, after a running batch ends) and free the model."""
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            batcher.close()
        self.unload_model()
        self.grant = None

    def batch_stats(self) -> BatcherStats | None:
        """The batcher's counters (``host.contract.backend.Batching``: the ``plughost_batch_*`` metrics)."""
        return self.batcher.stats if self.batcher is not None else None

    def relocate(self, grant: Grant) -> None:
        """Move the weights to ``grant`` and switch to its device's budgets."""
        if self.batcher is None:
            raise ModelNotLoaded(f"{self.spec.id}: relocate before load")
        self.move_model(grant)
        self.grant = grant
        budgets = self.budgets(grant)
        self.batcher.max_batch_tokens = budgets.max_batch_tokens
        self.batcher.max_batch_size = budgets.max_batch_size
        self.batcher.batch_overhead_tokens = budgets.batch_overhead_tokens

    def _too_large(self, counted: int) -> RequestTooLarge:
        limit = self.max_request_tokens
        return RequestTooLarge(
            f"This request's {self.items_param} take more than {limit} tokens ({counted} counted before "
            f"stopping); '{self.spec.id}' takes at most {limit} tokens per request "
            f"(models.{self.spec.id}.options.max_request_tokens). Send them in several requests.",
            param=self.items_param,
        )

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Results of ``items`` in order, batched with concurrent requests (the permit: see the module).

        Raises what ``prepare`` raised for a client mistake (a 4xx), :class:`~host.contract.errors.QueueFull`,
        :class:`~host.toolkit.batcher.BatcherClosed`, and :class:`~host.contract.errors.BackendError` for any
        other failure of a batch holding an item of this request.
        """
        batcher = self.batcher
        if batcher is None:
            raise ModelNotLoaded(f"{self.spec.id} is not loaded")
        budget = None if self.max_request_tokens is None else Budget(self.max_request_tokens, self._too_large)
        try:
            return await batcher.submit(items, budget)
        except PlughostError:
            raise
        except Exception as exc:
            # The exception stays in the log (it may name files or internals); the client gets the request id.
            log.exception("%s: %s failed", self.spec.id, self.kind)
            rid = request_id.current.get()
            raise BackendError(f"{self.spec.id}: {self.kind} failed. {internal_error_message(rid)}") from exc
