"""A local model hub for tests: the requests of Hugging Face and ModelScope that ``plughost pull``
makes, served from folders on 127.0.0.1.

>>> with FakeHub({"Qwen/Qwen3-Embedding-0.6B": folder}) as hub:
...     config = {"download": {"endpoints": hub.endpoints, "dir": str(tmp_path)}}

Knobs a test turns (any time, from any thread): :attr:`FakeHub.down` (hubs that answer 503),
:attr:`FakeHub.corrupt` (files served with a flipped byte, listed with their true hash),
:attr:`FakeHub.gated` (repos that need :attr:`FakeHub.token`), :attr:`FakeHub.bytes_per_s`
(throttle file bodies). :attr:`FakeHub.requests` records ``(method, path, Range header)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: Files listed as LFS objects on the Hugging Face side (with a sha256), like the real hub does.
LFS_SUFFIXES = (".safetensors", ".bin", ".json.gz")


class _File:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class FakeHub:
    """Serves ``repos`` (repo id → model folder) as both hubs, on a free loopback port."""

    def __init__(self, repos: dict[str, Path], *, token: str = "secret-token") -> None:
        self.repos: dict[str, dict[str, _File]] = {}
        self.commits: dict[str, str] = {}
        for repo, folder in repos.items():
            files = {
                p.relative_to(folder).as_posix(): _File(p.read_bytes())
                for p in sorted(Path(folder).rglob("*"))
                if p.is_file() and not p.name.startswith(".")
            }
            self.repos[repo] = files
            digest = hashlib.sha1(usedforsecurity=False)
            for path, f in files.items():
                digest.update(path.encode() + f.sha256.encode())
            self.commits[repo] = digest.hexdigest()
        self.token = token
        self.down: set[str] = set()
        self.corrupt: set[str] = set()  #: file paths (any repo)
        self.gated: set[str] = set()
        self.bytes_per_s: float | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def endpoints(self) -> dict[str, str]:
        """``download.endpoints`` pointing both hubs here."""
        return {"huggingface": self.url, "modelscope": self.url}

    def total_bytes(self, repo: str) -> int:
        """The size of every file of ``repo``."""
        return sum(len(f.data) for f in self.repos[repo].values())

    def file_requests(self) -> list[tuple[str, str, str | None]]:
        """The recorded requests for file bodies (not listings)."""
        return [r for r in self.requests if "/resolve/" in r[1] or "FilePath=" in r[1]]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            hub.requests.append(("GET", self.path, self.headers.get("Range")))
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = unquote(url.path)
            try:
                if path.startswith("/api/models/"):
                    self._hf_listing(path[len("/api/models/") :])
                elif path.startswith("/api/v1/models/"):
                    self._modelscope(path[len("/api/v1/models/") :], query)
                elif "/resolve/" in path:
                    repo, _, rest = path.strip("/").partition("/resolve/")
                    revision, _, file = rest.partition("/")
                    self._file("huggingface", repo, revision, file)
                else:
                    self._json(404, {"error": "not found"})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a killed pull)

        # -- Hugging Face ---------------------------------------------------------------------
        def _hf_listing(self, rest: str) -> None:
            repo, _, revision = rest.partition("/revision/")
            if self._refuse("huggingface", repo):
                return
            if revision not in ("main", hub.commits[repo]):
                self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                return
            siblings = []
            for path, f in hub.repos[repo].items():
                entry: dict[str, Any] = {"rfilename": path, "size": len(f.data), "blobId": f.git_sha1}
                if path.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
                siblings.append(entry)
            self._json(200, {"id": repo, "modelId": repo, "sha": hub.commits[repo], "siblings": siblings})

        # -- ModelScope -------------------------------------------------------------------------
        def _modelscope(self, rest: str, query: dict[str, str]) -> None:
            if rest.endswith("/repo/files"):
                repo = rest[: -len("/repo/files")]
                if self._refuse("modelscope", repo):
                    return
                files = [
                    {"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(f.data), "Sha256": f.sha256,
                     "Revision": hub.commits[repo]}
                    for p, f in hub.repos[repo].items()
                ]  # fmt: skip
                self._json(200, {"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True})
            elif rest.endswith("/repo"):
                self._file("modelscope", rest[: -len("/repo")], query.get("Revision", "master"), query["FilePath"])
            else:
                self._json(404, {"Code": 404, "Message": "not found", "Success": False})

        # -- shared -----------------------------------------------------------------------------
        def _refuse(self, source: str, repo: str) -> bool:
            if source in hub.down:
                self._json(503, {"error": f"{source} is down"})
                return True
            if repo not in hub.repos:
                if source == "huggingface":
                    self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                else:
                    self._json(200, {"Code": 10010205001, "Message": "model not found", "Success": False})
                return True
            if repo in hub.gated and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._json(401, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
                return True
            return False

        def _file(self, source: str, repo: str, revision: str, path: str) -> None:
            if self._refuse(source, repo):
                return
            f = hub.repos[repo].get(path)
            if f is None:
                self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return
            data = bytearray(f.data)
            if path in hub.corrupt and data:
                data[len(data) // 2] ^= 0xFF
            start = 0
            status = 200
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": f'"{f.sha256}"'}
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged[len("bytes=") :].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = bytes(data[start:])
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            step = 16384
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if hub.bytes_per_s:
                    self.wfile.flush()
                    time.sleep(step / hub.bytes_per_s)

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
