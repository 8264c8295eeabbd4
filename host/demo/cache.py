"""The on-disk cache of demo models: one folder per (builder, shape, seed, versions).

Folders live in ``$PLUGHOST_CACHE_DIR`` or ``~/.cache/plughost/demo`` (shared by every checkout
on the machine). A model is built in a temporary sibling folder and renamed into place, so
concurrent processes never see a half-built model; the loser of a race drops its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Bumped whenever what the host's demo steps produce changes (tokenizer, shapes, configs); part of
#: every cache key. 2: the models moved from ``host.testing.tiny_models`` into the plugins.
CACHE_VERSION = 2


def default_cache_root() -> Path:
    """``$PLUGHOST_CACHE_DIR`` if set, else ``~/.cache/plughost/demo``."""
    env = os.environ.get("PLUGHOST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "plughost" / "demo"


def cached_build(name: str, build: Callable[[Path], None], key: dict[str, Any], root: Path | None = None) -> Path:
    """The folder ``root/<name>-<hash of key>``, built by ``build(folder)`` on first use.

    ``key`` must cover everything the folder depends on (the builder's version included);
    :data:`CACHE_VERSION` is added to it. The key is written to ``demo_model.json`` in the folder.
    """
    root = Path(root) if root is not None else default_cache_root()
    text = json.dumps({**key, "cache_version": CACHE_VERSION}, sort_keys=True)
    final = root / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        build(tmp)
        (tmp / "demo_model.json").write_text(text + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
