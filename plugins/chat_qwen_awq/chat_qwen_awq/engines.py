"""``options.engine: auto`` with a vLLM environment: vLLM where the model sits wholly on a CUDA GPU,
the plugin's own engine everywhere else (split between GPU and host RAM, or on the CPU).

:class:`AutoChatBackend` picks the engine for each grant and hands every call to it. If vLLM
fails to start on a GPU grant, the plugin's engine serves that grant instead (the GPU placement
is sized for vLLM, which needs more than the plugin's engine). Offloading to host RAM stays with
the engine that serves; re-admission onto a placement the other engine serves switches engines
(the checkpoint is read again).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from chat_qwen_awq.sizing import ChatOptions
from host.sdk import ChatDelta, ChatRequest, Grant, ModelSpec, PlacementKind, ShuttingDown, TokenizerEndpoints

log = logging.getLogger("plughost.chat_qwen_awq")


def wants_vllm(grant: Grant) -> bool:
    """Whether vLLM serves ``grant``: the whole model on one CUDA GPU."""
    return grant.placement == PlacementKind.GPU and grant.device.startswith("cuda") and not grant.parked


class AutoChatBackend(TokenizerEndpoints):
    """Serves with vLLM or the plugin's engine, per grant (see the module docstring)."""

    def __init__(self, spec: ModelSpec[ChatOptions]) -> None:
        self.spec = spec
        self.inner: Any = None  # a QwenAwqChatBackend or a VllmChatBackend

    @property
    def engine_name(self) -> str:
        """``vllm``, ``plughost`` or ``none`` (not loaded)."""
        from chat_qwen_awq.vllm_backend import VllmChatBackend

        if self.inner is None:
            return "none"
        return "vllm" if isinstance(self.inner, VllmChatBackend) else "plughost"

    def load(self, grant: Grant) -> None:
        """Load the engine that serves ``grant``."""
        if wants_vllm(grant):
            from chat_qwen_awq.vllm_backend import VllmChatBackend

            self.inner = VllmChatBackend(self.spec)
            try:
                self.inner.load(grant)
                return
            except Exception:
                log.exception("%s: vLLM did not start on %s; the plugin's engine serves", self.spec.id, grant.device)
                self.inner.unload()
                self.inner = None
        from chat_qwen_awq.backend import QwenAwqChatBackend

        self.inner = QwenAwqChatBackend(self.spec)
        self.inner.load(grant)

    def unload(self) -> None:
        """Unload whichever engine serves."""
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.unload()

    def abort(self) -> None:
        """End every running generation now (shutdown deadline)."""
        if self.inner is not None:
            self.inner.abort()

    def relocate(self, grant: Grant) -> None:
        """Move the serving engine (offload, re-admission), or switch engines when the other one serves ``grant``."""
        if self.inner is None:
            raise RuntimeError(f"{self.spec.id} is not loaded")
        if grant.parked or wants_vllm(grant) == (self.engine_name == "vllm"):
            self.inner.relocate(grant)
            return
        log.info("%s: switching engines for %s on %s", self.spec.id, grant.placement, grant.device)
        self.unload()
        self.load(grant)

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The serving engine's prompt ids of ``request`` (token counting; both engines render alike)."""
        if self.inner is None:
            raise ShuttingDown(f"{self.spec.id} is not loaded")
        ids: list[int] = await self.inner.prompt_ids(request)
        return ids

    def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """The serving engine's stream (returned as it is, so that closing it closes the engine's)."""
        if self.inner is None:
            raise ShuttingDown(f"{self.spec.id} is not loaded")
        stream: AsyncIterator[ChatDelta] = self.inner.generate(request)
        return stream
