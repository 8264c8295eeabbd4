"""Where a model's weights come from: a local folder, a hub id, or a built-in tiny demo model.

``models.<id>.weights`` in ``plugins.yaml`` holds one of:

- a local folder (absolute, ``~/...`` or relative to the working directory), or one local file
  for single-file formats (a ``.gguf``: its metadata is inside, there is no ``config.json``);
- a hub id such as ``Qwen/Qwen3-Embedding-0.6B``: the host resolves it to the folder ``plughost pull``
  put in ``download.dir`` before a backend sees it; here it is only looked up in the Hugging Face
  cache. Nothing here downloads: a request never waits for a download it did not ask for
  (:mod:`host.downloads`);
- ``demo:<package.module:NAME>``: a plugin's random-weight stand-in of the real architecture
  (a :class:`host.demo.DemoModel`), built locally and cached — the demo profile and the tests use
  these (``demo:chat_qwen_awq.demo:TINY_AWQ``, ``demo:embed_qwen3.demo:TINY``, ...).

Every failure names the config key to fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from host.demo import DEMO_PREFIX, is_demo, load_demo

_OLD_TINY_PREFIX = "tiny:"


class WeightsError(RuntimeError):
    """The weights cannot be found or fetched; the message names the config key to fix."""


def _local_dir(weights: str) -> Path | None:
    """The local folder or file ``weights`` names, ``None`` for a hub id."""
    path = Path(os.path.expanduser(weights))
    if path.is_dir() or path.is_file():
        return path
    if path.is_absolute() or weights.startswith((".", "~")) or weights.count("/") != 1:
        return path  # clearly a path (that may not exist)
    return None


def resolve_weights(weights: str | None, *, model_id: str) -> Path:
    """The local folder (or single file) holding ``weights`` (``ModelSpec.weights``; a demo model is
    built if needed, nothing is ever downloaded)."""
    key = f"models.{model_id}.weights"
    if weights is None:
        raise WeightsError(f"{key}: not set. Set it to a local folder or a hub id.")
    if weights.startswith(_OLD_TINY_PREFIX):
        raise WeightsError(
            f"{key}: {weights!r}: the built-in tiny models are now each plugin's demo model; name one as "
            f"'demo:<package.module:NAME>' (e.g. demo:embed_qwen3.demo:TINY)."
        )
    if is_demo(weights):
        try:
            return load_demo(weights[len(DEMO_PREFIX) :]).folder()
        except (ImportError, ValueError) as exc:
            raise WeightsError(f"{key}: {exc}") from None
    local = _local_dir(weights)
    if local is not None:
        problem = weights_problem(str(local))
        if problem is not None:
            raise WeightsError(
                f"{key}: {local} is not a usable model folder ({problem}). Set {key} to a local "
                f"folder with the model's files or to a hub id."
            )
        return local
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise WeightsError(f"{key}: {weights!r} looks like a hub id but huggingface_hub is missing") from exc
    try:
        return Path(snapshot_download(weights, local_files_only=True))  # the cache only: never a download
    except Exception:
        raise WeightsError(
            f"{key}: the weights {weights!r} are not on this machine. Run `plughost pull {model_id}`, set {key} "
            f"to a local folder holding the model, or run the demo profile (demo: true)."
        ) from None


def peek_config(weights: str) -> dict[str, Any] | None:
    """The model's ``config.json`` if it is already on disk (local folder or hub cache); cheap.

    Used by declarations to compute footprints without loading anything. For ``demo:<ref>`` it is
    the demo model's shape (nothing is built). ``None`` when the file is not at hand (a hub id not
    yet downloaded, an unknown demo model).
    """
    if is_demo(weights):
        try:
            return load_demo(weights[len(DEMO_PREFIX) :]).config_dict()
        except (ImportError, ValueError):
            return None
    local = _local_dir(weights)
    if local is not None:
        if local.is_file():
            return None  # a single-file checkpoint: its plugin reads its own metadata
        file = local / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(weights, "config.json")
        if not isinstance(found, str):
            return None
        file = Path(found)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def weights_problem(weights: str) -> str | None:
    """Why configured ``weights`` are broken, or ``None``.

    Broken means: a local path (anything that is clearly a path) that is missing, a folder that has
    no valid ``config.json``, or a hub id whose cached ``config.json`` is not valid JSON (a single
    file that exists is the plugin's to read). A hub id that is
    simply not in the cache is *absent*, not broken (the demo profile may stand in for it).
    """
    if is_demo(weights) or weights.startswith(_OLD_TINY_PREFIX):  # resolve_weights explains the old prefix
        return None
    local = _local_dir(weights)
    if local is not None:
        if local.is_file():
            return None
        file = local / "config.json"
        if not local.is_dir():
            return f"{local} does not exist"
        if not file.is_file():
            return f"{local} has no config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - transformers depends on it
            return None
        found = try_to_load_from_cache(weights, "config.json")
        if not isinstance(found, str):
            return None  # not cached: absent
        file = Path(found)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{file} is not valid JSON ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return f"{file} is not a JSON object"
    return None


def weights_on_disk(weights: str) -> bool:
    """Whether ``weights`` can be loaded without a download (demo models count: they are built
    locally; a single local file counts)."""
    local = _local_dir(weights)
    return (local is not None and local.is_file()) or peek_config(weights) is not None
