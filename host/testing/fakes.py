"""Deterministic fake backends that run the whole HTTP stack without torch.

Each fake records its life-cycle calls (``load``, ``unload``, ``relocate``) and requests in
a :class:`CallLog` passed through ``ModelSpec.options.calls``. Behaviour is scripted through
typed options (:class:`FakeOptions`): ``load_delay_s``, ``fail_loads`` (number of loads that
raise), ``token_delay_s``, ``dim``, ``context``; a test's own backend reads anything else from
``options.script``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from host import hookimpl
from host.contract.capabilities import Capabilities
from host.contract.config import HostConfig
from host.contract.domain import (
    ChatDelta,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    RerankRequest,
    RerankResult,
)
from host.contract.errors import InvalidRequest
from host.contract.spec import GiB, Grant, ModelSpec, Options, Placement, PlacementKind, Task


class CallLog:
    """Thread-safe record of ``(event, model, detail)`` tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, Any]] = []

    def add(self, event: str, model: str, detail: Any = None) -> None:
        """Record one call."""
        with self._lock:
            self.events.append((event, model, detail))

    def of(self, event: str, model: str | None = None) -> list[Any]:
        """Details of the recorded ``event`` calls (for ``model`` if given)."""
        with self._lock:
            return [d for e, m, d in self.events if e == event and (model is None or m == model)]

    def count(self, event: str, model: str | None = None) -> int:
        """How many ``event`` calls were recorded (for ``model`` if given)."""
        return len(self.of(event, model))


class FakeOptions(Options, frozen=True):
    """How a fake behaves (``fake_spec(..., load_delay_s=1)``); ``models.<id>.options`` can set these too.

    :ivar fail_loads: a one-element list, the number of loads that raise (a list so tests can change it).
    :ivar calls: the :class:`CallLog` the fake records into.
    :ivar script: anything else a test's own fake backend reads (callables, counters, flags).
    """

    load_delay_s: float = 0
    relocate_delay_s: float = 0
    token_delay_s: float = 0
    fail_loads: list[int] | None = None
    dim: int = 8
    context: int = 4096
    fail: str | None = None
    calls: Any = None
    script: dict[str, Any] = msgspec.field(default_factory=dict)


class FakeBackend:
    """Shared life cycle of the fakes."""

    def __init__(self, spec: ModelSpec[FakeOptions]) -> None:
        self.spec = spec
        self.options = spec.options
        self.script = spec.options.script
        self.calls: CallLog = self.options.calls or CallLog()
        self.grant: Grant | None = None

    def load(self, grant: Grant) -> None:
        """Record the load; sleep ``load_delay_s``; raise while ``fail_loads`` remain."""
        self.calls.add("load", self.spec.id, grant)
        time.sleep(self.options.load_delay_s)
        failures = self.options.fail_loads
        if failures is not None and failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError(f"scripted load failure of {self.spec.id}")
        self.grant = grant

    def unload(self) -> None:
        """Record the unload."""
        self.calls.add("unload", self.spec.id)
        self.grant = None

    def relocate(self, grant: Grant) -> None:
        """Record a move between placements (offload/re-admission)."""
        self.calls.add("relocate", self.spec.id, grant)
        time.sleep(self.options.relocate_delay_s)
        self.grant = grant


def _words(text: str) -> list[str]:
    return text.split()


def _prompt_tokens(request: ChatRequest) -> int:
    """The echo model's prompt tokens: words (+ 1 per message), or the raw prompt's words."""
    if request.prompt is not None:  # a raw completion: the prompt is the text to echo
        return len(_words(request.prompt))
    return sum(len(_words(m.content)) + 1 for m in request.messages)


