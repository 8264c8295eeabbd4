"""Issue 24: ``plughost pull`` from Hugging Face or ModelScope, against a local hub serving the tiny
embedding model the plugin builds (``embed_qwen3.demo:TINY``).

Pulls in this process (the CLI's own function) and as the real console script; every case ends in
what a user sees: a folder that serves, an exit status and a message, or nothing servable. The hub
is the ``hub`` fixture of ``tests/conftest.py`` (:class:`host.testing.fakehub.FakeHub`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.config import HostConfig, WeightsRef, config_from_dict
from host.downloads import pull as pull_module
from host.downloads.cli import run
from host.downloads.errors import DiskFull, NotAuthorized, NotOnHub, PullError, Unreachable, VerifyFailed
from host.downloads.hubs import check_safe_path, select
from host.downloads.pull import pull
from host.downloads.store import INCOMPLETE, STAGING, ModelStore, folder_name
from host.testing.fakehub import FakeHub
from host.testing.http import EMBED, assert_error
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGINS = REPO_ROOT / "plugins"
MODEL = "Qwen3-Embedding-0.6B"
REPO = "Qwen/Qwen3-Embedding-0.6B"
WEIGHTS = "model.safetensors"

pytestmark = pytest.mark.slow


def config_for(hub: FakeHub, tmp_path: Path, **download: object) -> HostConfig:
    """Only the embedding plugin, no demo stand-in, weights pulled into ``tmp_path/models``."""
    return make_config(
        {
            "plugins": {"paths": [str(PLUGINS)], "disable": ["chat_qwen_awq", "rerank_qwen3"]},
            "demo": False,
            "download": {"dir": str(tmp_path / "models"), "endpoints": hub.endpoints, **download},
        }
    )


def embed(client: TestClient) -> httpx.Response:
    return client.post(EMBED, json={"model": MODEL, "input": "你好"})


def staging_files(root: Path) -> list[Path]:
    folder = root / STAGING / folder_name(REPO)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- pull, then serve ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
def test_a_pull_from_each_source_serves_the_model(hub: FakeHub, tmp_path: Path, source: str) -> None:
    config = config_for(hub, tmp_path, source=source)
    installed = pull(WeightsRef(repo=REPO), config.download, config.models_dir(), model=MODEL)
    assert installed.source == source and installed.bytes == hub.total_bytes(REPO)
    assert installed.commit == hub.commits[REPO]  # the revision is pinned and recorded
    assert (installed.folder / WEIGHTS).read_bytes() == hub.repos[REPO][WEIGHTS].data
    assert not staging_files(config.models_dir())
    with TestClient(create_app(config, budgets=CPU_ONLY)) as client:
        response = embed(client)
        assert response.status_code == 200, response.text
        assert len(response.json()["data"][0]["embedding"]) > 0
        # Pulled into a folder, the model still answers to its hub id (the plugin's alias).
        assert client.post(EMBED, json={"model": REPO, "input": "x"}).status_code == 200
        weights = client.get(f"/v1/models/{MODEL}").json()["weights"]
        assert weights["state"] == "on_disk" and weights["source"] == source
        assert weights["commit"] == hub.commits[REPO] and weights["bytes"] == hub.total_bytes(REPO)
        assert weights["path"] == str(installed.folder)


def test_a_pinned_revision_that_the_hub_lacks_is_a_clear_404(hub: FakeHub, tmp_path: Path) -> None:
    config = config_for(hub, tmp_path, source="huggingface")
    with pytest.raises(NotOnHub, match="not found"):
        pull(WeightsRef(repo=REPO, revision="v9"), config.download, config.models_dir())
    with pytest.raises(NotOnHub):
        pull(WeightsRef(repo="nobody/nothing"), config.download, config.models_dir())


def test_a_gated_repo_needs_the_token(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.gated.add(REPO)
    config = config_for(hub, tmp_path, source="huggingface")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no login file either
    with pytest.raises(NotAuthorized, match="HF_TOKEN"):
        pull(WeightsRef(repo=REPO), config.download, config.models_dir())
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert pull(WeightsRef(repo=REPO), config.download, config.models_dir()).source == "huggingface"


# -- failures leave nothing servable ---------------------------------------------------------------------


def test_a_corrupted_file_fails_its_hash_and_nothing_is_servable(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add(WEIGHTS)
    config = config_for(hub, tmp_path, source="modelscope")
    assert run(config, ["pull", MODEL]) == VerifyFailed.exit_code
    store = ModelStore(config.models_dir())
    assert store.installed(WeightsRef(repo=REPO)) is None
    assert not store.folder(REPO).exists()
    assert not any(p.name.startswith(WEIGHTS) for p in staging_files(config.models_dir()))  # the bad bytes are gone
    with TestClient(create_app(config, budgets=CPU_ONLY)) as client:
        error = assert_error(embed(client), 503, code="model_not_downloaded")
        assert f"plughost pull {MODEL}" in error["message"]
    hub.corrupt.clear()  # the hub is fixed: the next pull keeps the verified files and fetches the rest
    before = len(hub.file_requests())
    assert run(config, ["pull", MODEL]) == 0
    again = [(r[1].rsplit("FilePath=", 1)[1], r[2]) for r in hub.file_requests()[before:]]
    assert (WEIGHTS, None) in again and "config.json" not in dict(again)  # the bad file afresh, from byte 0


def test_a_full_disk_fails_before_writing(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "free_bytes", lambda _path: 100_000)
    config = config_for(hub, tmp_path)
    with pytest.raises(DiskFull) as caught:
        pull(WeightsRef(repo=REPO), config.download, config.models_dir())
    assert "needs 650.1 MiB" not in str(caught.value)  # sizes are the repo's, not a guess
    assert "more free space" in str(caught.value) and "only 97.7 KiB is free" in str(caught.value)
    assert hub.file_requests() == [] and staging_files(config.models_dir()) == []
    assert run(config, ["pull", MODEL]) == DiskFull.exit_code


def test_auto_falls_back_when_the_first_source_is_down(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.down.add("huggingface")
    config = config_for(hub, tmp_path)  # auto: huggingface, then modelscope
    installed = pull(WeightsRef(repo=REPO), config.download, config.models_dir())
    assert installed.source == "modelscope"
    assert "trying modelscope" in caplog.text and "modelscope answered" in caplog.text
    hub.down.add("modelscope")
    with pytest.raises(Unreachable) as caught:
        pull(WeightsRef(repo=REPO), config.download, config.models_dir(), force=True)
    assert "huggingface" in str(caught.value) and "modelscope" in str(caught.value)


def test_the_order_of_auto_is_configurable(hub: FakeHub, tmp_path: Path) -> None:
    config = config_for(hub, tmp_path, order=["modelscope", "huggingface"])
    assert pull(WeightsRef(repo=REPO), config.download, config.models_dir()).source == "modelscope"


def test_unsafe_paths_from_a_hostile_hub_are_refused() -> None:
    for bad in ("../evil", "a/../../b", "/etc/passwd", "a\\b", ""):
        with pytest.raises(PullError, match="unsafe path"):
            check_safe_path(bad)
    assert check_safe_path("1_Pooling/config.json") == "1_Pooling/config.json"


def test_other_runtimes_formats_are_not_fetched() -> None:
    from host.downloads.hubs import RemoteFile

    files = tuple(RemoteFile(p, 1) for p in ("model.safetensors", "pytorch_model.bin", "onnx/model.onnx", "x.gguf"))
    assert [f.path for f in select(files)] == ["model.safetensors"]
    assert [f.path for f in select(files[1:2])] == ["pytorch_model.bin"]  # pickles only without safetensors


# -- the console script ---------------------------------------------------------------------------------


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "PLUGHOST_OFFLINE")}
    return {**env, "PLUGHOST_MODELS_DIR": str(tmp_path / "models"), "HF_TOKEN_PATH": str(tmp_path / "t"), **extra}


def test_a_pull_killed_halfway_resumes_and_verifies(hub: FakeHub, tmp_path: Path) -> None:
    config_file = tmp_path / "plugins.yaml"
    config_file.write_text(
        f"plugins: {{paths: [{PLUGINS}], disable: [chat_qwen_awq, rerank_qwen3]}}\n"
        f"download: {{endpoints: {{huggingface: '{hub.url}', modelscope: '{hub.url}'}}, source: huggingface}}\n",
        encoding="utf-8",
    )
    env = _cli_env(tmp_path, PLUGHOST_CONFIG=str(config_file))
    size = len(hub.repos[REPO][WEIGHTS].data)
    hub.bytes_per_s = size / 4  # about 4 s for the weights file
    part = tmp_path / "models" / STAGING / folder_name(REPO) / (WEIGHTS + INCOMPLETE)
    proc = subprocess.Popen([sys.executable, "-m", "host.cli", "pull", MODEL], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > size // 3):
            assert proc.poll() is None and time.monotonic() < deadline, "the pull ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    kept = part.stat().st_size
    assert 0 < kept < size and not (tmp_path / "models" / folder_name(REPO)).exists()  # nothing half-installed
    hub.bytes_per_s = None
    result = subprocess.run(
        [sys.executable, "-m", "host.cli", "pull", MODEL], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"{MODEL}: ready in" in result.stdout
    ranges = [r[2] for r in hub.file_requests() if r[1].endswith(WEIGHTS) and r[2]]
    assert ranges and int(ranges[-1].split("=")[1].rstrip("-")) >= kept  # resumed, not started again
    installed = ModelStore(tmp_path / "models").installed(WeightsRef(repo=REPO))
    assert installed is not None and (installed.folder / WEIGHTS).read_bytes() == hub.repos[REPO][WEIGHTS].data


def test_pull_all_without_network_fails_within_seconds(tmp_path: Path) -> None:
    """The repository's own plugins.yaml (the demo profile's), hubs that cannot be reached."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = _cli_env(tmp_path, HF_ENDPOINT=closed, MODELSCOPE_ENDPOINT=closed)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "host.cli", "pull", "--all"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == Unreachable.exit_code, result.stderr
    for model in ("Qwen2.5-7B-Instruct-AWQ", MODEL, "Qwen3-Reranker-0.6B"):
        assert f"{model}: FAILED" in result.stderr
    assert "cannot reach" in result.stderr and "No network" in result.stderr
    assert "Traceback" not in result.stderr
    print(f"plughost pull --all without network: exit {result.returncode} after {elapsed:.1f}s")
    offline = subprocess.run(
        [sys.executable, "-m", "host.cli", "pull", "--all"],
        env={**env, "PLUGHOST_OFFLINE": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 7 and "offline mode is on" in offline.stderr


def test_models_lists_what_is_on_disk_and_rm_removes_it(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(hub, tmp_path)
    assert run(config, ["models"]) == 0
    assert f"{MODEL}  absent" in capsys.readouterr().out
    assert run(config, ["pull", REPO]) == 0  # a hub id works as well as a model id
    capsys.readouterr()
    assert run(config, ["models"]) == 0
    listing = capsys.readouterr().out
    assert "on_disk" in listing and str(config.models_dir() / folder_name(REPO)) in listing
    assert run(config, ["rm", MODEL]) == 0
    assert "removed" in capsys.readouterr().out and not (config.models_dir() / folder_name(REPO)).exists()
    assert run(config, ["rm", MODEL]) == 1  # nothing left to remove: says so


def test_weights_may_name_repo_source_and_revision() -> None:
    config = config_from_dict(
        {"models": {MODEL: {"weights": {"repo": REPO, "source": "modelscope", "revision": "v1.0"}}}}
    )
    assert config.weights_ref(MODEL, None) == WeightsRef(repo=REPO, source="modelscope", revision="v1.0")
    assert config.model_weights(MODEL, "ignored/default") == REPO  # not pulled yet: the hub id
    assert config_from_dict({}).weights_ref(MODEL, REPO) == WeightsRef(repo=REPO)  # a short hub id as today
    assert config_from_dict({}).weights_ref(MODEL, "/srv/models/x") is None  # a local folder: nothing to pull
    assert config_from_dict({}).weights_ref(MODEL, "demo:embed_qwen3.demo:TINY") is None
