"""The models folder (``download.dir``): one complete folder per repository, and its staging area.

::

    <dir>/Qwen--Qwen3-Embedding-0.6B/            a complete, verified model folder
        config.json, model.safetensors, ...
        .plughost-pull.json                      what it is: repo, source, revision, commit, files, size
    <dir>/.staging/Qwen--Qwen3-Embedding-0.6B/   a pull in progress (kept for a resume)
        model.safetensors.incomplete             being downloaded
        config.json                              downloaded and verified
        .plughost-staging.json                   what each file is expected to be
    <dir>/.staging/Qwen--Qwen3-Embedding-0.6B.lock   held by the process pulling it

A folder appears under its name only when every file is downloaded and verified and its manifest is
written: it is renamed into place in one step, so no reader ever sees half a model. Reading the
store is cheap (a ``stat`` and a small JSON file): declarations call it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.contract.pulled import MANIFEST, Installed, find_installed, folder_name, read_installed
from host.downloads.errors import Busy

if TYPE_CHECKING:
    from host.contract.config import WeightsRef
    from host.downloads.hubs import Listing, RemoteFile

STAGING = ".staging"
STAGING_MANIFEST = ".plughost-staging.json"
INCOMPLETE = ".incomplete"


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass
class Staging:
    """A pull in progress: its folder and what each file in it is expected to be."""

    folder: Path
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def final(self, path: str) -> Path:
        """Where a verified file lives in the staging folder."""
        return self.folder / path

    def part(self, path: str) -> Path:
        """Where a file is downloaded to until it is verified."""
        return self.folder / (path + INCOMPLETE)

    def done(self, file: RemoteFile) -> bool:
        """Whether ``file`` is already downloaded and verified here."""
        final = self.final(file.path)
        return final.is_file() and final.stat().st_size == file.size and self.expected.get(file.path) == _expect(file)

    def partial_bytes(self, file: RemoteFile) -> int:
        """Bytes of ``file`` already downloaded (a finished file counts whole)."""
        if self.done(file):
            return file.size
        part = self.part(file.path)
        return min(part.stat().st_size, file.size) if part.is_file() else 0

    def save(self) -> None:
        """Write what each file is expected to be (a resume keeps only files that still match)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / STAGING_MANIFEST, self.expected)


def _expect(file: RemoteFile) -> dict[str, Any]:
    return {"size": file.size, "sha256": file.sha256, "git_sha1": file.git_sha1}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ModelStore:
    """The models folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, repo: str) -> Path:
        """Where ``repo`` lives once pulled."""
        return self.root / folder_name(repo)

    def read(self, folder: Path) -> Installed | None:
        """The manifest of a complete folder (``None``: not a complete pulled folder)."""
        return read_installed(folder)

    def installed(self, ref: WeightsRef) -> Installed | None:
        """The complete folder holding ``ref`` (any revision unless ``ref`` pins one), if there is one."""
        return find_installed(self.root, ref.repo, ref.revision)

    def complete(self, ref: WeightsRef) -> Path | None:
        """The folder of ``ref`` when it is complete (see :meth:`installed`)."""
        found = self.installed(ref)
        return found.folder if found is not None else None

    def inventory(self) -> list[Installed]:
        """Every complete folder, by name."""
        if not self.root.is_dir():
            return []
        found = (self.read(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith("."))
        return [i for i in found if i is not None]

    def staging_bytes(self, repo: str) -> int:
        """Bytes kept by an interrupted pull of ``repo``."""
        folder = self.root / STAGING / folder_name(repo)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def staging(self, listing: Listing, files: tuple[RemoteFile, ...]) -> Staging:
        """The staging folder of a pull, keeping what an earlier pull left that still matches ``files``
        (same size and hash, whichever hub it came from) and dropping the rest. Creates nothing."""
        folder = self.root / STAGING / folder_name(listing.repo)
        try:
            old = json.loads((folder / STAGING_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        want = {f.path: _expect(f) for f in files}
        staging = Staging(folder, {p: e for p, e in old.items() if want.get(p) == e})
        if folder.is_dir():
            keep = {p for p in staging.expected} | {p + INCOMPLETE for p in staging.expected} | {STAGING_MANIFEST}
            for path in sorted(folder.rglob("*"), reverse=True):
                rel = path.relative_to(folder).as_posix()
                if path.is_file() and rel not in keep:
                    path.unlink()
        staging.expected = {**staging.expected, **want}
        return staging

    def install(self, staging: Staging, listing: Listing, files: tuple[RemoteFile, ...]) -> Installed:
        """Write the manifest and rename the staging folder into place (replacing an older revision)."""
        total = sum(f.size for f in files)
        manifest = {
            "repo": listing.repo,
            "source": listing.source,
            "revision": listing.revision,
            "commit": listing.commit,
            "bytes": total,
            "pulled_at": time.time(),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1} for f in files],
        }
        (staging.folder / STAGING_MANIFEST).unlink(missing_ok=True)
        _write_json(staging.folder / MANIFEST, manifest)
        final = self.folder(listing.repo)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
        os.rename(staging.folder, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        found = self.read(final)
        assert found is not None
        return found

    def remove(self, repo: str) -> Installed | None:
        """Delete ``repo``'s folder (and any interrupted pull of it); returns what was removed."""
        found = self.read(self.folder(repo))
        for folder in (self.folder(repo), self.root / STAGING / folder_name(repo)):
            if folder.exists():
                trash = folder.with_name(f".{folder.name}.rm-{os.getpid()}")
                os.rename(folder, trash)  # gone from its name at once, even if deleting takes a while
                shutil.rmtree(trash, ignore_errors=True)
        return found

    @contextlib.contextmanager
    def lock(self, repo: str) -> Iterator[None]:
        """Hold the pull lock of ``repo`` (:class:`Busy` when another process holds it)."""
        import fcntl

        folder = self.root / STAGING
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{folder_name(repo)}.lock"
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                raise Busy(
                    f"{repo}: another process is pulling it right now ({handle.read().strip() or 'pid unknown'})"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def describe(installed: Installed) -> dict[str, Any]:
    """``installed`` as plain data (for ``plughost models --json``)."""
    data = asdict(installed)
    data["folder"] = str(installed.folder)
    return data
