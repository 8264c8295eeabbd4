"""``GET /metrics``: the app's Prometheus metrics (text exposition format)."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State

from host.metrics import CONTENT_TYPE


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics(state: State) -> Response[bytes]:
    """Requests, latency, models' states and transitions, tokens (see ``docs/deployment.md``)."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
