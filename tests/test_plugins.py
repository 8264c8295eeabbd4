"""Plugin discovery: installed entry points, plugin folders, blocking, and contract violations.

The entry-point tests use a real distribution (``tests/fixtures/plughost_testplugin``) that pip
installs into a temporary folder; importlib.metadata finds its entry point once that folder
is on ``sys.path``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pluggy
import pytest
from litestar.testing import TestClient

from host import hookimpl
from host.app import create_app
from host.contract.config import HostConfig, ModelConfig
from host.contract.spec import ModelSpec, Task
from host.plugins import ENTRYPOINT_GROUP, PluginError, make_plugin_manager
from host.registry import ModelRegistry, build_registry
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config

TESTPLUGIN = "plughost_testplugin"
#: The ``write_plugin`` fixture (tests/conftest.py): ``(name, source, layout=, folder=) -> plugins folder``.
WritePlugin = Callable[..., Path]
TESTPLUGIN_MODELS = {"testplugin-chat", "testplugin-embed", "testplugin-rerank"}


def plugin_source(*model_ids: str, task: str = "CHAT", aliases: tuple[str, ...] = ()) -> str:
    """A plugin ``__init__`` declaring fake models of ``task``."""
    specs = ", ".join(f"fake_spec({mid!r}, Task.{task}, aliases={aliases!r})" for mid in model_ids)
    return f"""
        from host import hookimpl
        from host.contract.spec import Task
        from host.testing.fakes import fake_spec


        @hookimpl
        def register_models(config):
            return [{specs}]
        """


def folder_config(folder: Path, **plugins: Any) -> HostConfig:
    """A config discovering plugins in ``folder`` only (no entry points unless asked)."""
    return make_config({"plugins": {"paths": [str(folder)], **plugins}})


def discover(config: HostConfig) -> tuple[pluggy.PluginManager, ModelRegistry]:
    pm = make_plugin_manager(config)
    return pm, build_registry(pm, config)


def ids(registry: ModelRegistry) -> set[str]:
    return {m.spec.id for m in registry}


# -- entry points (a real installed distribution) ------------------------------------------------


def entry_point_config(other_entry_points: list[str], **plugins: Any) -> HostConfig:
    """Entry points on; every other installed plughost plugin blocked so only the test plugin counts."""
    disable = [*other_entry_points, *plugins.pop("disable", [])]
    return make_config({"plugins": {"entry_points": True, "disable": disable, **plugins}})


def test_installed_distribution_is_discovered_through_its_entry_point(
    installed_testplugin: Path, other_entry_points: list[str]
) -> None:
    from importlib.metadata import entry_points

    assert TESTPLUGIN in {ep.name for ep in entry_points(group=ENTRYPOINT_GROUP)}
    pm, registry = discover(entry_point_config(other_entry_points))
    plugin = pm.get_plugin(TESTPLUGIN)
    assert plugin is not None
    assert Path(plugin.__file__).is_relative_to(installed_testplugin)  # the installed copy, not the source tree
    assert ids(registry) == TESTPLUGIN_MODELS
    chat = registry.get("tp-chat")  # declared alias
    assert chat.spec.id == "testplugin-chat"
    assert chat.plugin == TESTPLUGIN
    assert chat.spec.weights == "example-org/testplugin-chat-7b"


def test_entry_point_plugin_serves_requests_end_to_end(
    installed_testplugin: Path, other_entry_points: list[str], tmp_path: Path
) -> None:
    config = entry_point_config(other_entry_points)
    with TestClient(create_app(config, budgets=CPU_ONLY)) as client:
        # Its default weights are a hub id never pulled here: refused, not downloaded inside the request.
        refused = client.post(
            "/v1/chat/completions", json={"model": "tp-chat", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_downloaded"
    on_disk = msgspec.structs.replace(config, models={"testplugin-chat": ModelConfig(weights=str(tmp_path))})
    with TestClient(create_app(on_disk, budgets=CPU_ONLY)) as client:
        models = client.get("/v1/models").json()["data"]
        assert {m["id"] for m in models} == TESTPLUGIN_MODELS
        assert {m["owned_by"] for m in models} == {TESTPLUGIN}
        r = client.post(
            "/v1/chat/completions", json={"model": "tp-chat", "messages": [{"role": "user", "content": "hello there"}]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: hello there"
        assert r.json()["model"] == "testplugin-chat"


def test_environment_variable_switches_entry_points_off(
    installed_testplugin: Path, other_entry_points: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUGHOST_DISABLE_ENTRYPOINTS", "1")
    pm, registry = discover(entry_point_config(other_entry_points))
    assert pm.get_plugin(TESTPLUGIN) is None
    assert TESTPLUGIN not in sys.modules  # not even imported
    assert len(registry) == 0


def test_config_switches_entry_points_off(installed_testplugin: Path, other_entry_points: list[str]) -> None:
    pm, registry = discover(entry_point_config(other_entry_points, entry_points=False))
    assert pm.get_plugin(TESTPLUGIN) is None
    assert TESTPLUGIN not in sys.modules
    assert len(registry) == 0


def test_disabled_entry_point_plugin_is_blocked(installed_testplugin: Path, other_entry_points: list[str]) -> None:
    pm, registry = discover(entry_point_config(other_entry_points, disable=[TESTPLUGIN]))
    assert pm.is_blocked(TESTPLUGIN)
    assert TESTPLUGIN not in sys.modules
    assert len(registry) == 0


def test_entry_point_wins_over_a_folder_copy_of_the_same_plugin(
    installed_testplugin: Path, other_entry_points: list[str], write_plugin: WritePlugin
) -> None:
    """The documented order: entry points first; a folder plugin of the same name is then skipped."""
    folder = write_plugin(TESTPLUGIN, plugin_source("folder-copy-model"))
    _, registry = discover(entry_point_config(other_entry_points, paths=[str(folder)]))
    assert ids(registry) == TESTPLUGIN_MODELS
    # Without entry points the folder copy is what gets loaded (in a process that has not imported the other).
    del sys.modules[TESTPLUGIN]
    _pm, registry = discover(entry_point_config(other_entry_points, paths=[str(folder)], entry_points=False))
    assert ids(registry) == {"folder-copy-model"}


def test_entry_point_that_fails_to_import_is_named(
    tmp_path: Path, clean_imports: None, other_entry_points: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minimal installed distribution: a dist-info folder with an entry point, and its module.
    site = tmp_path / "site"
    dist = site / "plughost_broken_ep-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plughost-broken-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[plughost]\nbroken_ep = plughost_broken_ep\n")
    (site / "plughost_broken_ep.py").write_text("import torch_that_is_not_installed_anywhere\n")
    monkeypatch.delenv("PLUGHOST_DISABLE_ENTRYPOINTS", raising=False)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as err:
        make_plugin_manager(make_config({"plugins": {"entry_points": True, "disable": other_entry_points}}))
    assert "'broken_ep'" in str(err.value)
    assert "torch_that_is_not_installed_anywhere" in str(err.value)
    # Blocking the broken plugin by name lets the host start without it.
    pm = make_plugin_manager(
        make_config({"plugins": {"entry_points": True, "disable": [*other_entry_points, "broken_ep"]}})
    )
    assert pm.get_plugin("broken_ep") is None


# -- plugin folders ---------------------------------------------------------------------------------


def test_folder_discovery_finds_both_layouts(write_plugin: WritePlugin) -> None:
    write_plugin("pfold_nested", plugin_source("nested-model"), layout="nested")
    folder = write_plugin("pfold_flat", plugin_source("flat-model", task="EMBEDDING"), layout="flat")
    (folder / "not_a_plugin").mkdir()  # no package inside: ignored
    (folder / "_private" / "_private").mkdir(parents=True)
    (folder / "_private" / "_private" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    pm, registry = discover(folder_config(folder))
    assert {name for name, _ in pm.list_name_plugin()} == {"pfold_nested", "pfold_flat"}
    assert ids(registry) == {"nested-model", "flat-model"}
    assert registry.get("nested-model").plugin == "pfold_nested"
    assert registry.get("flat-model").spec.task == Task.EMBEDDING


def test_relative_plugin_folder_resolves_against_the_config_file(write_plugin: WritePlugin, tmp_path: Path) -> None:
    write_plugin("pfold_rel", plugin_source("rel-model"), folder="myplugins")
    config = make_config({"plugins": {"paths": ["myplugins"]}}, base_dir=str(tmp_path))
    assert ids(discover(config)[1]) == {"rel-model"}


def test_folder_plugin_disabled_by_name_is_not_imported(write_plugin: WritePlugin) -> None:
    write_plugin("pfold_keep", plugin_source("keep-model"))
    folder = write_plugin("pfold_off", "raise RuntimeError('a disabled plugin must not be imported')\n")
    pm, registry = discover(folder_config(folder, disable=["pfold_off"]))
    assert pm.is_blocked("pfold_off")
    assert "pfold_off" not in sys.modules
    assert ids(registry) == {"keep-model"}


def test_import_error_names_the_plugin(write_plugin: WritePlugin) -> None:
    folder = write_plugin("pfold_broken", "import module_that_does_not_exist_xyz\n")
    with pytest.raises(PluginError) as err:
        make_plugin_manager(folder_config(folder))
    message = str(err.value)
    assert "'pfold_broken'" in message
    assert "module_that_does_not_exist_xyz" in message


def test_missing_plugin_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="plugin folder not found"):
        make_plugin_manager(folder_config(tmp_path / "nowhere"))


def test_misspelt_hook_is_rejected_loudly(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_typo",
        """
        from host import hookimpl


        @hookimpl
        def register_model(config):
            return []
        """,
    )
    with pytest.raises(PluginError) as err:
        make_plugin_manager(folder_config(folder))
    message = str(err.value)
    assert "pfold_typo" in message
    assert "register_model" in message
    assert "unknown hook" in message


def test_misspelt_hook_on_an_extra_plugin_object_is_rejected() -> None:
    class Typo:
        name = "typo-object"

        @hookimpl
        def registr_models(self) -> list[ModelSpec]:
            return []

    with pytest.raises(PluginError, match="registr_models"):
        make_plugin_manager(make_config(), extra=[Typo()])


def test_hook_with_an_argument_the_spec_lacks_is_rejected(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_args",
        """
        from host import hookimpl


        @hookimpl
        def register_models(config, gpu):
            return []
        """,
    )
    with pytest.raises(PluginError) as err:
        make_plugin_manager(folder_config(folder))
    assert "'pfold_args'" in str(err.value)
    assert "gpu" in str(err.value)


def test_hook_may_take_fewer_arguments_than_the_spec(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_noargs",
        """
        from host import hookimpl
        from host.contract.spec import Task
        from host.testing.fakes import fake_spec


        @hookimpl
        def register_models():
            return [fake_spec("noargs-model", Task.RERANK)]
        """,
    )
    assert ids(discover(folder_config(folder))[1]) == {"noargs-model"}


def test_duplicate_model_ids_across_plugins_name_both(write_plugin: WritePlugin) -> None:
    write_plugin("pfold_first", plugin_source("same-model"))
    folder = write_plugin("pfold_second", plugin_source("same-model"))
    with pytest.raises(PluginError) as err:
        discover(folder_config(folder))
    message = str(err.value)
    assert "'same-model'" in message
    assert "'pfold_first'" in message and "'pfold_second'" in message


def test_alias_clashing_with_another_models_name_is_an_error(write_plugin: WritePlugin) -> None:
    write_plugin("pfold_a", plugin_source("model-a", aliases=("shared-name",)))
    folder = write_plugin("pfold_b", plugin_source("model-b", aliases=("shared-name",)))
    with pytest.raises(PluginError) as err:
        discover(folder_config(folder))
    assert "'shared-name'" in str(err.value)
    assert "'model-a'" in str(err.value) and "'model-b'" in str(err.value)


def test_register_models_raising_names_the_plugin(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_raises",
        """
        from host import hookimpl


        @hookimpl
        def register_models(config):
            raise KeyError("weights")
        """,
    )
    pm = make_plugin_manager(folder_config(folder))  # importing is fine; the hook call fails
    with pytest.raises(PluginError) as err:
        build_registry(pm, folder_config(folder))
    assert "'pfold_raises'" in str(err.value)
    assert "register_models" in str(err.value)
    assert "KeyError" in str(err.value)


def test_register_models_returning_non_specs_names_the_plugin(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_dicts",
        """
        from host import hookimpl


        @hookimpl
        def register_models(config):
            return [{"id": "not-a-spec"}]
        """,
    )
    with pytest.raises(PluginError) as err:
        discover(folder_config(folder))
    assert "'pfold_dicts'" in str(err.value)
    assert "ModelSpec" in str(err.value)


def test_register_models_receives_the_config(write_plugin: WritePlugin) -> None:
    folder = write_plugin(
        "pfold_cfg",
        """
        from host import hookimpl
        from host.contract.spec import Task
        from host.testing.fakes import fake_spec


        @hookimpl
        def register_models(config):
            # A plugin reads its settings from the config it is given.
            return [fake_spec("cfg-model", Task.CHAT, port_seen=config.server.port)]
        """,
    )
    config = make_config({"plugins": {"paths": [str(folder)]}, "server": {"port": 4242}})
    assert discover(config)[1].get("cfg-model").spec.options.script["port_seen"] == 4242


# -- no global state ----------------------------------------------------------------------------


def test_importing_the_host_has_no_side_effects(tmp_path: Path) -> None:
    """Importing the app module builds no plugin manager, imports no plugin and no torch."""
    script = textwrap.dedent("""
        import sys
        import pluggy

        made = []
        original = pluggy.PluginManager.__init__

        def counting(self, *args, **kwargs):
            made.append(args)
            original(self, *args, **kwargs)

        pluggy.PluginManager.__init__ = counting
        import host.app, host.plugins, host.registry, host.routes, host.cli  # noqa: E401
        assert made == [], made
        heavy = sorted(m for m in ("torch", "transformers", "awq", "plughost_testplugin") if m in sys.modules)
        assert heavy == [], heavy
        print("clean")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_each_app_has_its_own_plugin_manager() -> None:
    first_plugin, second_plugin = (
        FakePlugin(name="first"),
        FakePlugin([fake_spec("only-in-second", Task.CHAT)], name="second"),
    )
    first = create_app(make_config(), plugins=[first_plugin], budgets=CPU_ONLY)
    second = create_app(make_config(), plugins=[second_plugin], budgets=CPU_ONLY)
    pm1, pm2 = first.state.plugin_manager, second.state.plugin_manager
    assert pm1 is not pm2
    assert pm1.get_plugin("first") is first_plugin and pm1.get_plugin("second") is None
    assert pm2.get_plugin("second") is second_plugin and pm2.get_plugin("first") is None
    assert {m.spec.id for m in second.state.registry} == {"only-in-second"}
    assert "fake-chat" in {m.spec.id for m in first.state.registry}


def test_hook_tracing_shows_register_models(monkeypatch, caplog) -> None:
    import logging

    from host.registry import build_registry
    from host.testing.fakes import FakePlugin
    from host.testing.pytest_plugin import make_config

    monkeypatch.setenv("PLUGHOST_TRACE_HOOKS", "1")
    config = make_config()
    with caplog.at_level(logging.DEBUG, logger="plughost.plugins"):
        build_registry(make_plugin_manager(config, extra=[FakePlugin()]), config)
    assert "register_models" in caplog.text
