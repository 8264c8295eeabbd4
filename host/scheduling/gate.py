"""What the scheduler asks before it loads a model: are its weights on this machine?

:class:`host.downloads.manager.Downloads` is the app's gate; the default lets every model through
unchanged (scheduler tests, embedders that manage weights themselves).
"""

from __future__ import annotations

from typing import Protocol

from host.contract.spec import ModelSpec
from host.registry import RegisteredModel


class WeightsGate(Protocol):
    """Answers before a load: wait for, or refuse, a model whose weights are not on disk."""

    async def ensure(self, model: RegisteredModel) -> None:
        """Return once ``model``'s weights are on disk; raise a ``PlughostError`` (503) otherwise.

        Awaited inside ``acquire()`` before the request queues for admission, so waiting here is
        waiting for the model, and a client that leaves cancels only its own wait."""

    def spec_to_load(self, model: RegisteredModel) -> ModelSpec:
        """The declaration the backend is built from (its weights resolved to a folder on disk)."""


class OpenGate:
    """Every model passes as declared."""

    async def ensure(self, model: RegisteredModel) -> None:
        """Nothing to wait for."""

    def spec_to_load(self, model: RegisteredModel) -> ModelSpec:
        """``model.spec`` unchanged."""
        return model.spec


OPEN_GATE = OpenGate()
