"""Demo models: random-weight stand-ins of the real architectures, built offline by their plugins.

A plugin names its stand-in in its declaration (``ModelSpec.demo = "package.module:NAME"``, an
import string like ``ModelSpec.backend``); ``NAME`` is a :class:`DemoModel`. The host builds it
only when the demo profile serves it (or peeks its ``config.json`` essentials to size it); the
weights value of a stand-in is ``demo:<import string>``.

This package holds what every stand-in shares: the tokenizer and its corpus
(:mod:`host.demo.tokenizer`), the chat template (:mod:`host.demo.chat_template`), shapes and the
generic build steps (:mod:`host.demo.shapes`) and the on-disk cache (:mod:`host.demo.cache`).
Importing it is cheap: torch and transformers are imported by the build steps only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.demo.cache import cached_build
from host.demo.shapes import TinyShape

#: Prefix of a ``weights`` value naming a demo model by its import string.
DEMO_PREFIX = "demo:"


@dataclass(frozen=True)
class DemoModel:
    """A stand-in a plugin can build: ``build(folder, shape, seed)`` writes a model folder.

    :ivar name: the cache folder's prefix (``qwen2-awq``).
    :ivar build: writes the Hugging Face model folder of ``shape`` and ``seed``.
    :ivar config: the ``config.json`` essentials of ``shape`` without building (no torch).
    :ivar shape: the architecture sizes (a tiny preset by default).
    :ivar seed: the random weights' seed.
    :ivar version: bump it whenever ``build`` produces something different (part of the cache key).
    """

    name: str
    build: Callable[[Path, TinyShape, int], None]
    config: Callable[[TinyShape], dict[str, Any]]
    shape: TinyShape
    seed: int = 0
    version: int = 1

    def with_shape(self, shape: TinyShape, seed: int | None = None) -> DemoModel:
        """The same stand-in at another shape (benchmarks use the real models' shapes)."""
        return dataclasses.replace(self, shape=shape, seed=self.seed if seed is None else seed)

    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` essentials, for sizing (nothing is built)."""
        return self.config(self.shape)

    def folder(self, root: Path | None = None) -> Path:
        """The built model folder (cached on disk; built on first use)."""
        key = {
            "name": self.name,
            "builder": f"{self.build.__module__}.{self.build.__qualname__}",
            "shape": dataclasses.asdict(self.shape),
            "seed": self.seed,
            "version": self.version,
        }
        return cached_build(self.name, lambda dest: self.build(dest, self.shape, self.seed), key, root)


def load_demo(ref: str) -> DemoModel:
    """The :class:`DemoModel` named by ``"package.module:NAME"`` (imports that module)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a demo model is named 'package.module:NAME', got {ref!r}")
    found = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(found, DemoModel):
        raise ValueError(f"{ref!r} is not a host.demo.DemoModel (got {type(found).__name__})")
    return found


def demo_weights(ref: str) -> str:
    """The ``weights`` value that serves the demo model ``ref``."""
    return DEMO_PREFIX + ref


def is_demo(weights: str) -> bool:
    """Whether ``weights`` names a demo model."""
    return weights.startswith(DEMO_PREFIX)
