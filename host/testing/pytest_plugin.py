"""pytest fixtures for plughost and plugin authors (registered through the ``pytest11`` entry point).

- ``plughost_config``: a factory for a :class:`~host.contract.config.HostConfig` with no plugin
  discovery (add your plugins explicitly) and small CPU-only budgets;
- ``fake_plugin``: a :class:`~host.testing.fakes.FakePlugin` with one model per task;
- ``plughost_app``: a factory ``(config=None, plugins=(), budgets=None) -> Litestar``;
- ``plughost_client``: a Litestar ``TestClient`` (an ``httpx.Client``) on an app of the fakes;
- ``plughost_server``: the same app on a real loopback socket; yields its base URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from host.contract.config import HostConfig, config_from_dict
from host.contract.spec import GiB
from host.scheduling.policy import Budgets

#: Budgets of a virtual machine without GPU: 16 GiB of host RAM.
CPU_ONLY = Budgets(gpus=(), host=16 * GiB)


#: The host name Litestar's ``TestClient`` sends; test configs answer to it besides the loopback names.
TEST_CLIENT_HOST = "testserver.local"


def make_config(data: dict[str, Any] | None = None, *, base_dir: str = ".") -> HostConfig:
    """A config without plugin discovery unless ``data`` asks for it, answering to the TestClient's
    host name (``server.allowed_hosts``) unless ``data`` names the allowed hosts itself."""
    data = dict(data or {})
    plugins = {"paths": [], "entry_points": False, **data.pop("plugins", {})}
    server = {"allowed_hosts": [TEST_CLIENT_HOST], **data.pop("server", {})}
    return config_from_dict({"plugins": plugins, "server": server, **data}, base_dir=base_dir)


@pytest.fixture
def plughost_config() -> Callable[..., HostConfig]:
    """Factory: ``plughost_config({"scheduler": {...}})`` → HostConfig without discovery."""
    return make_config


@pytest.fixture
def fake_plugin():
    """A fresh FakePlugin with ``fake-chat``, ``fake-embed`` and ``fake-rerank``."""
    from host.testing.fakes import FakePlugin

    return FakePlugin()


@pytest.fixture
def plughost_app() -> Callable[..., Any]:
    """Factory building an app: ``plughost_app(config=None, plugins=(), budgets=CPU_ONLY)``."""
    from host.app import create_app

    def build(
        config: HostConfig | None = None,
        plugins: tuple[object, ...] | list[object] = (),
        budgets: Budgets | None = CPU_ONLY,
    ) -> Any:
        return create_app(config or make_config(), plugins=plugins, budgets=budgets)

    return build


@pytest.fixture
def plughost_client(plughost_app, fake_plugin) -> Iterator[Any]:
    """A TestClient on an app serving the fake plugin (lifespan run)."""
    from litestar.testing import TestClient

    with TestClient(plughost_app(plugins=[fake_plugin])) as client:
        yield client


@pytest.fixture
def plughost_server(plughost_app, fake_plugin) -> Iterator[str]:
    """Base URL of the fake-plugin app served by uvicorn on loopback."""
    from host.testing.server import serve_in_thread

    with serve_in_thread(plughost_app(plugins=[fake_plugin])) as url:
        yield url
