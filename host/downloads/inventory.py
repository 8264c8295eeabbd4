"""Where a model's weights stand on this machine: what ``plughost models`` prints and the
``weights`` object of each ``GET /v1/models`` card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from host.demo import is_demo
from host.downloads.store import ModelStore

if TYPE_CHECKING:
    from host.downloads.pull import PullProgress
    from host.registry import RegisteredModel

WeightsState = Literal["on_disk", "hub_cache", "local", "demo", "absent", "downloading", "failed", "none"]


class WeightsInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model's weights: ``state`` and, where they apply, the hub reference, folder, size and progress.

    ``state``: ``on_disk`` (pulled into ``download.dir``), ``hub_cache`` (found in the Hugging Face
    cache), ``local`` (a configured folder), ``demo`` (the random-weight stand-in serves; ``repo`` is
    what ``plughost pull`` would fetch), ``absent`` (not on this machine), ``downloading`` (with
    ``percent``, ``done_bytes``, ``total_bytes``, ``bytes_per_s``, ``eta_s``), ``failed`` (the last
    download failed), ``none`` (no weights configured).
    """

    state: WeightsState
    repo: str | None = None
    source: str | None = None
    revision: str | None = None
    commit: str | None = None
    path: str | None = None
    bytes: int | None = None
    percent: float | None = None
    done_bytes: int | None = None
    total_bytes: int | None = None
    bytes_per_s: float | None = None
    eta_s: float | None = None
    error: str | None = None


def _hub_cache_folder(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a core dependency
        return None
    found = try_to_load_from_cache(repo, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _folder_bytes(folder: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return None


def weights_info(model: RegisteredModel, store: ModelStore) -> WeightsInfo:
    """Where ``model``'s weights are (no network: the store, the hub cache, the configured folder)."""
    ref = model.weights_ref
    weights = model.spec.weights
    repo = ref.repo if ref is not None else None
    if ref is not None and (installed := store.installed(ref)) is not None:
        state: WeightsState = "demo" if weights is not None and is_demo(weights) else "on_disk"
        return WeightsInfo(
            state=state,
            repo=repo,
            source=installed.source,
            revision=installed.revision,
            commit=installed.commit,
            path=str(installed.folder),
            bytes=installed.bytes,
        )
    if weights is None:
        return WeightsInfo(state="none")
    if is_demo(weights):
        return WeightsInfo(state="demo", repo=repo, source=ref.source if ref else None)
    if ref is not None:
        cached = _hub_cache_folder(ref.repo)
        if cached is not None:
            return WeightsInfo(state="hub_cache", repo=repo, source="huggingface", path=str(cached))
        return WeightsInfo(state="absent", repo=repo, source=ref.source, revision=ref.revision)
    folder = Path(weights)
    if folder.is_dir():
        return WeightsInfo(state="local", path=str(folder), bytes=_folder_bytes(folder))
    return WeightsInfo(state="absent", path=str(folder))


def with_progress(info: WeightsInfo, progress: PullProgress) -> WeightsInfo:
    """``info`` while a pull runs (or after it failed)."""
    if progress.state == "failed":
        return msgspec.structs.replace(info, state="failed", error=progress.error)
    if progress.state == "done":
        return info
    return msgspec.structs.replace(
        info,
        state="downloading",
        source=progress.source or info.source,
        percent=progress.percent,
        done_bytes=progress.done_bytes,
        total_bytes=progress.total_bytes,
        bytes_per_s=round(progress.bytes_per_s, 1),
        eta_s=None if progress.eta_s is None else round(progress.eta_s, 1),
    )
