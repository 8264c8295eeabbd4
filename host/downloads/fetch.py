"""One file over HTTP into ``<name>.incomplete``: resumed with ``Range`` where an earlier try
stopped, hashed as the bytes arrive, and checked against the size and hash the hub lists.

A file that fails its check is deleted (so the next pull fetches it afresh) and raises
:class:`~host.downloads.errors.VerifyFailed`; a dropped connection is resumed a few times before
the pull gives up (the next pull resumes it again).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.downloads.errors import Cancelled, NotAuthorized, NotOnHub, PullError, Unreachable, VerifyFailed
from host.downloads.hubs import RemoteFile

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("plughost.downloads")

CHUNK = 1 << 20
#: Tries per file after a dropped connection or a 5xx (each resumes where the last one stopped).
ATTEMPTS = 4


def new_hasher(file: RemoteFile) -> Any:
    """The hash the hub lists for ``file``: sha256 of the content, else its git blob id, else none."""
    if file.sha256:
        return hashlib.sha256()
    if file.git_sha1:
        hasher = hashlib.sha1(usedforsecurity=False)
        hasher.update(b"blob %d\0" % file.size)  # git's blob id: sha1 of a header and the content
        return hasher
    return None


def _expected(file: RemoteFile) -> str | None:
    return file.sha256 or file.git_sha1


def _hash_existing(part: Path, hasher: Any) -> None:
    if hasher is None:
        return
    with part.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)


def fetch(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    file: RemoteFile,
    part: Path,
    *,
    on_bytes: Callable[[int], None],
    cancel: threading.Event,
) -> None:
    """Download ``file`` from ``url`` into ``part`` (appending to what is there) and verify it.

    :param on_bytes: called with the number of bytes each chunk adds (resumed bytes are not counted).
    :raises PullError: a subclass saying what failed; ``part`` is kept unless its content is wrong.
    """
    import httpx

    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset > file.size:
        part.unlink()
        offset = 0
    hasher = new_hasher(file)
    if offset:
        _hash_existing(part, hasher)
    failures: list[str] = []
    for attempt in range(ATTEMPTS):
        if offset == file.size:
            break
        request_headers = dict(headers)
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with client.stream("GET", url, headers=request_headers) as response:
                status = response.status_code
                if status in (401, 403):
                    raise NotAuthorized(f"{file.path}: the hub refused the download ({status}); check the token")
                if status == 404:
                    raise NotOnHub(f"{file.path}: the hub listed it but answers 404 for {url}")
                if status >= 400:
                    raise _Retry(f"HTTP {status}")
                if offset and status == 200:  # the server ignored the Range: start again
                    log.info("%s: the server does not resume downloads; starting it again", file.path)
                    offset, hasher = 0, new_hasher(file)
                elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    raise _Retry(f"a resume answered {response.headers.get('Content-Range')!r}")
                with part.open("r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    for chunk in response.iter_bytes():  # as the bytes arrive: progress and resume points stay fine
                        if cancel.is_set():
                            raise Cancelled(f"{file.path}: cancelled after {offset} bytes; pull again to resume")
                        offset += len(chunk)
                        if offset > file.size:
                            break
                        out.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        on_bytes(len(chunk))
            if offset > file.size:
                part.unlink(missing_ok=True)
                raise VerifyFailed(f"{file.path}: the hub sent more than the {file.size} bytes it lists; deleted")
        except _Retry as exc:
            failures.append(str(exc))
        except httpx.TransportError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        else:
            continue
        if attempt + 1 < ATTEMPTS:
            delay = 0.5 * 2**attempt
            log.warning("%s: %s; resuming at byte %d in %.1fs", file.path, failures[-1], offset, delay)
            if cancel.wait(delay):
                raise Cancelled(f"{file.path}: cancelled; pull again to resume")
    if offset != file.size:
        raise Unreachable(
            f"{file.path}: the download kept failing ({'; '.join(failures[-2:])}); {offset} of {file.size} bytes "
            f"are kept, pull again to resume"
        )
    expected = _expected(file)
    if hasher is not None and expected is not None and hasher.hexdigest() != expected.lower():
        part.unlink(missing_ok=True)
        kind = "sha256" if file.sha256 else "git blob id"
        raise VerifyFailed(
            f"{file.path}: {kind} {hasher.hexdigest()[:16]}... differs from the hub's {expected[:16]}...: the file "
            f"is corrupt (or the mirror serves another version). It was deleted; nothing was installed."
        )


class _Retry(PullError):
    """A try failed in a way the next try may not (5xx, a broken resume)."""
