"""Prometheus metrics: one :class:`Metrics` per app, exported at ``GET /metrics``.

Every app has its own ``CollectorRegistry`` (never prometheus-client's process-global default),
so two apps in one process never clash. Three kinds of figures:

- counted at the HTTP edge (:mod:`host.server.edge`): requests and latency per route, method and status;
- observed where they happen, through :class:`Observer` methods that the scheduler, the routes and
  the downloads call: model transitions (load, reload from host RAM, offload, unload, eviction)
  with their durations, prompt and generated tokens, time to first token, bytes of weights downloaded;
- read from the scheduler at scrape time (:class:`_SchedulerCollector`): queue depth, in-flight
  requests and state per model, bytes resident per device, and the batch counters (batches, rows,
  tokens, padded tokens) of loaded backends that batch.

Code that observes takes an :class:`Observer` whose default, :data:`NO_METRICS`, does nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from host.contract.backend import Batching

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TRANSITION = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@runtime_checkable
class Observer(Protocol):
    """What the scheduler and the routes report (all methods must be cheap and never raise)."""

    def transition(self, model: str, kind: str, seconds: float, ok: bool = True) -> None:
        """A model finished ``kind`` (``load``, ``reload``, ``offload``, ``unload``) in ``seconds``."""

    def evicted(self, model: str, how: str) -> None:
        """``model`` was offloaded or unloaded (``how``) to make room for another."""

    def tokens(self, model: str, prompt: int, generated: int = 0) -> None:
        """A request of ``model`` consumed ``prompt`` tokens and generated ``generated``."""

    def first_token(self, model: str, seconds: float) -> None:
        """A chat request got its first generated token ``seconds`` after it arrived."""

    def downloaded(self, model: str, source: str, n: int) -> None:
        """``n`` more bytes of ``model``'s weights arrived from ``source`` (called from a pull's thread)."""


class NoMetrics:
    """The :class:`Observer` that records nothing (the default)."""

    def transition(self, model: str, kind: str, seconds: float, ok: bool = True) -> None:
        """Ignore."""

    def evicted(self, model: str, how: str) -> None:
        """Ignore."""

    def tokens(self, model: str, prompt: int, generated: int = 0) -> None:
        """Ignore."""

    def first_token(self, model: str, seconds: float) -> None:
        """Ignore."""

    def downloaded(self, model: str, source: str, n: int) -> None:
        """Ignore."""


NO_METRICS = NoMetrics()


class Metrics:
    """An app's metrics and their registry; implements :class:`Observer`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "plughost_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "plughost_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (a stream's last byte).",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        self.transitions = Histogram(
            "plughost_model_transition_duration_seconds",
            "Model loads, reloads from host RAM, offloads and unloads, with their durations.",
            ["model", "kind", "outcome"],
            buckets=_TRANSITION,
            registry=r,
        )
        self.evictions = Counter(
            "plughost_model_evictions", "Models offloaded or unloaded to make room.", ["model", "how"], registry=r
        )
        self.prompt_tokens = Counter("plughost_prompt_tokens", "Input tokens processed.", ["model"], registry=r)
        self.generated_tokens = Counter("plughost_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.ttft = Histogram(
            "plughost_time_to_first_token_seconds",
            "Time from a streamed chat request's arrival to its first generated token (includes admission).",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.download_bytes = Counter(
            "plughost_download_bytes", "Bytes of model weights downloaded, per model and source.", ["model", "source"],
            registry=r,
        )  # fmt: skip

    def watch(self, scheduler: Any) -> None:
        """Export the scheduler's per-model gauges (``snapshot()``) and its loaded backends' batch
        counters (``backend_of(id)``, for backends that implement ``host.contract.backend.Batching``)."""
        self.registry.register(_SchedulerCollector(scheduler))

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's registry."""
        return generate_latest(self.registry)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered (called by the edge)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def transition(self, model: str, kind: str, seconds: float, ok: bool = True) -> None:
        """See :meth:`Observer.transition`."""
        self.transitions.labels(model, kind, "ok" if ok else "failed").observe(seconds)

    def evicted(self, model: str, how: str) -> None:
        """See :meth:`Observer.evicted`."""
        self.evictions.labels(model, how).inc()

    def tokens(self, model: str, prompt: int, generated: int = 0) -> None:
        """See :meth:`Observer.tokens`."""
        self.prompt_tokens.labels(model).inc(max(0, prompt))
        if generated:
            self.generated_tokens.labels(model).inc(max(0, generated))

    def first_token(self, model: str, seconds: float) -> None:
        """See :meth:`Observer.first_token`."""
        self.ttft.labels(model).observe(seconds)

    def downloaded(self, model: str, source: str, n: int) -> None:
        """See :meth:`Observer.downloaded` (prometheus-client counters are thread-safe)."""
        self.download_bytes.labels(model, source).inc(n)


class _SchedulerCollector(Collector):
    """Gauges read from the scheduler's snapshot when Prometheus scrapes."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "plughost_model_queued_requests", "Requests waiting for the model.", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "plughost_model_in_flight_requests", "Requests the model is serving.", labels=["model"]
        )
        state = GaugeMetricFamily(
            "plughost_model_state",
            "1 for the model's current state (available, loading, resident, ...).",
            labels=["model", "state"],
        )
        resident = GaugeMetricFamily(
            "plughost_resident_bytes", "Bytes held by resident and offloaded models, per device.", labels=["device"]
        )
        batches = CounterMetricFamily(
            "plughost_batches", "Batches run by the model's batcher (since it was loaded).", labels=["model"]
        )
        rows = CounterMetricFamily("plughost_batch_rows", "Inputs (rows) in those batches.", labels=["model"])
        real = CounterMetricFamily("plughost_batch_tokens", "Tokens of the inputs in those batches.", labels=["model"])
        padded = CounterMetricFamily(
            "plughost_batch_padded_tokens",
            "rows x longest row summed over batches: 1 - tokens/padded_tokens is the padding waste.",
            labels=["model"],
        )
        per_device: dict[str, int] = defaultdict(int)
        backend_of = getattr(self._scheduler, "backend_of", None)  # a cluster pool has no local backends
        for s in self._scheduler.snapshot():
            backend = backend_of(s.id) if backend_of is not None else None
            stats = backend.batch_stats() if isinstance(backend, Batching) else None
            if stats is not None:
                batches.add_metric([s.id], stats.batches)
                rows.add_metric([s.id], stats.items)
                real.add_metric([s.id], stats.real_tokens)
                padded.add_metric([s.id], stats.padded_tokens)
            queued.add_metric([s.id], s.queued)
            in_flight.add_metric([s.id], s.in_flight)
            state.add_metric([s.id, str(s.state)], 1)
            if s.gpu_bytes and s.device:
                per_device[s.device] += s.gpu_bytes
            if s.host_bytes:
                per_device["cpu"] += s.host_bytes
        for device, value in sorted(per_device.items()):
            resident.add_metric([device], value)
        yield from (queued, in_flight, state, resident, batches, rows, real, padded)

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families are built per scrape (and the scheduler may not exist yet)."""
        return iter(())
