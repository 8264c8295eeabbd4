"""The two hubs, as far as a pull needs them: list a revision's files (with sizes and hashes) and
name the URL of one file. The bytes are fetched by :mod:`host.downloads.fetch`, the same way for both.

Hugging Face (``HF_ENDPOINT`` for a mirror such as ``https://hf-mirror.com``, ``HF_TOKEN`` or
``hf auth login`` for gated repositories)::

    GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true
        -> sha, siblings[rfilename, size, blobId, lfs.sha256]
    GET {endpoint}/{repo}/resolve/{commit}/{path}  -> the file (Range honoured)

ModelScope (``MODELSCOPE_ENDPOINT``, ``MODELSCOPE_API_TOKEN``)::

    GET {endpoint}/api/v1/models/{repo}/repo/files?Revision={revision}&Recursive=True
        -> Data.Files[Path, Type, Size, Sha256]
    GET {endpoint}/api/v1/models/{repo}/repo?Revision={revision}&FilePath={path}  -> the file (Range honoured)

Endpoints and offline switches are read when a pull starts (not at import), so a running server and
the tests' local hub see the environment as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from host.downloads.errors import NotAuthorized, NotOnHub, Offline, PullError, Unreachable

if TYPE_CHECKING:
    import httpx

    from host.contract.config import DownloadConfig, HubSource

HF_DEFAULT = "https://huggingface.co"
MODELSCOPE_DEFAULT = "https://www.modelscope.cn"
#: Files a model folder never needs: other runtimes' formats.
IGNORED = (
    *("*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.tflite"),
    *("*.mlmodel", "coreml/*", "original/*"),
)
#: PyTorch pickles, fetched only when the repository has no safetensors.
PICKLES = ("*.bin", "*.pt", "*.pth")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a revision as the hub lists it."""

    path: str
    size: int
    sha256: str | None = None  #: of the content (LFS files on Hugging Face; every file on ModelScope)
    git_sha1: str | None = None  #: git blob id (Hugging Face files stored in git, not LFS)


@dataclass(frozen=True)
class Listing:
    """A revision of a repository on one hub."""

    source: HubSource
    repo: str
    revision: str  #: as asked (a branch, tag or commit)
    commit: str | None  #: the commit it resolved to, where the hub says
    files: tuple[RemoteFile, ...]

    @property
    def pinned(self) -> str:
        """The revision to fetch files at: the commit when known, so that every file is of one commit."""
        return self.commit or self.revision


class Hub(Protocol):
    """A place weights come from."""

    name: HubSource
    endpoint: str

    def listing(self, client: httpx.Client, repo: str, revision: str | None) -> Listing:
        """The files of ``repo`` at ``revision`` (``None``: the default branch)."""

    def file_url(self, listing: Listing, path: str) -> str:
        """Where one file of ``listing`` is fetched."""

    def headers(self) -> dict[str, str]:
        """Request headers (authentication)."""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _endpoint(config: DownloadConfig, name: HubSource, env: str, default: str) -> str:
    return (config.endpoints.get(name) or os.environ.get(env) or default).rstrip("/")


def check_safe_path(path: str) -> str:
    """``path`` if it stays inside a model folder (a hostile hub or mirror may list ``../x``)."""
    parts = PurePosixPath(path).parts
    if not path or "\\" in path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PullError(f"the hub lists a file with an unsafe path {path!r}; refusing to download it")
    return path


def _status_error(hub: str, repo: str, revision: str, status: int, detail: str) -> PullError:
    where = f"{hub}: {repo}@{revision}"
    if status in (401, 403):
        token = "HF_TOKEN (or `hf auth login`)" if hub == "huggingface" else "MODELSCOPE_API_TOKEN"
        return NotAuthorized(
            f"{where}: refused ({status}). The repository does not exist, is private, or is gated: accept its "
            f"licence on the hub's page and set {token}."
        )
    if status == 404:
        return NotOnHub(f"{where}: not found (404{': ' + detail if detail else ''}). Check the repo id and revision.")
    return Unreachable(f"{where}: the hub answered {status}{': ' + detail if detail else ''}. Try again later.")


