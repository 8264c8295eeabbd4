"""The demo profile: models whose real weights are absent are served by their tiny stand-ins."""

from __future__ import annotations

import logging

import msgspec
import pytest

from host.contract.spec import Task
from host.plugins import make_plugin_manager
from host.registry import DEMO_NOTE, build_registry
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import make_config


def registry_for(tmp_path, demo, weights):
    spec = msgspec.structs.replace(fake_spec("m", Task.EMBEDDING, weights=weights), demo="embed_qwen3.demo:TINY")
    config = make_config({"demo": demo} if demo is not None else {})
    return build_registry(make_plugin_manager(config, extra=[FakePlugin([spec])]), config)


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("demo", "weights_kind", "expect_demo"),
    [
        (None, "missing-hub-id", True),
        (None, "local", False),
        (True, "local", True),
        (False, "missing-hub-id", False),
    ],
)
def test_demo_selection(tmp_path, local_model, caplog, demo, weights_kind, expect_demo) -> None:
    weights = local_model if weights_kind == "local" else "nobody/not-a-cached-model"
    with caplog.at_level(logging.WARNING, logger="plughost.registry"):
        model = registry_for(tmp_path, demo, weights).get("m")
    if expect_demo:
        assert model.spec.weights == "demo:embed_qwen3.demo:TINY"
        # Clients read descriptions (/v1/models): the note says demo, never where the weights are.
        assert model.spec.description.startswith(DEMO_NOTE) and weights not in model.spec.description
        assert "DEMO" in caplog.text and "models.m.weights" in caplog.text
    else:
        assert model.spec.weights == weights and "DEMO" not in model.spec.description


def test_model_without_stand_in_is_never_demo() -> None:
    config = make_config({"demo": True})
    registry = build_registry(make_plugin_manager(config, extra=[FakePlugin()]), config)
    assert all("DEMO" not in m.spec.description for m in registry)


def test_the_three_plugins_size_their_demo_stand_ins_small() -> None:
    from pathlib import Path

    plugins = Path(__file__).resolve().parents[1] / "plugins"
    config = make_config({"demo": True, "plugins": {"paths": [str(plugins)]}})
    registry = build_registry(make_plugin_manager(config), config)
    for name in ("Qwen2.5-7B-Instruct-AWQ", "Qwen3-8B-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"):
        spec = registry.get(name).spec
        assert spec.weights == f"demo:{spec.demo}", name
        cpu = next(p for p in spec.placements if p.kind == "cpu")
        assert cpu.host_bytes < 1024**3, (name, cpu)  # the tiny model, not the real one (GiBs)


def test_relative_weights_resolve_against_the_config_file(tmp_path) -> None:
    from host.contract.config import config_from_dict

    (tmp_path / "models" / "m").mkdir(parents=True)
    config = config_from_dict(
        {"plugins": {"paths": [], "entry_points": False}, "models": {"m": {"weights": "./models/m"}}}, base_dir=tmp_path
    )
    registry = build_registry(make_plugin_manager(config, extra=[FakePlugin([fake_spec("m", Task.EMBEDDING)])]), config)
    assert registry.get("m").spec.weights == str(tmp_path / "models" / "m")


@pytest.mark.parametrize("model", ["Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"])
def test_a_misspelt_plugin_option_is_an_error_naming_it(model: str) -> None:
    from pathlib import Path

    from host.contract.config import ConfigError

    plugins = Path(__file__).resolve().parents[1] / "plugins"
    config = make_config({"plugins": {"paths": [str(plugins)]}, "models": {model: {"options": {"batch_token_gpu": 1}}}})
    with pytest.raises(ConfigError, match=f"^models.{model}.options.batch_token_gpu: unknown key$"):
        build_registry(make_plugin_manager(config), config)
