"""Shared fixtures of the host's own tests.

The host's public fixtures (``plughost_app``, ``plughost_client``, ``plughost_server``,
``plughost_config``) come from :mod:`host.testing.pytest_plugin`, registered through the
``pytest11`` entry point. This file adds what only the host's tests need: throw-away plugin
folders, a really installed test-plugin distribution, and import isolation so that plugins
imported by one test never leak into the next.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.config import ServerConfig
from host.contract.spec import Task
from host.testing.fakehub import FakeHub
from host.testing.fakes import FakePlugin, failing_chat_spec, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config

# Tests run offline and on one thread (the machines are shared); set before anything imports torch/hf.
# No pull reaches a real hub (the ``hub`` fixture clears the switch for its local one), and no test
# sees weights this machine's user pulled.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PLUGHOST_OFFLINE", "1")
os.environ.setdefault("PLUGHOST_MODELS_DIR", os.path.join(tempfile.gettempdir(), "plughost-tests-no-models"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

FIXTURES = Path(__file__).parent / "fixtures"
TESTPLUGIN_SOURCE = FIXTURES / "plughost_testplugin"
#: The entry-point name (and importable package) of the installed test plugin.
TESTPLUGIN = "plughost_testplugin"


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """Restore ``sys.path`` and drop every module imported during the test.

    Plugin discovery inserts plugin folders into ``sys.path`` and imports plugin packages by
    name; without this, a later test would get the cached module of an earlier one.
    """
    path = list(sys.path)
    modules = set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            del sys.modules[name]
        importlib.invalidate_caches()


WritePlugin = Callable[..., Path]


@pytest.fixture
def write_plugin(tmp_path: Path, clean_imports: None) -> WritePlugin:
    """Factory: ``write_plugin(name, source, layout="nested"|"flat", folder="plugins") -> folder``.

    ``nested`` writes the pip-installable layout ``folder/name/name/__init__.py``; ``flat``
    writes ``folder/name/__init__.py``. Returns the plugins folder (what ``plugins.paths`` names).
    """

    def write(name: str, source: str, *, layout: str = "nested", folder: str = "plugins") -> Path:
        root = tmp_path / folder
        package = root / name / name if layout == "nested" else root / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        if layout == "nested":
            (root / name / "pyproject.toml").write_text(
                f'[project]\nname = "plughost-{name}"\nversion = "0"\n', encoding="utf-8"
            )
        return root

    return write


@pytest.fixture(scope="session")
def testplugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``plughost-testplugin`` installed by pip (with its dist-info and entry point).

    The package is copied first because an in-tree setuptools build leaves ``build/`` and
    ``*.egg-info`` behind in the source folder.
    """
    work = tmp_path_factory.mktemp("testplugin")
    source = work / "src"
    shutil.copytree(TESTPLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"pip install of the test plugin failed:\n{result.stdout}\n{result.stderr}"
    assert list(target.glob("plughost_testplugin-*.dist-info/entry_points.txt")), "no entry point installed"
    return target


@pytest.fixture
def installed_testplugin(testplugin_site: Path, clean_imports: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the installed test plugin on ``sys.path`` (importlib.metadata then sees its entry point).

    Entry-point discovery is switched on only by the test itself; the environment switch is cleared.
    """
    monkeypatch.delenv("PLUGHOST_DISABLE_ENTRYPOINTS", raising=False)
    monkeypatch.syspath_prepend(str(testplugin_site))
    return testplugin_site


@pytest.fixture
def other_entry_points() -> list[str]:
    """Names of ``plughost`` entry points installed in this environment besides the test plugin.

    Entry-point tests block them, so that the in-repo plugins (installed editable) cannot change
    what these tests observe.
    """
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="plughost")} - {TESTPLUGIN})


# -- the app of the route tests (tests/test_routes_*.py) ------------------------------------------------

#: Small limits, so that the route tests can reach them.
ROUTE_LIMITS = {"max_body_bytes": 4096, "max_embedding_inputs": 4, "max_rerank_documents": 5}


@pytest.fixture
def plugin() -> FakePlugin:
    """One fake model per task (the chat one with an alias), and two chat models that fail mid-stream."""
    return FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT, aliases=("fake-chat-alias",)),
            fake_spec("fake-embed", Task.EMBEDDING),
            fake_spec("fake-rerank", Task.RERANK),
            failing_chat_spec("bad-stream", "invalid"),
            failing_chat_spec("crash-stream", "crash"),
        ]
    )


@pytest.fixture
def client(plugin: FakePlugin) -> Iterator[TestClient]:
    """A TestClient on an app of ``plugin`` with :data:`ROUTE_LIMITS` and an alias from the config."""
    config = make_config(
        {
            "server": ROUTE_LIMITS,
            "scheduler": {"max_resident_per_task": 4, "min_residency_s": 0},
            "models": {"fake-embed": {"aliases": ["text-embedding-3-small"]}},
        }
    )
    with TestClient(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as c:
        yield c


@pytest.fixture
def limits(client: TestClient) -> ServerConfig:
    """The ``server`` section of ``client``'s app (its body and input limits)."""
    server: ServerConfig = client.app.state.config.server
    return server


# -- a local model hub (tests/test_pull*.py) --------------------------------------------------------

#: The repository the local hub serves: the embedding plugin's tiny model under its real hub id.
HUB_REPO = "Qwen/Qwen3-Embedding-0.6B"


@pytest.fixture(scope="session")
def tiny_embed_folder() -> Path:
    """The embedding plugin's tiny random-weight model folder (built once, cached on disk)."""
    from embed_qwen3.demo import TINY

    return TINY.folder()


@pytest.fixture
def hub(tiny_embed_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A local hub on 127.0.0.1 serving :data:`HUB_REPO` on both APIs (Hugging Face and ModelScope).

    Offline switches and tokens of the environment are cleared for the test (this file sets
    ``HF_HUB_OFFLINE`` for every other test)."""
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "PLUGHOST_OFFLINE", "HF_ENDPOINT", "MODELSCOPE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with FakeHub({HUB_REPO: tiny_embed_folder}) as running:
        yield running
