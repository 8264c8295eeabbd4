"""One pull: pick a hub (``auto``: the first of ``download.order`` that answers), list the revision,
check free space, fetch what is missing into staging, verify, and install the folder in one rename.

:func:`pull` is synchronous (the CLI calls it directly; the server runs it in a thread) and reports
:class:`PullProgress` snapshots through a callback, at most a few times a second.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from host.downloads.errors import DiskFull, Offline, PullError, Unreachable
from host.downloads.hubs import Hub, Listing, RemoteFile, hubs_for, make_hub, select
from host.downloads.store import Installed, ModelStore, Staging, free_bytes

if TYPE_CHECKING:
    import httpx

    from host.contract.config import DownloadConfig, WeightsRef

log = logging.getLogger("plughost.downloads")

#: Kept free beyond what a pull needs (file-system metadata, other writers).
DISK_MARGIN = 64 * 2**20
#: The rate is measured over this window.
RATE_WINDOW_S = 5.0

PullState = Literal["queued", "resolving", "downloading", "installing", "done", "failed"]


class PullProgress(msgspec.Struct, kw_only=True):
    """Where a pull stands (one SSE event of ``POST /v1/models/{id}/pull``, one CLI bar)."""

    model: str
    repo: str
    state: PullState
    source: str | None = None
    revision: str | None = None
    total_bytes: int = 0
    done_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    percent: float = 0.0
    bytes_per_s: float = 0.0
    eta_s: float | None = None
    file: str | None = None
    error: str | None = None
    folder: str | None = None


class Tracker:
    """Turns byte counts into :class:`PullProgress` (rate over a window, ETA) and reports them,
    at most every ``interval_s`` but always on a change of state."""

    def __init__(
        self, progress: PullProgress, report: Callable[[PullProgress], None], interval_s: float = 0.25
    ) -> None:
        self.progress = progress
        self._report = report
        self._interval = interval_s
        self._last = 0.0
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, *, force: bool = False, **changes: object) -> None:
        """Apply ``changes`` and report if it is time to."""
        for key, value in changes.items():
            setattr(self.progress, key, value)
        now = time.monotonic()
        p = self.progress
        p.done_bytes = min(p.done_bytes, p.total_bytes) if p.total_bytes else p.done_bytes
        if p.total_bytes:
            p.percent = round(100.0 * p.done_bytes / p.total_bytes, 1)
        else:
            p.percent = 100.0 if p.state == "done" else 0.0
        if force or now - self._last >= self._interval:
            self._last = now
            self._report(msgspec.structs.replace(p))

    def add(self, n: int) -> None:
        """``n`` more bytes arrived."""
        now = time.monotonic()
        p = self.progress
        p.done_bytes += n
        self._samples.append((now, p.done_bytes))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_b = self._samples[0]
        if now - first_t > 0.2:
            p.bytes_per_s = (p.done_bytes - first_b) / (now - first_t)
            p.eta_s = (p.total_bytes - p.done_bytes) / p.bytes_per_s if p.bytes_per_s > 0 else None
        self.update()


def _list(client: httpx.Client, ref: WeightsRef, config: DownloadConfig) -> tuple[Hub, Listing]:
    """The first hub (in order) that lists ``ref``; every hub's failure is named when none does."""
    failures: list[PullError] = []
    names = hubs_for(ref.source or config.source, config)
    for name in names:
        try:
            hub = make_hub(name, config)
            listing = hub.listing(client, ref.repo, ref.revision)
        except PullError as exc:
            failures.append(exc)
            if name != names[-1]:
                log.warning("%s: %s; trying %s", ref.repo, exc, names[names.index(name) + 1])
            continue
        if failures:
            log.info("%s: %s answered (after %d failed)", ref.repo, name, len(failures))
        return hub, listing
    if len(failures) == 1:
        raise failures[0]
    # The most telling failure decides the exit status: a 404 or 401 says more than a dead mirror.
    worst = next((f for f in failures if not isinstance(f, (Unreachable, Offline))), failures[0])
    raise type(worst)(f"{ref.repo}: no source could provide it: " + "; ".join(str(f) for f in failures))


