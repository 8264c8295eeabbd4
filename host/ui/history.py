"""The dashboard's live figures: the host's own metrics sampled every few seconds into a short history.

Prometheus counters only grow; a chart wants rates. :class:`History` reads the app's
:class:`~host.metrics.Metrics` (requests, tokens, time to first token) and the pool's snapshot (queue
depth, in-flight requests) every ``interval_s`` and keeps the rates between consecutive samples for
the last ``window_s``, so a page opened now shows the last minutes at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable

import msgspec
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from host.metrics import Metrics
from host.scheduling.status import ModelStatus

#: Routes whose POSTs are not model work: the dashboard's own calls and model management.
_NOT_WORK = ("/ui", "/v1/models")


class Point(msgspec.Struct, kw_only=True):
    """The figures of one interval, ending at ``t`` (Unix seconds)."""

    t: float
    requests_per_s: float  #: POSTs answered that ran a model (chat, completions, embeddings, rerank)
    generated_tokens_per_s: float
    prompt_tokens_per_s: float
    ttft_s: float | None  #: mean time to first token of the streams that started in the interval
    queued: int  #: requests waiting for a model, all models, at ``t``
    in_flight: int  #: requests being served, at ``t``


class Totals(msgspec.Struct, frozen=True):
    """Counter values at one moment."""

    requests: float
    generated: float
    prompt: float
    ttft_sum: float
    ttft_count: float


def totals(metrics: Metrics) -> Totals:
    """The counters :class:`Point` is computed from, summed over their labels."""
    requests = sum(
        s.value
        for s in _samples(metrics.requests.collect(), "_total")
        if s.labels["method"] == "POST"
        and s.labels["route"] != "unmatched"
        and not s.labels["route"].startswith(_NOT_WORK)
    )
    return Totals(
        requests=requests,
        generated=sum(s.value for s in _samples(metrics.generated_tokens.collect(), "_total")),
        prompt=sum(s.value for s in _samples(metrics.prompt_tokens.collect(), "_total")),
        ttft_sum=sum(s.value for s in _samples(metrics.ttft.collect(), "_sum")),
        ttft_count=sum(s.value for s in _samples(metrics.ttft.collect(), "_count")),
    )


def _samples(families: Iterable[Metric], suffix: str) -> Iterable[Sample]:
    for family in families:
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample


class History:
    """Rates between samples of the app's metrics, for the last ``window_s`` seconds."""

    def __init__(
        self,
        metrics: Metrics,
        snapshot: Callable[[], list[ModelStatus]],
        *,
        interval_s: float = 2.0,
        window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.window_s = window_s
        self.points: collections.deque[Point] = collections.deque(maxlen=max(1, int(window_s / interval_s)))
        self._clock = clock
        self._last: tuple[float, Totals] | None = None

    def sample(self) -> Point | None:
        """Read the metrics now and append the interval since the previous sample (none the first time)."""
        now, current = self._clock(), totals(self.metrics)
        last, self._last = self._last, (now, current)
        if last is None or now <= last[0]:
            return None
        then, before = last
        span = now - then
        models = self.snapshot()
        ttft_count = current.ttft_count - before.ttft_count
        point = Point(
            t=now,
            requests_per_s=(current.requests - before.requests) / span,
            generated_tokens_per_s=(current.generated - before.generated) / span,
            prompt_tokens_per_s=(current.prompt - before.prompt) / span,
            ttft_s=(current.ttft_sum - before.ttft_sum) / ttft_count if ttft_count > 0 else None,
            queued=sum(m.queued for m in models),
            in_flight=sum(m.in_flight for m in models),
        )
        self.points.append(point)
        return point

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Sample every ``interval_s`` while the context is open (the app's lifespan)."""

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self.interval_s)

        task = asyncio.get_running_loop().create_task(loop(), name="plughost-ui-history")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
