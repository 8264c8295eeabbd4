"""The dashboard: ``GET /ui`` (the page), its files, and ``GET /ui/api/overview``.

The landing page at ``/`` is :class:`host.ui.assets.LandingPage`; the security headers of all of
them are added by :func:`host.ui.assets.add_security_headers`. The page and its files hold no data
and are answered without an API key (the page asks for one); the overview, like every API route,
needs the key when ``server.api_keys`` is set. Registered only when ``server.ui`` is on.
"""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.params import FromPath

from host.contract.errors import NotFound
from host.routes.deps import DashboardDep, SchedulerDep
from host.server.openapi import COMMON_ERRORS
from host.ui import Overview
from host.ui.assets import Asset

#: The page's files: open without a key (:data:`host.server.security.OPEN_PREFIXES`).
ASSETS_PATH = "/ui/assets"


def _file(asset: Asset | None, request: Request) -> Response[bytes]:
    if asset is None:
        raise NotFound(f"No such file: {request.url.path}")
    headers = {"ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@get("/ui", include_in_schema=False, sync_to_thread=False)
def page(dashboard: DashboardDep, request: Request) -> Response[bytes]:
    """The dashboard page."""
    return _file(dashboard.assets.get("index.html"), request)


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def asset(dashboard: DashboardDep, request: Request, name: FromPath[str]) -> Response[bytes]:
    """One of the page's scripts, its stylesheet or its icon."""
    return _file(dashboard.assets.get(name), request)


@get("/ui/api/overview", responses=COMMON_ERRORS, sync_to_thread=False)
def overview(dashboard: DashboardDep, scheduler: SchedulerDep) -> Overview:
    """Memory budgets per device with the bytes models hold, the live rates of the last minutes, the
    demo models and the actions this server offers (what the dashboard shows beside ``/v1/models``)."""
    return dashboard.overview(scheduler)


UI_ROUTES = [page, asset, overview]
