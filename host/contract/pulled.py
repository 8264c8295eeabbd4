"""The layout of ``download.dir`` as readers see it: one complete folder per hub repository.

``plughost pull`` (:mod:`host.downloads.store`) writes ``<dir>/<owner>--<name>/`` in one rename,
with ``.plughost-pull.json`` recording what it is. The configuration reads it here to resolve a hub
id to its folder (cheap: a ``stat`` and a small JSON file), so declarations size and load the
pulled weights without knowing how they were fetched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

#: The manifest of a complete folder.
MANIFEST = ".plughost-pull.json"


def folder_name(repo: str) -> str:
    """``Qwen/Qwen3-Embedding-0.6B`` → ``Qwen--Qwen3-Embedding-0.6B``."""
    return repo.replace("/", "--")


@dataclass(frozen=True)
class Installed:
    """A complete pulled folder and what its manifest says."""

    folder: Path
    repo: str
    source: str
    revision: str
    commit: str | None
    bytes: int
    files: int
    pulled_at: float

    def holds(self, repo: str, revision: str | None) -> bool:
        """Whether this folder holds ``repo`` at ``revision`` (any revision when ``None``)."""
        if repo != self.repo:
            return False
        return (
            revision is None
            or revision == self.revision
            or (self.commit is not None and self.commit.startswith(revision))
        )


def read_installed(folder: Path) -> Installed | None:
    """The manifest of a complete folder (``None``: not a complete pulled folder)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return Installed(
            folder=folder,
            repo=str(data["repo"]),
            source=str(data["source"]),
            revision=str(data["revision"]),
            commit=data.get("commit"),
            bytes=int(data["bytes"]),
            files=len(data.get("files") or ()),
            pulled_at=float(data.get("pulled_at") or 0),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_installed(root: Path, repo: str, revision: str | None = None) -> Installed | None:
    """The complete folder of ``repo`` (at ``revision``, when one is pinned) under ``root``."""
    found = read_installed(Path(root) / folder_name(repo))
    return found if found is not None and found.holds(repo, revision) else None


def repo_of_folder(root: Path, value: str) -> str | None:
    """The repository of a complete folder directly under ``root`` (``None`` for any other path)."""
    path = Path(os.path.expanduser(value))
    if path.parent != Path(root):
        return None
    found = read_installed(path)
    return found.repo if found is not None else None
