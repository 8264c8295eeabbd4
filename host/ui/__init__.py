"""The dashboard at ``/ui``: one page and its assets, shipped in this package and served by the host.

No build step and nothing from other origins: plain ES modules, a stylesheet and an SVG icon under
``static/``, read once when the app is built. The page reads the API the host already serves
(``/v1/models``, the model routes) plus :mod:`host.ui.overview` (budgets per device, live rates).
"""

from __future__ import annotations

from host.ui.assets import Assets, LandingPage, add_security_headers, security_headers
from host.ui.history import History, Point
from host.ui.overview import Dashboard, Device, Features, Overview

__all__ = [
    "Assets",
    "Dashboard",
    "Device",
    "Features",
    "History",
    "LandingPage",
    "Overview",
    "Point",
    "add_security_headers",
    "security_headers",
]
