"""``GET /metrics``: the app's Prometheus metrics (text exposition format)."""

from __future__ import annotations

from litestar import Response, get

from host.contract.errors import NotFound
from host.metrics import CONTENT_TYPE, Metrics
from host.routes.deps import MetricsDep


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics(metrics: MetricsDep) -> Response[bytes]:
    """Requests, latency, models' states and transitions, tokens (see ``docs/deployment.md``)."""
    if not isinstance(metrics, Metrics):
        raise NotFound("This app has no metrics.")
    return Response(metrics.render(), media_type=CONTENT_TYPE)