def _get_json(client: httpx.Client, hub: str, repo: str, revision: str, url: str, **kwargs: Any) -> Any:
    import httpx

    try:
        response = client.get(url, **kwargs)
    except httpx.TransportError as exc:
        raise Unreachable(f"{hub}: cannot reach {url.split('/api/')[0]} ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        detail = response.headers.get("X-Error-Message") or response.headers.get("X-Error-Code") or ""
        raise _status_error(hub, repo, revision, response.status_code, detail)
    try:
        return response.json()
    except ValueError:
        raise Unreachable(f"{hub}: {url} did not answer JSON (a captive portal or a wrong endpoint?)") from None


@dataclass
class HuggingFace:
    """The Hugging Face Hub, or a mirror of its API (``HF_ENDPOINT``)."""

    endpoint: str
    token: str | None
    name: HubSource = "huggingface"

    @classmethod
    def from_config(cls, config: DownloadConfig) -> HuggingFace:
        """Endpoint from ``download.endpoints.huggingface``, ``HF_ENDPOINT`` or the default; the token
        from ``HF_TOKEN`` or the login file (``huggingface_hub.get_token``)."""
        if _truthy("PLUGHOST_OFFLINE") or _truthy("HF_HUB_OFFLINE"):
            raise Offline("huggingface: offline mode is on (PLUGHOST_OFFLINE or HF_HUB_OFFLINE); unset it to pull")
        token = os.environ.get("HF_TOKEN") or None
        if token is None:
            try:
                from huggingface_hub import get_token

                token = get_token()
            except ImportError:  # pragma: no cover - a core dependency
                token = None
        return cls(_endpoint(config, "huggingface", "HF_ENDPOINT", HF_DEFAULT), token)

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer`` when a token is known."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def listing(self, client: httpx.Client, repo: str, revision: str | None) -> Listing:
        """``GET /api/models/{repo}/revision/{revision}?blobs=true``."""
        revision = revision or "main"
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        data = _get_json(client, self.name, repo, revision, url, params={"blobs": "true"}, headers=self.headers())
        files = []
        for sibling in data.get("siblings") or []:
            lfs = sibling.get("lfs") or {}
            files.append(
                RemoteFile(
                    path=check_safe_path(str(sibling.get("rfilename", ""))),
                    size=int(lfs.get("size", sibling.get("size", 0)) or 0),
                    sha256=lfs.get("sha256"),
                    git_sha1=None if lfs else sibling.get("blobId"),
                )
            )
        if any(f.size == 0 and f.sha256 is None and f.git_sha1 is None for f in files):
            raise Unreachable(f"{self.name}: {url} lists files without sizes (an old mirror?); cannot verify them")
        return Listing(self.name, repo, revision, data.get("sha"), tuple(files))

    def file_url(self, listing: Listing, path: str) -> str:
        """``{endpoint}/{repo}/resolve/{commit}/{path}``."""
        return f"{self.endpoint}/{listing.repo}/resolve/{quote(listing.pinned, safe='')}/{quote(path)}"


@dataclass
class ModelScope:
    """ModelScope (``modelscope.cn``), or another endpoint of its API (``MODELSCOPE_ENDPOINT``)."""

    endpoint: str
    token: str | None
    name: HubSource = "modelscope"

    @classmethod
    def from_config(cls, config: DownloadConfig) -> ModelScope:
        """Endpoint from ``download.endpoints.modelscope``, ``MODELSCOPE_ENDPOINT`` (or the older
        ``MODELSCOPE_DOMAIN``) or the default; the token from ``MODELSCOPE_API_TOKEN``."""
        if _truthy("PLUGHOST_OFFLINE"):
            raise Offline("modelscope: offline mode is on (PLUGHOST_OFFLINE); unset it to pull")
        domain = os.environ.get("MODELSCOPE_DOMAIN")
        default = f"https://{domain}" if domain and "://" not in domain else (domain or MODELSCOPE_DEFAULT)
        return cls(
            _endpoint(config, "modelscope", "MODELSCOPE_ENDPOINT", default), os.environ.get("MODELSCOPE_API_TOKEN")
        )

    def headers(self) -> dict[str, str]:
        """The token as ``Authorization: Bearer`` and as the ``m_session_id`` cookie older endpoints read."""
        if not self.token:
            return {}
        return {"Authorization": f"Bearer {self.token}", "Cookie": f"m_session_id={self.token}"}

    def listing(self, client: httpx.Client, repo: str, revision: str | None) -> Listing:
        """``GET /api/v1/models/{repo}/repo/files?Revision=...&Recursive=True``."""
        revision = revision or "master"
        url = f"{self.endpoint}/api/v1/models/{repo}/repo/files"
        params = {"Revision": revision, "Recursive": "True"}
        data = _get_json(client, self.name, repo, revision, url, params=params, headers=self.headers())
        if not isinstance(data, dict):
            raise Unreachable(f"{self.name}: {url} answered an unexpected shape")
        code = data.get("Code", 200)
        if data.get("Success") is False or code not in (200, "200"):
            status = code if isinstance(code, int) and 400 <= code < 600 else 404  # its own codes: not found
            raise _status_error(self.name, repo, revision, status, str(data.get("Message") or ""))
        entries = (data.get("Data") or {}).get("Files") or []
        files = tuple(
            RemoteFile(check_safe_path(str(e.get("Path", ""))), int(e.get("Size") or 0), sha256=e.get("Sha256"))
            for e in entries
            if e.get("Type", "blob") != "tree"
        )
        commits = {e.get("Revision") for e in entries if e.get("Type", "blob") != "tree"}
        commit = commits.pop() if len(commits) == 1 and None not in commits else None
        # Recorded, not used to fetch: ModelScope serves files by revision name.
        return Listing(self.name, repo, revision, commit, files)

    def file_url(self, listing: Listing, path: str) -> str:
        """``{endpoint}/api/v1/models/{repo}/repo?Revision=...&FilePath=...``."""
        return (
            f"{self.endpoint}/api/v1/models/{listing.repo}/repo"
            f"?Revision={quote(listing.revision, safe='')}&FilePath={quote(path, safe='')}"
        )


def hubs_for(source: str, config: DownloadConfig) -> list[HubSource]:
    """The hubs to try, in order: ``auto`` is ``download.order``; a named source is itself."""
    return list(config.order) if source == "auto" else [source]  # type: ignore[list-item]


def make_hub(name: HubSource, config: DownloadConfig) -> Hub:
    """The hub called ``name`` (raises :class:`Offline` when offline mode forbids it)."""
    return HuggingFace.from_config(config) if name == "huggingface" else ModelScope.from_config(config)


def select(files: tuple[RemoteFile, ...]) -> tuple[RemoteFile, ...]:
    """The files a model folder needs: not other runtimes' formats, and no pickles beside safetensors."""
    from fnmatch import fnmatch

    kept = tuple(f for f in files if not any(fnmatch(f.path, p) for p in IGNORED))
    if any(f.path.endswith(".safetensors") for f in kept):
        kept = tuple(f for f in kept if not any(fnmatch(f.path, p) for p in PICKLES))
    return kept