class FakeChatBackend(FakeBackend):
    """Replies ``"echo: <last user message>"`` word by word, honouring max_tokens and stop.

    It declares raw prompts only (:data:`ECHO_CAPABILITIES`): the host refuses tools, output
    formats and logprobs before a request reaches it."""

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """One id per prompt token (:class:`~host.contract.backend.PromptTokens`)."""
        self.calls.add("prompt_ids", self.spec.id, request)
        return list(range(_prompt_tokens(request)))

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Stream the echo; prompt tokens = words in all messages."""
        self.calls.add("generate", self.spec.id, request)
        prompt_tokens = _prompt_tokens(request)
        context = self.options.context
        max_tokens = request.sampling.max_tokens or 64
        if prompt_tokens + max_tokens > context:
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} "
                f"and max_tokens is {max_tokens}.",
                param="max_tokens",
            )
        last_user = request.prompt or next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = ["echo:", *_words(last_user)]
        text = ""
        delay = self.options.token_delay_s
        for i, word in enumerate(words):
            if i >= max_tokens:
                yield ChatDelta(finish_reason="length", prompt_tokens=prompt_tokens, completion_tokens=i)
                return
            piece = word if i == 0 else " " + word
            for stop in request.sampling.stop:
                if stop in text + piece:
                    cut = (text + piece).index(stop)
                    yield ChatDelta(
                        text=(text + piece)[len(text) : cut],
                        finish_reason="stop",
                        stop_sequence=stop,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=i + 1,
                    )
                    return
            text += piece
            if delay:
                await asyncio.sleep(delay)
            yield ChatDelta(text=piece)
        yield ChatDelta(finish_reason="stop", prompt_tokens=prompt_tokens, completion_tokens=len(words))


class FakeEmbeddingBackend(FakeBackend):
    """Unit vectors derived from a hash of each input (same input → same vector)."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed deterministically; honours ``dimensions`` (truncate, then renormalise)."""
        self.calls.add("embed", self.spec.id, request)
        dim = self.options.dim
        if request.dimensions is not None and request.dimensions > dim:
            raise InvalidRequest(f"dimensions must be at most {dim} for this model.", param="dimensions")
        items = (
            request.texts if request.texts is not None else [" ".join(map(str, ids)) for ids in request.token_ids or ()]
        )
        prefix = "query:" if request.input_type == "query" else ""
        vectors = []
        tokens = 0
        for item in items:
            digest = hashlib.sha256((prefix + item).encode()).digest()
            vec = [(b - 127.5) for b in digest[:dim]]
            if request.dimensions:
                vec = vec[: request.dimensions]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vectors.append([v / norm for v in vec])
            tokens += len(item.split())
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)


