"""Chat serving: one service behind every chat-like route, whatever its API dialect.

A route decodes its body into a :class:`Dialect` (Chat Completions, legacy Completions, Anthropic
Messages, ...) and calls :meth:`ChatService.respond` (or :meth:`ChatService.prompt_tokens` to count
a prompt without generating). The service owns the rest: the capability check (a 400 naming
the dialect's own field before any model is touched), the lease (through :class:`Generation`),
``n`` choices, the answer or the stream (keep-alive comments while the model is admitted, errors
as the dialect's error event with the same code as a JSON error), usage and metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Protocol

from litestar import Response
from litestar.response import Stream

from host.contract.backend import PromptTokens, no_prompt_tokens
from host.contract.capabilities import Feature
from host.contract.domain import ChatRequest
from host.contract.errors import InvalidRequest, PlughostError, client_error
from host.contract.spec import ModelSpec, Task
from host.metrics import NO_METRICS, Observer
from host.registry import ModelRegistry
from host.scheduling.pool import ModelPool
from host.serving import sse
from host.serving.generation import Collected, Generation
from host.serving.schemas import with_closed_schemas

#: How long a streamed request may stay silent before its headers go out (then keep-alives).
HEADERS_AFTER_S = 0.5


class Dialect(Protocol):
    """One API's view of chat: its decoded request, its answer, its stream (a protocol module's job)."""

    @property
    def requests(self) -> Sequence[ChatRequest]:
        """One domain request per choice: ``per_prompt`` choices of each prompt, prompt by prompt."""

    @property
    def per_prompt(self) -> int:
        """Choices per prompt (``n``)."""

    @property
    def stream(self) -> bool:
        """Whether to answer as a stream of events."""

    def param(self, feature: Feature) -> str | None:
        """The request field that asks for ``feature`` in this dialect (named by a 400); ``None``: this
        request asked for it in a way a model without it may ignore (Chat Completions'
        ``chat_template_kwargs.enable_thinking``, passed to a chat template that knows no thinking)."""

    def field(self, param: str | None) -> str | None:
        """A field as this dialect names it, given its Chat Completions name: backends and shared
        checks name fields in Chat Completions terms (``max_tokens``, ``messages[2]``)."""

    def response(self, model: str, results: list[Collected], generation: Generation) -> Any:
        """The whole answer (a msgspec Struct) from every choice's result."""

    def events(self, generation: Generation) -> AsyncIterator[bytes]:
        """The stream's events from the generation's deltas (failures are raised, not rendered)."""

    def error_event(self, error: PlughostError) -> bytes:
        """``error`` as this dialect's error event (sent when a stream fails after its headers)."""

    def end(self) -> bytes:
        """What ends every stream (``data: [DONE]`` for OpenAI's dialects, nothing for others)."""


