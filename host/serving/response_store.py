"""The stored responses of ``POST /v1/responses`` (``store: true``): bounded, in memory, per key.

A stored response is what ``GET /v1/responses/{id}`` returns and what ``previous_response_id``
continues (its conversation: the input it answered and its output, as domain messages). Each is
visible only to the API key that made it: the owner is a digest of the key the request presented
(``Authorization: Bearer`` or ``x-api-key``), so another key gets 404, as for an id that never
existed. Bounds (``responses:`` in the config): a number of responses, their total size, and an
age; the oldest go first. Nothing survives a restart, and each process (each Ray Serve ingress
replica) has its own store.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from host.contract.domain import ChatMessage
from host.protocol.responses import Response


def owner_of(headers: Mapping[str, str]) -> str:
    """Who a request is, for the store: a digest of its API key (``""`` without one). The key
    itself was checked at the edge (``host.server.security``) when the server has keys."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "").strip()
    return hashlib.sha256(key.encode()).hexdigest() if key else ""


@dataclass(frozen=True)
class Stored:
    """A stored response and the conversation a follow-up continues."""

    owner: str
    response: Response
    conversation: tuple[ChatMessage, ...]
    size: int
    stored_at: float


class ResponseStore:
    """Stored responses, oldest first; see the module docstring. Used on the event loop only."""

    def __init__(
        self, max_items: int, max_bytes: int, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    @property
    def bytes(self) -> int:
        """The stored responses' size (their JSON plus their conversation's text)."""
        return self._bytes

    def put(self, owner: str, response: Response, conversation: tuple[ChatMessage, ...]) -> bool:
        """Keep ``response`` for ``owner``; older ones go when a bound is reached. ``False`` when it
        alone is larger than the whole store (it is then not kept)."""
        size = len(msgspec.json.encode(response)) + sum(_size(m) for m in conversation)
        if size > self.max_bytes or self.max_items < 1:
            return False
        self._drop(response.id)
        self._items[response.id] = Stored(owner, response, conversation, size, self._clock())
        self._bytes += size
        self._expire()
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))
        return True

    def get(self, response_id: str, owner: str) -> Stored | None:
        """The stored response ``response_id`` if ``owner`` made it and it is still kept."""
        self._expire()
        found = self._items.get(response_id)
        return found if found is not None and found.owner == owner else None

    def delete(self, response_id: str, owner: str) -> bool:
        """Forget ``response_id``; ``False`` if ``owner`` has no such response."""
        if self.get(response_id, owner) is None:
            return False
        self._drop(response_id)
        return True

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age_s
        while self._items:
            first = next(iter(self._items.values()))
            if first.stored_at > oldest:
                break
            self._drop(first.response.id)

    def _drop(self, response_id: str) -> None:
        gone = self._items.pop(response_id, None)
        if gone is not None:
            self._bytes -= gone.size


def _size(message: ChatMessage) -> int:
    return len(message.content.encode()) + sum(len(c.arguments) + len(c.name) + len(c.id) for c in message.tool_calls)