class FakeRerankBackend(FakeBackend):
    """Score = share of query words present in the document."""

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Score deterministically in [0, 1]."""
        self.calls.add("rerank", self.spec.id, request)
        query = set(request.query.lower().split())
        scores = []
        for doc in request.documents:
            words = set(doc.lower().split())
            scores.append(len(query & words) / max(1, len(query)))
        tokens = sum(len(request.query.split()) + len(d.split()) for d in request.documents)
        return RerankResult(scores=scores, prompt_tokens=tokens)


#: What the fake chat model honours: raw prompts (it echoes them), nothing else.
ECHO_CAPABILITIES = Capabilities(raw_prompt=True)

BACKENDS = {
    Task.CHAT: "host.testing.fakes:FakeChatBackend",
    Task.EMBEDDING: "host.testing.fakes:FakeEmbeddingBackend",
    Task.RERANK: "host.testing.fakes:FakeRerankBackend",
}


def fake_spec(
    model_id: str,
    task: Task,
    *,
    gpu_bytes: int = 0,
    host_bytes: int = 1 * GiB,
    placements: tuple[Placement, ...] | None = None,
    offload_bytes: int | None = None,
    aliases: tuple[str, ...] = (),
    calls: CallLog | None = None,
    weights: str | None = None,
    capabilities: Capabilities | None = None,
    **options: Any,
) -> ModelSpec[FakeOptions]:
    """A real :class:`ModelSpec` served by the fake backend of ``task``.

    Without ``placements``: a GPU placement of ``gpu_bytes`` if given, then a CPU one of ``host_bytes``.
    ``options`` are :class:`FakeOptions` fields; other keywords go to ``FakeOptions.script``. Chat
    models declare :data:`ECHO_CAPABILITIES` (with their ``context``) unless ``capabilities`` is given.
    """
    if placements is None:
        placements = ((Placement(kind=PlacementKind.GPU, gpu_bytes=gpu_bytes),) if gpu_bytes else ()) + (
            Placement(kind=PlacementKind.CPU, host_bytes=host_bytes),
        )
    return ModelSpec(
        id=model_id,
        task=task,
        backend=BACKENDS[task],
        placements=placements,
        aliases=aliases,
        weights=weights,
        offload_bytes=offload_bytes,
        options=fake_options(calls=calls or CallLog(), **options),
        capabilities=capabilities or _default_capabilities(task, options),
        description=f"fake {task} model",
    )


def fake_options(**options: Any) -> FakeOptions:
    """:class:`FakeOptions` from keywords: its fields, and every other keyword in ``script``."""
    fields = set(FakeOptions.__struct_fields__)
    script = {k: v for k, v in options.items() if k not in fields}
    return FakeOptions(**{k: v for k, v in options.items() if k in fields}, script=script)


def _default_capabilities(task: Task, options: dict[str, Any]) -> Capabilities:
    if task != Task.CHAT:
        return Capabilities()
    return msgspec.structs.replace(ECHO_CAPABILITIES, context_length=int(options.get("context", 4096)))


class FakePlugin:
    """A plugin object declaring fake models; pass it to ``create_app(plugins=[...])``."""

    def __init__(self, specs: list[ModelSpec] | None = None, name: str = "fakes") -> None:
        self.name = name
        self.calls = CallLog()
        self.specs = [
            msgspec.structs.replace(s, options=msgspec.structs.replace(s.options, calls=self.calls))
            for s in specs
            or [
                fake_spec("fake-chat", Task.CHAT),
                fake_spec("fake-embed", Task.EMBEDDING),
                fake_spec("fake-rerank", Task.RERANK),
            ]
        ]

    @hookimpl
    def register_models(self, config: HostConfig) -> list[ModelSpec[FakeOptions]]:
        """Declare the fake models, with ``models.<id>.options`` applied over their scripted options."""
        return [_configured(spec, config) for spec in self.specs]


class FailingChatBackend(FakeBackend):
    """Streams two words, then fails: with InvalidRequest (option ``fail: "invalid"``) or a bug (``"crash"``)."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Yield ``"partial"``, ``" answer"``, then raise."""
        self.calls.add("generate", self.spec.id, request)
        yield ChatDelta(text="partial")
        yield ChatDelta(text=" answer")
        if self.options.fail == "invalid":
            raise InvalidRequest("The conversation grew past the context window.", param="messages")
        raise RuntimeError("CUDA error: device-side assert triggered")


def _configured(spec: ModelSpec[FakeOptions], config: HostConfig) -> ModelSpec[FakeOptions]:
    """``spec`` with the options ``plugins.yaml`` sets for it (a typo is a config error, as for real plugins)."""
    configured = config.model(spec.id).options
    if not configured:
        return spec
    merged = config.model_options(spec.id, FakeOptions)  # checks the keys and types
    fields = {k: getattr(merged, k) for k in configured}
    return msgspec.structs.replace(spec, options=msgspec.structs.replace(spec.options, **fields))


def failing_chat_spec(model_id: str, fail: str) -> ModelSpec[FakeOptions]:
    """A fake chat model served by :class:`FailingChatBackend`; ``fail`` is ``"invalid"`` or ``"crash"``."""
    spec = fake_spec(model_id, Task.CHAT, fail=fail)
    return msgspec.structs.replace(spec, backend="host.testing.fakes:FailingChatBackend")