def pull(
    ref: WeightsRef,
    config: DownloadConfig,
    root: Path,
    *,
    model: str | None = None,
    report: Callable[[PullProgress], None] = lambda _: None,
    on_bytes: Callable[[str, int], None] = lambda _source, _n: None,
    cancel: threading.Event | None = None,
    force: bool = False,
) -> Installed:
    """Pull ``ref`` into ``root`` (a complete folder already there is kept unless ``force``).

    :param report: receives progress snapshots (from this thread).
    :param on_bytes: ``(source, n)`` for every chunk downloaded (the server's byte counter).
    :raises PullError: what failed, with a message for the person who asked.
    """
    import httpx

    cancel = cancel or threading.Event()
    store = ModelStore(root)
    tracker = Tracker(PullProgress(model=model or ref.repo, repo=ref.repo, state="resolving"), report)
    try:
        if not force and (found := store.installed(ref)) is not None:
            tracker.update(
                force=True, state="done", source=found.source, revision=found.revision, total_bytes=found.bytes,
                done_bytes=found.bytes, files_total=found.files, files_done=found.files, folder=str(found.folder),
            )  # fmt: skip
            return found
        tracker.update(force=True)
        timeout = httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s)
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            hub, listing = _list(client, ref, config)
            files = select(listing.files)
            if not files:
                raise PullError(f"{ref.repo}: {hub.name} lists no model files at {listing.revision}")
            with store.lock(ref.repo):
                staging = store.staging(listing, files)
                have = sum(staging.partial_bytes(f) for f in files)
                total = sum(f.size for f in files)
                need = total - have
                free = free_bytes(root)
                if need + DISK_MARGIN > free:
                    raise DiskFull(
                        f"{ref.repo}: needs {size_text(need)} more free space in {root} ({size_text(total)} in "
                        f"all), but only {size_text(free)} is free. Free some space or set download.dir to a larger "
                        f"disk."
                    )
                todo = [f for f in files if not staging.done(f)]
                tracker.update(
                    force=True, state="downloading", source=hub.name, revision=listing.pinned, total_bytes=total,
                    done_bytes=have, files_total=len(files), files_done=len(files) - len(todo),
                )  # fmt: skip
                log.info("%s: pulling %s from %s (%s of %d files left)", ref.repo, listing.pinned, hub.name,
                         size_text(need), len(todo))  # fmt: skip
                staging.save()
                _fetch_all(client, hub, listing, staging, todo, tracker, on_bytes, cancel)
                tracker.update(force=True, state="installing", file=None)
                installed = store.install(staging, listing, files)
        tracker.update(force=True, state="done", folder=str(installed.folder), eta_s=0.0)
        log.info("%s: installed in %s (%s)", ref.repo, installed.folder, size_text(installed.bytes))
        return installed
    except PullError as exc:
        tracker.update(force=True, state="failed", error=str(exc))
        raise


def _fetch_all(
    client: httpx.Client,
    hub: Hub,
    listing: Listing,
    staging: Staging,
    todo: list[RemoteFile],
    tracker: Tracker,
    on_bytes: Callable[[str, int], None],
    cancel: threading.Event,
) -> None:
    from host.downloads.fetch import fetch

    headers = hub.headers()

    def count(n: int) -> None:
        on_bytes(hub.name, n)
        tracker.add(n)

    for file in todo:
        part = staging.part(file.path)
        tracker.update(file=file.path)
        try:
            fetch(client, hub.file_url(listing, file.path), headers, file, part, on_bytes=count, cancel=cancel)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"{listing.repo}: the disk filled up while writing {file.path}: {exc}") from None
            raise PullError(f"{listing.repo}: cannot write {part}: {exc}") from None
        os.replace(part, staging.final(file.path))
        tracker.update(force=True, files_done=tracker.progress.files_done + 1)


def size_text(n: float) -> str:
    """``1.5 GiB``, ``512.0 KiB``: a byte count for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
