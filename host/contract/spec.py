"""What a plugin declares: models, their task, backend and placements.

Everything here is cheap, immutable data. A declaration never imports torch or touches
weights; the backend named by ``ModelSpec.backend`` is imported only when the scheduler
admits the model.
"""

from __future__ import annotations

import enum
from typing import Annotated, Generic, TypeVar

import msgspec

from host.contract.capabilities import Capabilities

GiB = 1024**3
MiB = 1024**2


class Task(enum.StrEnum):
    """The kind of work a model does; each task is served by its own route."""

    CHAT = "chat"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class PlacementKind(enum.StrEnum):
    """Where a model's weights live while it serves."""

    GPU = "gpu"  # everything on one GPU
    HYBRID = "hybrid"  # part on one GPU, the rest in host RAM
    CPU = "cpu"  # everything in host RAM, computed on the CPU


class Placement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One way to place a model, with the memory it needs there.

    ``gpu_bytes`` must be on the GPU and ``host_bytes`` in host RAM. ``flexible_bytes``
    (hybrid placements) may sit on either: the scheduler puts as much of it on the GPU as
    the budget allows and the rest in host RAM, and tells the backend its GPU share.
    """

    kind: PlacementKind
    gpu_bytes: int = 0
    host_bytes: int = 0
    flexible_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Bytes the model holds wherever they land."""
        return self.gpu_bytes + self.host_bytes + self.flexible_bytes


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of a plugin's typed backend options: its fields, with their defaults, are the options.

    ``models.<id>.options`` in plugins.yaml is converted into the subclass once
    (:meth:`host.contract.config.HostConfig.model_options`); an unknown key or a wrong type is a config
    error naming ``models.<id>.options.<key>``.
    """


#: Option field types with their range checked when the config is read.
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]

#: The options type of a :class:`ModelSpec` (``ModelSpec[ChatOptions]``).
O_co = TypeVar("O_co", bound=Options, covariant=True)


class ModelSpec(msgspec.Struct, Generic[O_co], frozen=True, kw_only=True):
    """A plugin's declaration of one model it can serve, generic over its options type.

    A backend takes ``spec: ModelSpec[MyOptions]`` and reads ``spec.options.my_field`` typed.

    :ivar id: the name clients send as ``model``.
    :ivar task: which route serves it.
    :ivar backend: import string ``"package.module:Class"`` of its backend, imported on admission.
    :ivar placements: ways to place it, in order of preference.
    :ivar aliases: other names clients may use.
    :ivar weights: where the weights are: a local folder, a hub id or ``demo:<ref>``; the host resolves
        ``models.<id>.weights`` (relative folders against the config file) before the plugin sees it
        (:meth:`host.contract.config.HostConfig.model_weights`), so sizing and loading read the same folder.
    :ivar options: the backend's options, an :class:`Options` subclass with ``models.<id>.options`` applied
        (:meth:`host.contract.config.HostConfig.model_options`).
    :ivar capabilities: what the model honours beyond a plain request of its task (tools, output
        formats, logprobs, raw prompts, thinking) and its context length; the host answers 400 for the
        rest before the backend sees a request, and ``GET /v1/models`` reports them.
    :ivar offload_bytes: host RAM it holds when parked off the GPU (``None``: it cannot be offloaded).
    :ivar description: one line for ``GET /v1/models``.
    :ivar demo: import string ``"package.module:NAME"`` of the :class:`host.demo.DemoModel` the demo
        profile serves in its place (imported only when the demo is built or sized).
    """

    id: str
    task: Task
    backend: str
    placements: tuple[Placement, ...]
    aliases: tuple[str, ...] = ()
    weights: str | None = None
    options: O_co = msgspec.field(default_factory=Options)  # type: ignore[assignment]  # the base: no options
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    offload_bytes: int | None = None
    description: str = ""
    demo: str | None = None

    def __post_init__(self) -> None:
        if not self.placements:
            raise ValueError(f"model {self.id!r} declares no placements")
        if ":" not in self.backend:
            raise ValueError(f"model {self.id!r}: backend must be 'module:Class', got {self.backend!r}")
        if self.demo is not None and ":" not in self.demo:
            raise ValueError(f"model {self.id!r}: demo must be 'module:NAME', got {self.demo!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The id followed by every alias."""
        return (self.id, *self.aliases)


class Grant(msgspec.Struct, frozen=True):
    """The scheduler's answer to a backend: where to load and how much memory it may use.

    ``device`` is ``"cuda:N"`` or ``"cpu"``; for a hybrid placement ``gpu_bytes`` is the
    GPU share the backend may fill (layers beyond it go to host RAM). ``parked`` marks an
    offload: the weights only wait in host RAM (``offload_bytes``) and serve nothing there.
    """

    placement: PlacementKind
    device: str
    gpu_bytes: int
    host_bytes: int
    parked: bool = False