class ChatService:
    """Answers chat-like requests (see the module docstring). One per app."""

    def __init__(
        self,
        pool: ModelPool,
        registry: ModelRegistry,
        metrics: Observer = NO_METRICS,
        keepalive_s: float = 5.0,
        open_schema_objects: bool = False,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._metrics = metrics
        self._keepalive_s = keepalive_s
        self._open_objects = open_schema_objects  # server.json_schema_objects: open (host.serving.schemas)

    async def respond(self, dialect: Dialect) -> Response[Any] | Stream:
        """The answer to one request, whole or streamed."""
        try:
            return await self._respond(dialect)
        except InvalidRequest as exc:
            exc.param = dialect.field(exc.param)
            raise

    async def _respond(self, dialect: Dialect) -> Response[Any] | Stream:
        arrived = time.perf_counter()
        requests = [with_closed_schemas(r, self._open_objects) for r in dialect.requests]
        spec = self._registry.resolve(requests[0].model, Task.CHAT).spec
        _check(spec, requests[0], dialect.param)
        opening = self._open(requests, dialect.per_prompt, arrived)
        if dialect.stream:
            return await self._stream(opening, dialect)
        generation = await opening
        try:
            results = await generation.collect()
        finally:
            generation.close()
        self._observe(generation)
        return Response(dialect.response(generation.model, results, generation))

    async def prompt_tokens(self, request: ChatRequest, param: Callable[[Feature], str | None]) -> int:
        """Tokens of ``request``'s prompt as its model reads it (chat template and tools included),
        without generating; ``param`` names a dialect's fields for the capability 400. A 400 when the
        model's backend cannot tell (:class:`~host.contract.backend.PromptTokens`)."""
        spec = self._registry.resolve(request.model, Task.CHAT).spec
        _check(spec, request, param)
        with await self._pool.acquire(request.model, Task.CHAT) as lease:
            backend = lease.backend
            if not isinstance(backend, PromptTokens):
                raise no_prompt_tokens(spec.id)
            return len(await backend.prompt_ids(request))

    async def _open(self, requests: Sequence[ChatRequest], per_prompt: int, arrived: float) -> Generation:
        lease = await self._pool.acquire(requests[0].model, Task.CHAT)
        generation = await Generation.start(lease, requests, per_prompt)
        self._metrics.first_token(generation.model, time.perf_counter() - arrived)
        return generation

    def _observe(self, generation: Generation) -> None:
        usage = generation.usage
        self._metrics.tokens(generation.model, usage.prompt_tokens, usage.completion_tokens)

    async def _stream(self, opening: Coroutine[Any, Any, Generation], dialect: Dialect) -> Stream:
        """Headers as soon as the generation starts, or after :data:`HEADERS_AFTER_S` at the latest.

        A request the model or backend rejects within that time is still a JSON error."""
        task = asyncio.ensure_future(opening)
        try:
            done, _ = await asyncio.wait({task}, timeout=HEADERS_AFTER_S)
        except BaseException:
            task.cancel()  # the opening releases whatever it had acquired
            raise
        if done:
            task.result()  # raises: a JSON error
        body = _StreamBody(task, dialect, self._keepalive_s, self._observe)
        return sse.response(body.events(), body.close_after_response)


class _StreamBody:
    """One streamed response: keep-alives until its generation has started, then the dialect's
    events, and the generation closed however the stream ends."""

    def __init__(self, opening: asyncio.Future[Generation], dialect: Dialect, keepalive_s: float, observe: Any) -> None:
        self._opening = opening
        self._dialect = dialect
        self._keepalive_s = keepalive_s
        self._observe = observe

    async def events(self) -> AsyncIterator[bytes]:
        """The bytes of the response body."""
        dialect = self._dialect
        try:
            while not self._opening.done():
                done, _ = await asyncio.wait({self._opening}, timeout=self._keepalive_s)
                if not done:
                    yield sse.KEEPALIVE
            try:
                generation = self._opening.result()
                async for chunk in dialect.events(generation):
                    yield chunk
                self._observe(generation)
            except Exception as exc:
                error = client_error(exc)
                error.param = dialect.field(error.param)
                yield dialect.error_event(error)
            yield dialect.end()
        finally:
            self.close()  # synchronous on purpose: a disconnected client cancels this generator

    def close(self) -> None:
        """Cancel the opening, or close the generation it opened. Idempotent."""
        if not self._opening.done():
            self._opening.cancel()  # the opening releases its own lease when cancelled
        elif not self._opening.cancelled() and self._opening.exception() is None:
            self._opening.result().close()

    async def close_after_response(self) -> None:
        """:meth:`close` as the response's background task (async: it must run on the event loop)."""
        self.close()


def _check(spec: ModelSpec[Any], request: ChatRequest, param: Callable[[Feature], str | None]) -> None:
    """A 400 naming the field when a request (any choice: all ask for the same features) asks for a
    feature the model does not declare (unless the dialect names no field: the model ignores it)."""
    missing = spec.capabilities.missing(request)
    if missing is not None and (name := param(missing)) is not None:
        raise InvalidRequest(f"The model '{spec.id}' does not support {_WHAT[missing]}.", param=name)


_WHAT = {
    Feature.TOOLS: "tools (function calling)",
    Feature.OUTPUT_FORMAT: "this output format (structured outputs)",
    Feature.LOGPROBS: "logprobs",
    Feature.RAW_PROMPT: "raw prompts (text completions without the chat template)",
    Feature.THINKING: "thinking (it is not a reasoning model)",
}
