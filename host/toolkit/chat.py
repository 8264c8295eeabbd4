"""A base for chat backends: the bridge between an engine and the host's async serving.

The chat counterpart of :class:`~host.toolkit.batched.BatchedBackend`. A plugin's backend
subclasses :class:`ChatEngineBackend` and supplies:

- :meth:`~ChatEngineBackend.load_model` and :meth:`~ChatEngineBackend.unload_model`: its weights
  and engine (worker threads; no serving work in them); :meth:`~ChatEngineBackend.move_model` if
  it can move them between placements (offload to host RAM and back);
- :meth:`~ChatEngineBackend.prepare`: on the backend's prepare thread, turn a domain request into
  what its engine takes (render the chat template, tokenise, check the context); client mistakes
  are :class:`~host.contract.errors.InvalidRequest`;
- the tokens, in whichever form its engine gives them: :meth:`~ChatEngineBackend.tokens`, a plain
  *blocking* iterator of deltas (llama.cpp bindings, a transformers streamer, a sync HTTP client),
  run on a thread of its own; or :meth:`~ChatEngineBackend.stream`, an *async* generator (another
  engine's async API, a queue fed by an engine thread: :func:`queued_deltas` reads one).

The base owns the rest: the threads, the bridge from a blocking iterator to the event loop,
cancellation within one token (a client that leaves stops the iterator before its next item, and
the iterator is closed on its own thread), and error mapping (client mistakes stay 4xx; any other
failure is logged and becomes a :class:`~host.contract.errors.BackendError` naming the request id).
``generate`` returns — and the serving layer releases the model's lease — only once the engine has
stopped working for the request. Torch-free; tested with pure-Python backends
(``tests/test_chat_base.py``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from host.contract import request_id
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import BackendError, PlughostError, ShuttingDown, internal_error_message
from host.contract.spec import Grant, ModelSpec

log = logging.getLogger("plughost.chat")

P = TypeVar("P")
T = TypeVar("T")

_END = object()  # the blocking iterator is exhausted (the thread's last item)


async def queued_deltas(queue: asyncio.Queue[Any]) -> AsyncIterator[ChatDelta]:
    """The deltas an engine thread puts on ``queue`` (``call_soon_threadsafe``), until the last one
    (it has a ``finish_reason``); an exception put there is raised."""
    while True:
        item = await queue.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, ChatDelta)
        yield item
        if item.finish_reason is not None:
            return


class ChatEngineBackend(abc.ABC, Generic[P]):
    """Threads, bridge, cancellation and errors of a chat backend; see the module docstring.

    :attr:`max_streams` bounds how many blocking iterators generate at once (one thread each);
    more requests wait for a thread. ``P`` is what :meth:`prepare` returns.
    """

    max_streams = 8

    def __init__(self, spec: ModelSpec[Any]) -> None:
        self.spec = spec
        self.grant: Grant | None = None
        self._prepare_thread: ThreadPoolExecutor | None = None
        self._stream_threads: ThreadPoolExecutor | None = None

    # -- what a plugin supplies -------------------------------------------------------------------
    @abc.abstractmethod
    def load_model(self, grant: Grant) -> None:
        """Load tokenizer, weights and engine where ``grant`` says (a worker thread; raise on failure)."""

    @abc.abstractmethod
    def unload_model(self) -> None:
        """Stop the engine and free every byte (no prepare or blocking iterator runs any more)."""

    def move_model(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant`` without reading them from disk (no request is being
        served). Override it to be offloaded to host RAM instead of unloaded, and declare
        ``ModelSpec.offload_bytes``: the scheduler offloads only models that declare it."""
        raise NotImplementedError(f"{type(self).__name__} cannot move its model; declare no offload_bytes")

    @abc.abstractmethod
    def prepare(self, request: ChatRequest) -> P:
        """What the engine needs for ``request`` (the prepare thread; raise InvalidRequest for bad input)."""

    def tokens(self, prepared: P) -> Iterator[ChatDelta]:
        """The completion as a blocking iterator of deltas, the last with a ``finish_reason`` (run on
        a thread of its own). Implement this or :meth:`stream`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither tokens() nor stream()")

    def stream(self, prepared: P) -> AsyncIterator[ChatDelta]:
        """The completion as an async iterator of deltas; closing it must stop the engine's work for
        it. By default: :meth:`tokens` bridged from its thread."""
        return self._bridge(prepared)

    # -- what the base does -----------------------------------------------------------------------
    def load(self, grant: Grant) -> None:
        """Load the model and start the threads."""
        self.load_model(grant)
        name = self.spec.id
        self._prepare_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-prepare")
        self._stream_threads = ThreadPoolExecutor(self.max_streams, thread_name_prefix=f"{name}-stream")
        self.grant = grant

    def unload(self) -> None:
        """Stop the threads (queued work is dropped; running iterators end at their next item) and
        free the model."""
        for pool in (self._prepare_thread, self._stream_threads):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._prepare_thread = self._stream_threads = None
        self.unload_model()
        self.grant = None

    def relocate(self, grant: Grant) -> None:
        """Move the weights to ``grant`` (:meth:`move_model`)."""
        self.move_model(grant)
        self.grant = grant

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Prepare ``request``, then stream its deltas (see the module docstring)."""
        prepared = await self._prepare(request)
        iterator = aiter(self.stream(prepared))
        try:
            async for delta in iterator:
                yield delta
                if delta.finish_reason is not None:
                    return
        except PlughostError:
            raise
        except Exception as exc:
            raise self._failure("generating", exc) from exc
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _prepare(self, request: ChatRequest) -> P:
        """:meth:`prepare` on the prepare thread, its failures mapped."""
        return await self.on_prepare_thread(self.prepare, request)

    async def on_prepare_thread(self, fn: Callable[[ChatRequest], T], request: ChatRequest) -> T:
        """``fn(request)`` on the prepare thread (where the tokenizer lives), its failures mapped as
        :meth:`prepare`'s are: for work beside generation, such as
        :meth:`~host.contract.backend.PromptTokens.prompt_ids`."""
        try:
            work = self._threads()[0].submit(fn, request)
        except RuntimeError:  # unloaded meanwhile: the pool takes no more work
            raise self._not_loaded() from None
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            if work.cancelled():  # the pool was shut down under it, not this request cancelled
                raise self._not_loaded() from None
            raise
        except PlughostError:
            raise
        except Exception as exc:
            raise self._failure("preparing a request", exc) from exc

    def _threads(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._prepare_thread is None or self._stream_threads is None:
            raise self._not_loaded()
        return self._prepare_thread, self._stream_threads

    def _not_loaded(self) -> ShuttingDown:
        return ShuttingDown(f"{self.spec.id} is not loaded; please retry")

    async def _bridge(self, prepared: P) -> AsyncIterator[ChatDelta]:
        """:meth:`tokens` on a stream thread, its deltas handed to the event loop as they come."""
        threads = self._threads()[1]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            if stop.is_set():  # the consumer left while this waited for a thread
                return
            iterator = iter(self.tokens(prepared))
            try:
                while not stop.is_set():  # the consumer left: not one more step
                    delta = next(iterator, None)
                    if delta is None:
                        put(_END)
                        return
                    put(delta)
                    if delta.finish_reason is not None:
                        return
            except BaseException as exc:
                put(exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()  # a generator's cleanup runs on its own thread

        try:
            work = threads.submit(produce)
        except RuntimeError:  # unloaded meanwhile
            raise self._not_loaded() from None
        future = asyncio.wrap_future(work)
        # Dropped from the pool's queue at unload: nothing will ever be put, so say why here.
        future.add_done_callback(lambda f: queue.put_nowait(self._not_loaded()) if f.cancelled() else None)
        try:
            async for delta in queued_deltas(queue):
                yield delta
        finally:
            stop.set()
            # Returns once the iterator has stopped (within one step): only then may the lease go.
            await asyncio.wait({future})

    def _failure(self, doing: str, exc: Exception) -> BackendError:
        """A failure of the engine, logged with its traceback; the client gets the request id."""
        log.error("%s: %s failed", self.spec.id, doing, exc_info=exc)
        return BackendError(f"{self.spec.id}: {doing} failed. {internal_error_message(request_id.current.get())}")
