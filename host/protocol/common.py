"""Wire pieces shared by several routes."""

from __future__ import annotations

import msgspec


class WireRequest(msgspec.Struct, kw_only=True):
    """Base of request bodies: unknown fields are accepted and ignored (clients send extras)."""
