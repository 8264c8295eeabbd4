"""Wire pieces shared by several routes."""

from __future__ import annotations

import msgspec


class Usage(msgspec.Struct):
    """Token accounting of a response."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


class WireRequest(msgspec.Struct, kw_only=True):
    """Base of request bodies: unknown fields are accepted and ignored (clients send extras)."""
